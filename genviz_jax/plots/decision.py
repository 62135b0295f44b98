"""Decision boundaries of classifiers on 2-D data (paper Figs 2-3: good vs bad minima).

Drawing only: the predicted-class grids come from genviz_jax.boundary as arrays. A panel is a
dict {"grid": (G, G) int predicted class (rows along y), "extent": (x0, x1, y0, y1),
"splits": {"train"/"test"/"poison": {"x": (N, 2), "y": (N,)}}, "num_classes": C, "title": str}
(boundary.panel / boundary.trained_panel make one).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np

from genviz_jax import plots as _plots  # noqa: F401  (selects the Agg backend)


def plot_decision_boundary(ax, grid: np.ndarray, extent, splits: Mapping[str, Mapping], *,
                           num_classes: int = 2, title: str = "",
                           show_poison: bool = True) -> None:
  """Draws the predicted regions, train (o), test (x) and poison (^) points on `ax`.

  Point colours are the TRUE labels; poison points carry their true labels too (the poisoned
  objective pushes the network away from them).
  """
  cmap = plt.get_cmap("coolwarm")
  vmax = max(int(num_classes) - 1, 1)
  ax.imshow(np.asarray(grid), origin="lower", extent=extent, cmap=cmap, alpha=0.35,
            aspect="auto", vmin=0, vmax=vmax, interpolation="nearest")
  kw = dict(cmap=cmap, vmin=0, vmax=vmax, edgecolors="k", linewidths=0.3)
  tr, te = splits["train"], splits["test"]
  ax.scatter(tr["x"][:, 0], tr["x"][:, 1], c=tr["y"], s=12, marker="o", label="train", **kw)
  ax.scatter(te["x"][:, 0], te["x"][:, 1], c=te["y"], s=14, marker="x", cmap=cmap, vmin=0,
             vmax=vmax, linewidths=0.8, label="test")
  po = splits.get("poison")
  if show_poison and po is not None:
    ax.scatter(po["x"][:, 0], po["x"][:, 1], c=po["y"], s=10, marker="^", alpha=0.5,
               label="poison (true labels)", **kw)
  ax.set_xlim(extent[0], extent[1])
  ax.set_ylim(extent[2], extent[3])
  ax.set_aspect("equal")
  ax.set_xticks([])
  ax.set_yticks([])
  if title:
    ax.set_title(title, fontsize=9)


def draw_panel(ax, panel: Mapping, show_poison: bool = True) -> None:
  """plot_decision_boundary of one panel dict (see the module docstring)."""
  plot_decision_boundary(ax, panel["grid"], panel["extent"], panel["splits"],
                         num_classes=panel.get("num_classes", 2), title=panel.get("title", ""),
                         show_poison=show_poison)


def save_decision_boundary(path: str, panel: Mapping) -> None:
  """One model's decision boundary (a panel dict) as a PNG at `path`."""
  fig, ax = plt.subplots(figsize=(4.5, 4.5))
  draw_panel(ax, panel)
  ax.legend(loc="lower left", fontsize=6)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def accuracy_title(label: str, summary_or_metrics: dict) -> str:
  """"label: train 99.5%, test 10.0%" from a dict with train_accuracy and test_accuracy."""
  return (f"{label}: train {100 * summary_or_metrics['train_accuracy']:.1f}%, "
          f"test {100 * summary_or_metrics['test_accuracy']:.1f}%")


def good_vs_bad_figure(panels: Sequence[Mapping]):
  """Side-by-side decision boundaries of two runs (panel dicts, titled by the caller).

  Returns the matplotlib Figure; saving is the caller's.
  """
  if len(panels) != 2:
    raise ValueError(f"good_vs_bad_figure takes 2 panels (good, bad); got {len(panels)}")
  fig, axes = plt.subplots(1, 2, figsize=(9, 4.5))
  for ax, panel in zip(axes, panels):
    draw_panel(ax, panel)
  axes[0].legend(loc="lower left", fontsize=6)
  fig.tight_layout()
  return fig
