"""Decision boundaries of classifiers on 2-D inputs, evaluated through the engine.

A decision boundary is the model's prediction on a fixed grid of G x G input points over an
extent (x0, x1, y0, y1): the predicted class argmax_c z_c(x), or the probability of the last
class softmax(z(x))_{C-1} (for two classes: P(class 1 | x)). The grid is the engine's "data-free"
metric: `metric_fn(params)` returns the G² predictions, and the engine evaluates it at many
parameter points at once (genviz_jax.engine.evaluate_points):

  one model        point 0 = θ
  R models         point r = 0 + θ_r (a zero centre: each point is θ_r bit for bit)
  frames           point (i, a) = θ + α_a · d_i along directions d_i (a GIF of the boundary as
                   θ moves along a Hessian eigenvector or a random direction)

Grid rows run along y and columns along x (`np.meshgrid` order), so `imshow(grid,
origin="lower", extent=extent)` draws it in place. The figures of genviz_jax.plots take these
arrays; nothing here draws.

`logits_fn(params, x (P, 2)) -> (P, C)` is the model; `flax_logits(model, model_state)` makes it
for a Flax module in inference mode (BatchNorm running statistics held fixed).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from genviz_jax import engine

PyTree = Any
LogitsFn = Callable[[PyTree, jax.Array], jax.Array]
KINDS = ("class", "probability")


def flax_logits(model, model_state: dict | None = None) -> LogitsFn:
  """`logits_fn(params, x)` of a Flax module in inference mode; model_state held fixed."""
  state = dict(model_state or {})
  return lambda params, x: model.apply({"params": params, **state}, x, train=False)


def data_extent(xs, margin: float = 0.05) -> tuple[float, float, float, float]:
  """(x0, x1, y0, y1) covering every (N, 2) array of `xs`, widened by `margin` of the range.

  `xs` may also be a dataset (genviz_jax.data.Dataset): its train, test and poison inputs.
  """
  if hasattr(xs, "train"):
    xs = [xs.train["x"], xs.test["x"]] + ([xs.poison["x"]] if xs.poison is not None else [])
  x = np.concatenate([np.asarray(a, np.float64).reshape(-1, np.shape(a)[-1]) for a in xs])
  if x.shape[-1] != 2:
    raise ValueError(f"inputs have {x.shape[-1]} features; decision boundaries need 2")
  if not 0 <= margin or not np.isfinite(margin):
    raise ValueError(f"margin={margin!r} must be a finite number >= 0")
  lo, hi = x.min(0), x.max(0)
  pad = margin * (hi - lo)
  return (float(lo[0] - pad[0]), float(hi[0] + pad[0]), float(lo[1] - pad[1]),
          float(hi[1] + pad[1]))


def grid_points(extent, resolution: int) -> np.ndarray:
  """(G², 2) float32 inputs of the G x G grid over extent, rows along y (np.meshgrid order)."""
  if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 2:
    raise ValueError(f"resolution={resolution!r} must be an integer >= 2")
  if len(extent) != 4 or not np.all(np.isfinite(extent)):
    raise ValueError(f"extent={extent!r} must be four finite numbers (x0, x1, y0, y1)")
  x0, x1, y0, y1 = extent
  gx, gy = np.meshgrid(np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution))
  return np.stack([gx.ravel(), gy.ravel()], -1).astype(np.float32)


def grid_metric(logits_fn: LogitsFn, extent, resolution: int, kind: str = "class"):
  """`metric_fn(params) -> {kind: (G²,)}`: the engine's data-free metric of the grid."""
  if kind not in KINDS:
    raise ValueError(f"kind={kind!r} is not one of: {', '.join(KINDS)}")
  pts = jnp.asarray(grid_points(extent, resolution))

  def metric_fn(params):
    logits = logits_fn(params, pts.astype(jax.tree.leaves(params)[0].dtype))
    if kind == "class":
      return {kind: jnp.argmax(logits, axis=-1)}
    return {kind: jax.nn.softmax(logits, axis=-1)[:, -1]}

  return metric_fn


def _as_grids(values: np.ndarray, resolution: int, kind: str) -> np.ndarray:
  grids = values.reshape(values.shape[0], resolution, resolution)
  return np.rint(grids).astype(np.int32) if kind == "class" else grids.astype(np.float32)


