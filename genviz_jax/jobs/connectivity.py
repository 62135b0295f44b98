"""Mode connectivity between two trained workdirs (Garipov et al. 2018).

`run(config, workdir, other_workdir, outdir=None)` trains, between the minima θ_a (workdir) and
θ_b (other_workdir), one curve of every kind in config.kinds (connectivity.train_curve: a quadratic
Bézier curve, a polygonal chain with one bend; t ~ U(0, 1) each step, Adam with a cosine-decayed
rate on the train loss), then
writes into `outdir` (default WORKDIR/connectivity):
  curves.npz          ts (T,), "<path>/<split>/<metric>" (T,) for path in line + kinds; the bends
  connectivity.json   barriers of every path (loss: max along the path minus the endpoints' mean;
                      accuracy: the endpoints' mean minus the min), basin radii along the first curve
  connectivity.png    loss and accuracy along every path, train and test
BatchNorm models are trained in train mode and evaluated with statistics recomputed at every
point of the path (connectivity.evaluate_curve_bn; dnn-mode-connectivity `utils.update_bn`): the
endpoints' stored running averages do not describe the points between them. The basin radius
at curve point t is basin.radii around θ(t) along random filter-normalized directions, where the
train cross-entropy crosses config.threshold (the basin job's measure).
Config keys: genviz_jax/configs/connectivity.py.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from genviz_jax import basin
from genviz_jax import connectivity
from genviz_jax import directions
from genviz_jax import engine
from genviz_jax import files
from genviz_jax import objectives
from genviz_jax import workdir as workdir_lib
from genviz_jax.jobs import devices
from genviz_jax.jobs.phased import comma_list
from genviz_jax.plots import landscape as plots

SPLITS = ("train", "test")


def check_config(c) -> tuple[list[str], list[str], list[float]]:
  """One-line ValueError for a bad config value; returns (kinds, splits, radius_ts)."""
  kinds = comma_list(c.kinds)
  if not kinds or any(k not in connectivity.CURVE_KINDS for k in kinds):
    raise ValueError(f"config.kinds={c.kinds!r}; allowed: a comma list of "
                     f"{', '.join(connectivity.CURVE_KINDS)}")
  splits = comma_list(c.splits)
  if not splits or any(s not in SPLITS for s in splits) or splits[0] != "train":
    raise ValueError(f"config.splits={c.splits!r}; allowed: train, or train,test")
  for key in ("num_steps", "num_directions", "point_batch"):
    engine.metrics.positive_int(f"config.{key}", c[key])
  if isinstance(c.num_t, bool) or not isinstance(c.num_t, int) or c.num_t < 2:
    raise ValueError(f"config.num_t={c.num_t!r} must be an integer >= 2")
  if isinstance(c.batch_size, bool) or not isinstance(c.batch_size, int) or c.batch_size < 0:
    raise ValueError(f"config.batch_size={c.batch_size!r} must be an integer >= 0 (0: full batch)")
  if not (np.isfinite(c.learning_rate) and c.learning_rate > 0):
    raise ValueError(f"config.learning_rate={c.learning_rate!r} must be a positive number")
  if not (np.isfinite(c.threshold) and c.threshold > 0 and c.r_max > 0):
    raise ValueError(f"config.threshold={c.threshold!r} and r_max={c.r_max!r} must be > 0")
  try:
    ts = [float(t) for t in comma_list(c.radius_ts)]
  except ValueError:
    raise ValueError(f"config.radius_ts={c.radius_ts!r}; allowed: a comma list of numbers in "
                     "[0, 1]") from None
  if any(not 0.0 <= t <= 1.0 for t in ts):
    raise ValueError(f"config.radius_ts={c.radius_ts!r}; allowed: numbers in [0, 1]")
  return kinds, splits, ts


class _Model:
  """A trained run's functions for the curve: its train loss, and (BatchNorm) statistics."""

  def __init__(self, trained: workdir_lib.Trained):
    self.trained = trained
    stats = (trained.model_state or {}).get("batch_stats")
    self.bn = stats is not None
    model = trained.model
    if not self.bn:
      self.train_loss = trained.metric_fn
      return
    zeros = jax.tree.map(jnp.zeros_like, stats)
    # flax BatchNorm (momentum m) in train mode updates running = m·running + (1 - m)·batch;
    # from zeros that is (1 - m)·batch statistic.
    scale = 1.0 - 0.9

    def stats_fn(params, batch):
      _, upd = model.apply({"params": params, "batch_stats": zeros}, batch["x"], train=True,
                           mutable=["batch_stats"])
      return jax.tree.map(lambda s: s / scale, upd["batch_stats"])

    def metric_with_state(params, state, batch):
      logits = model.apply({"params": params, "batch_stats": state}, batch["x"], train=False)
      return {"loss": jnp.mean(objectives.cross_entropy(logits, batch["y"])),
              "accuracy": jnp.mean(objectives.accuracy(logits, batch["y"]))}

    def train_loss(params, batch):
      logits, _ = model.apply({"params": params, "batch_stats": zeros}, batch["x"], train=True,
                              mutable=["batch_stats"])
      return jnp.mean(objectives.cross_entropy(logits, batch["y"]))

    self.stats_fn, self.metric_with_state, self.train_loss = stats_fn, metric_with_state, train_loss

  def evaluate(self, kind, a, bend, b, ts, data, train, mesh, point_batch):
    if not self.bn:
      return connectivity.evaluate_curve(self.trained.metric_fn, a, bend, b, ts, data, kind=kind,
                                         mesh=mesh, point_batch=point_batch)
    return connectivity.evaluate_curve_bn(self.metric_with_state, self.stats_fn, a, bend, b, ts,
                                          data, train, kind=kind, mesh=mesh,
                                          point_batch=point_batch)

  def metric_at(self, point, train):
    """The metric function at one parameter point (BatchNorm: statistics recomputed there)."""
    if not self.bn:
      return self.trained.metric_fn
    state = jax.jit(lambda p: engine.chunked_mean(lambda b: self.stats_fn(p, b), train, None))(point)
    return lambda p, batch: self.metric_with_state(p, state, batch)


