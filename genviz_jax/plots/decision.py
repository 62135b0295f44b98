"""Decision boundaries of classifiers on 2-D data (paper Figs 2-3: good vs bad minima)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from genviz_jax import plots as _plots  # noqa: F401  (selects the Agg backend)


def class_grid(model, params, model_state: dict, extent, resolution: int = 200) -> np.ndarray:
  """Predicted class (resolution, resolution) on a grid over extent = (x0, x1, y0, y1)."""
  x0, x1, y0, y1 = extent
  gx, gy = np.meshgrid(np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution))
  pts = jnp.asarray(np.stack([gx.ravel(), gy.ravel()], -1), jnp.float32)
  logits = jax.jit(lambda p, x: model.apply({"params": p, **model_state}, x, train=False))(
      params, pts)
  return np.asarray(jnp.argmax(logits, -1)).reshape(resolution, resolution)


def data_extent(dataset, margin: float = 0.05) -> tuple[float, float, float, float]:
  """(x0, x1, y0, y1) covering train, test and poison points, with a relative margin."""
  xs = [dataset.train["x"], dataset.test["x"]]
  if dataset.poison is not None:
    xs.append(dataset.poison["x"])
  x = np.concatenate([np.asarray(a) for a in xs])
  lo, hi = x.min(0), x.max(0)
  pad = margin * (hi - lo)
  return (lo[0] - pad[0], hi[0] + pad[0], lo[1] - pad[1], hi[1] + pad[1])


def plot_decision_boundary(ax, model, params, model_state: dict, dataset, *, title: str = "",
                           show_poison: bool = True, resolution: int = 200) -> None:
  """Draws the predicted regions, train (o), test (x) and poison (^) points on `ax`.

  Point colours are the TRUE labels; poison points carry their true labels too (the poisoned
  objective pushes the network away from them).
  """
  extent = data_extent(dataset)
  grid = class_grid(model, params, model_state, extent, resolution)
  cmap = plt.get_cmap("coolwarm")
  ax.imshow(grid, origin="lower", extent=extent, cmap=cmap, alpha=0.35, aspect="auto",
            vmin=0, vmax=max(dataset.num_classes - 1, 1), interpolation="nearest")
  kw = dict(cmap=cmap, vmin=0, vmax=max(dataset.num_classes - 1, 1), edgecolors="k",
            linewidths=0.3)
  ax.scatter(dataset.train["x"][:, 0], dataset.train["x"][:, 1], c=dataset.train["y"], s=12,
             marker="o", label="train", **kw)
  ax.scatter(dataset.test["x"][:, 0], dataset.test["x"][:, 1], c=dataset.test["y"], s=14,
             marker="x", cmap=cmap, vmin=0, vmax=max(dataset.num_classes - 1, 1), linewidths=0.8,
             label="test")
  if show_poison and dataset.poison is not None:
    ax.scatter(dataset.poison["x"][:, 0], dataset.poison["x"][:, 1], c=dataset.poison["y"],
               s=10, marker="^", alpha=0.5, label="poison (true labels)", **kw)
  ax.set_xlim(extent[0], extent[1])
  ax.set_ylim(extent[2], extent[3])
  ax.set_aspect("equal")
  ax.set_xticks([])
  ax.set_yticks([])
  if title:
    ax.set_title(title, fontsize=9)


def save_decision_boundary(path: str, model, params, model_state: dict, dataset, *,
                           title: str = "") -> None:
  """One model's decision boundary as a PNG at `path`."""
  fig, ax = plt.subplots(figsize=(4.5, 4.5))
  plot_decision_boundary(ax, model, params, model_state, dataset, title=title)
  ax.legend(loc="lower left", fontsize=6)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def accuracy_title(label: str, summary_or_metrics: dict) -> str:
  return (f"{label}: train {100 * summary_or_metrics['train_accuracy']:.1f}%, "
          f"test {100 * summary_or_metrics['test_accuracy']:.1f}%")


def good_vs_bad_figure(good, bad, *, labels=("good minimum", "bad minimum")):
  """Side-by-side decision boundaries of two trained runs (genviz_jax.workdir.Trained).

  Each panel is titled with its train/test accuracy, computed here from the parameters (not
  read from a summary). Returns the matplotlib Figure; saving is the caller's.
  """
  fig, axes = plt.subplots(1, 2, figsize=(9, 4.5))
  for ax, t, label in zip(axes, (good, bad), labels):
    acc = {f"{s}_accuracy": float(t.metric_fn(t.params, {k: jnp.asarray(v) for k, v in
                                                          getattr(t.dataset, s).items()})
                                  ["accuracy"]) for s in ("train", "test")}
    plot_decision_boundary(ax, t.model, t.params, t.model_state, t.dataset,
                           title=accuracy_title(label, acc))
  axes[0].legend(loc="lower left", fontsize=6)
  fig.tight_layout()
  return fig


def save_good_vs_bad(good_workdir: str, bad_workdir: str, path: str) -> None:
  """Loads two training workdirs (genviz_jax.workdir) and saves `good_vs_bad_figure` as PNG."""
  from genviz_jax import workdir
  fig = good_vs_bad_figure(workdir.load(good_workdir), workdir.load(bad_workdir))
  fig.savefig(path, dpi=120)
  plt.close(fig)