def predictions(logits_fn: LogitsFn, params: PyTree, extent, resolution: int = 200, *,
                kind: str = "class", stacked: bool = False, point_batch: int | None = None,
                mesh=None) -> np.ndarray:
  """Predictions on the grid: (G, G) for one parameter set, (R, G, G) for `stacked` ones.

  Args:
    logits_fn: logits_fn(params, x (P, 2)) -> (P, C).
    params: θ, or with stacked=True R parameter sets (leaves (R, ...)).
    extent, resolution: the grid (grid_points).
    kind: "class" (int32 argmax) or "probability" (float32 softmax of the last class).
    point_batch, mesh: the engine's point grouping and device mesh.
  """
  if stacked:
    centre, delta, num = engine.stacked_points(params)
  else:
    centre, delta, num = params, engine.centre_delta(params), 1
  out = engine.evaluate_points(grid_metric(logits_fn, extent, resolution, kind), centre, delta,
                               num, point_batch=point_batch, mesh=mesh)
  grids = _as_grids(np.asarray(out[kind]), resolution, kind)
  return grids if stacked else grids[0]


def frames(logits_fn: LogitsFn, params: PyTree, directions: Mapping[str, PyTree], alphas, extent,
           resolution: int = 80, *, kind: str = "probability", point_batch: int | None = None,
           mesh=None) -> dict[str, np.ndarray]:
  """Predictions on the grid at θ + α·d for every α of `alphas` along every direction d.

  Args:
    logits_fn: logits_fn(params, x (P, 2)) -> (P, C).
    params: θ.
    directions: label -> pytree like params (the step d).
    alphas: (A,) step sizes.
    extent, resolution, kind, point_batch, mesh: as for `predictions`.
  Returns:
    label -> (A, G, G) (probabilities of the last class by default).
  """
  labels = list(directions)
  alphas = np.asarray(alphas, np.float64).reshape(-1)
  if not labels or not alphas.size:
    raise ValueError(f"need at least one direction and one alpha (got {len(labels)} and "
                     f"{alphas.size})")
  basis = jax.tree.map(lambda *d: jnp.stack(d), *[directions[k] for k in labels])
  num_a = alphas.size
  coeffs = np.zeros((len(labels) * num_a, len(labels)), np.float32)
  for i in range(len(labels)):
    coeffs[i * num_a:(i + 1) * num_a, i] = alphas
  out = engine.evaluate_points(grid_metric(logits_fn, extent, resolution, kind), params,
                               engine.basis_delta(basis, coeffs), len(coeffs),
                               point_batch=point_batch, mesh=mesh)
  grids = _as_grids(np.asarray(out[kind]), resolution, kind)
  return {k: grids[i * num_a:(i + 1) * num_a] for i, k in enumerate(labels)}


def splits_of(dataset, show_poison: bool = True) -> dict[str, dict[str, np.ndarray]]:
  """{"train", "test"[, "poison"]} -> {"x" (N, 2), "y" (N,)} numpy arrays for the figures."""
  names = ("train", "test", "poison") if show_poison else ("train", "test")
  return {n: {k: np.asarray(getattr(dataset, n)[k]) for k in ("x", "y")} for n in names
          if getattr(dataset, n) is not None}


def panel(logits_fn: LogitsFn, params: PyTree, dataset, title: str, *, resolution: int = 200,
          show_poison: bool = True) -> dict:
  """One figure panel as arrays: {"grid", "extent", "splits", "num_classes", "title"}.

  The extent covers all of the dataset's inputs (data_extent); plots.decision draws the dict.
  """
  extent = data_extent(dataset)
  return {"grid": predictions(logits_fn, params, extent, resolution), "extent": extent,
          "splits": splits_of(dataset, show_poison), "num_classes": int(dataset.num_classes),
          "title": title}


def accuracies(metric_fn: Callable, params: PyTree, dataset) -> dict[str, float]:
  """{"train_accuracy", "test_accuracy"} of metric_fn(params, split)["accuracy"] (full splits)."""
  return {f"{s}_accuracy": float(metric_fn(params, {k: jnp.asarray(v) for k, v in
                                                    getattr(dataset, s).items()})["accuracy"])
          for s in ("train", "test")}


def trained_panel(trained, label: str, resolution: int = 200) -> dict:
  """The panel of a trained run (genviz_jax.workdir.Trained), titled with its accuracies.

  The accuracies are computed from the parameters (trained.metric_fn), not read from a summary:
  "label: train 99.5%, test 10.0%".
  """
  acc = accuracies(trained.metric_fn, trained.params, trained.dataset)
  title = (f"{label}: train {100 * acc['train_accuracy']:.1f}%, "
           f"test {100 * acc['test_accuracy']:.1f}%")
  return panel(flax_logits(trained.model, trained.model_state), trained.params, trained.dataset,
               title, resolution=resolution)
