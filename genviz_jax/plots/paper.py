"""Figures of the paper reproduction: minefield, gap sweep, circles, optimizer comparison.

Each function returns a matplotlib Figure; saving is the caller's. Drawing only: decision
boundaries arrive as arrays (genviz_jax.boundary), accuracies and measures as numbers.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from genviz_jax.plots import decision


def minefield(good_xy: np.ndarray, good_acc: np.ndarray, bad_xy: np.ndarray,
              bad_acc: np.ndarray):
  """Fig. 1: t-SNE of good-run iterates (line, dots) and bad minima (crosses), coloured by test
  accuracy."""
  fig, ax = plt.subplots(figsize=(6.5, 5.2))
  vmin, vmax = 0.0, 1.0
  ax.plot(good_xy[:, 0], good_xy[:, 1], "-", color="0.6", lw=0.6, zorder=1)
  sc = ax.scatter(good_xy[:, 0], good_xy[:, 1], c=good_acc, cmap="viridis", vmin=vmin, vmax=vmax,
                  s=10, zorder=2, label="iterates of the good run")
  ax.scatter(bad_xy[:, 0], bad_xy[:, 1], c=bad_acc, cmap="viridis", vmin=vmin, vmax=vmax, s=28,
             marker="X", edgecolors="r", linewidths=0.4, zorder=3, label="bad minima")
  ax.scatter(good_xy[-1:, 0], good_xy[-1:, 1], s=140, marker="*", c="gold", edgecolors="k",
             zorder=4, label=f"final good iterate ({100 * good_acc[-1]:.1f}% test)")
  fig.colorbar(sc, ax=ax, label="test accuracy")
  ax.set_title(f"Minefield: {len(bad_acc)} bad minima (test <= {100 * bad_acc.max():.1f}%)")
  ax.legend(fontsize=7, loc="best")
  ax.set_xticks([])
  ax.set_yticks([])
  fig.tight_layout()
  return fig


def decision_panels(panels, ncols: int | None = None, show_poison: bool = True):
  """Decision boundaries side by side; panels = [panel dict, ...] (plots.decision)."""
  n = len(panels)
  if n == 0:
    raise ValueError("decision_panels needs at least one panel")
  ncols = ncols or n
  nrows = -(-n // ncols)
  fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 3.6 * nrows), squeeze=False)
  for ax, panel in zip(axes.ravel(), panels):
    decision.draw_panel(ax, panel, show_poison=show_poison)
  for ax in axes.ravel()[n:]:
    ax.axis("off")
  axes.ravel()[0].legend(loc="lower left", fontsize=5)
  fig.tight_layout()
  return fig


def gap_panel_runs(gap, fractions, max_panels: int = 20) -> list[int]:
  """The runs shown in Fig. 6 (left): by increasing gap, the first run of each poison factor."""
  order = np.argsort(gap, kind="stable")
  seen, chosen = set(), []
  for i in order:
    if fractions[i] not in seen:
      seen.add(fractions[i])
      chosen.append(int(i))
  return chosen[:max_panels]


def gap_grid(grids, extent, splits, gap, fractions, train_acc, test_acc, num_classes: int = 2,
             max_panels: int = 20):
  """Fig. 6 (left): decision boundaries ordered by generalization gap (first seed of each f).

  grids: (R, G, G) predicted classes of every run (boundary.predictions(..., stacked=True));
  extent: their (x0, x1, y0, y1); splits: the train/test points drawn on every panel.
  """
  panels = [{"grid": grids[i], "extent": extent, "splits": splits, "num_classes": num_classes,
             "title": f"f={fractions[i]:.2g} gap {100 * gap[i]:.0f}%\n"
                      f"train {100 * train_acc[i]:.0f}% test {100 * test_acc[i]:.0f}%"}
            for i in gap_panel_runs(gap, fractions, max_panels)]
  # Training drew a fresh poison sample every step: the dataset's fixed poison set is not shown.
  return decision_panels(panels, ncols=min(5, len(panels)), show_poison=False)


def gap_scatter(gap, fractions, log10_volume, top_eigenvalue):
  """Fig. 6 (right): gap against poison factor, log10 basin volume and top Hessian eigenvalue."""
  fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
  f = np.asarray(fractions, float)
  x = np.where(f > 0, f, np.nan)
  axes[0].scatter(np.where(f > 0, f, np.nanmin(x) / 3), gap)
  axes[0].set_xscale("log")
  axes[0].set_xlabel("poison factor (0 plotted at the left edge)")
  axes[1].scatter(log10_volume, gap)
  axes[1].set_xlabel("log10 basin volume (filter-normalized)")
  axes[2].scatter(top_eigenvalue, gap)
  axes[2].set_xscale("symlog")
  axes[2].set_xlabel("top Hessian eigenvalue")
  for ax in axes:
    ax.set_ylabel("generalization gap (train - test acc.)")
    ax.grid(alpha=0.3)
  fig.tight_layout()
  return fig


def optimizer_bars(rows):
  """Table 1 analogue: train/test accuracy per optimizer, one panel per dataset."""
  names = sorted({r["dataset"] for r in rows})
  fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 3.6), squeeze=False)
  for ax, dname in zip(axes[0], names):
    rs = [r for r in rows if r["dataset"] == dname]
    x = np.arange(len(rs))
    ax.bar(x - 0.2, [r["train_accuracy"] for r in rs], 0.4, label="train")
    ax.bar(x + 0.2, [r["test_accuracy"] for r in rs], 0.4, label="test")
    ax.set_xticks(x, [r["optimizer"] for r in rs], rotation=45, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_title(dname)
    ax.legend(fontsize=7)
  fig.tight_layout()
  return fig