def _barriers(res: dict) -> dict:
  """Loss barrier (max - endpoints' mean) and accuracy drop (endpoints' mean - min) per key."""
  out = {}
  for key, v in res.items():
    v = np.asarray(v, np.float64)
    out[key] = connectivity.barrier(-v if key.endswith("accuracy") else v)
  return out


def _radii_along(config, model: _Model, kind, a, bend, b, ts, train, mesh) -> dict:
  rows = []
  for t in ts:
    point = connectivity.curve_point(kind, a, bend, b, jnp.float32(t))
    dirs = basin.RandomDirections(jax.random.key(int(config.seed)), int(config.num_directions))
    r = basin.radii(model.metric_at(point, train), point, dirs, threshold=float(config.threshold),
                    data=train, r_max=float(config.r_max), mesh=mesh,
                    point_batch=int(config.point_batch))
    vol = r.volume(seed=int(config.seed)).to_json()
    rows.append({"t": t, "median_radius": float(np.median(r.radius)),
                 "mean_radius": float(np.mean(r.radius)), "num_censored": r.num_censored,
                 "log10_volume": vol["log10_volume"],
                 "effective_sample_size": vol["effective_sample_size"]})
  return {"kind": kind, "num_directions": int(config.num_directions),
          "threshold": float(config.threshold), "rows": rows}


def _optimizer(config) -> optax.GradientTransformation:
  """Adam with a cosine decay to 0 over the run: the bend settles (Garipov et al. decay the rate
  too; a constant rate leaves a polygonal chain's bend wobbling with the sampled t)."""
  return optax.adam(optax.cosine_decay_schedule(float(config.learning_rate),
                                                int(config.num_steps)))


def _labels(workdir: str, other_workdir: str) -> dict:
  return {"a": os.path.basename(os.path.abspath(workdir)),
          "b": os.path.basename(os.path.abspath(other_workdir))}


def run(config, workdir: str, other_workdir: str, outdir: str | None = None) -> dict:
  """Trains the curves, evaluates every path, writes the outputs; returns connectivity.json."""
  kinds, splits, radius_ts = check_config(config)
  outdir = outdir or os.path.join(workdir, "connectivity")
  if os.path.abspath(outdir) in (os.path.abspath(workdir), os.path.abspath(other_workdir)):
    raise ValueError(f"outdir={outdir!r} is a trained workdir; use a subfolder (default "
                     "WORKDIR/connectivity)")
  ta, tb = workdir_lib.load(workdir), workdir_lib.load(other_workdir)
  directions.check_same_tree(tb.params, ta.params, what="other_workdir params")
  model, mesh = _Model(ta), devices.point_mesh_for(config)
  data = {s: getattr(ta.dataset, s) for s in splits}
  a, b = ta.params, tb.params
  ts = np.linspace(0.0, 1.0, int(config.num_t))
  t0 = time.time()
  bends = {"line": connectivity.init_bend(a, b)}
  histories = {}
  for i, kind in enumerate(kinds):
    bends[kind], histories[kind] = connectivity.train_curve(
        model.train_loss, a, b, data["train"], kind=kind,
        optimizer=_optimizer(config), num_steps=int(config.num_steps),
        key=jax.random.fold_in(jax.random.key(int(config.seed)), i),
        batch_size=int(config.batch_size) or None)
    logging.info("connectivity: %s curve trained, final loss %.4g", kind, histories[kind][-1])
  paths = {}
  for name, bend in bends.items():
    kind = "bezier" if name == "line" else name  # the line: a Bézier curve bent at the midpoint
    paths[name] = {f"{s}/{m}": v for s in splits for m, v in model.evaluate(
        kind, a, bend, b, ts, data[s], data["train"], mesh, int(config.point_batch)).items()}
  radius = _radii_along(config, model, kinds[0], a, bends[kinds[0]], b, radius_ts,
                        data["train"], mesh)
  labels = _labels(workdir, other_workdir)
  barriers = {name: _barriers(res) for name, res in paths.items()}
  summary = {
      "endpoints": labels, "kinds": kinds, "num_steps": int(config.num_steps),
      "batch_norm_recomputed": model.bn, "barriers": barriers,
      "linear_barrier": barriers["line"]["train/loss"],
      "curve_barrier": barriers[kinds[0]]["train/loss"],
      "final_curve_loss": {k: float(h[-1]) for k, h in histories.items()},
      "radius_along_curve": radius, "wall_time_s": round(time.time() - t0, 2)}
  os.makedirs(outdir, exist_ok=True)
  arrays = {"ts": ts, **{f"{n}/{k}": v for n, res in paths.items() for k, v in res.items()},
            **{f"history/{k}": h for k, h in histories.items()}}
  files.save_npz_atomic(os.path.join(outdir, "curves.npz"), arrays, {"labels": labels})
  plots.curves_1d(ts, paths, os.path.join(outdir, "connectivity.png"),
                  xlabel=f"t along the path: {labels['a']} (0) -> {labels['b']} (1)",
                  marks=(0.0, 1.0))
  files.write_json_atomic(os.path.join(outdir, "connectivity.json"), summary)
  logging.info("connectivity: line barrier %.4g, %s barrier %.4g", summary["linear_barrier"],
               kinds[0], summary["curve_barrier"])
  return summary
