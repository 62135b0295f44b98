"""Loss-landscape figures: 1-D curves (minima overlaid), 2-D contour, filled contour, heatmap, 3-D."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

KINDS_2D = ("contour", "contourf", "heatmap", "surface3d")


def curves_1d(alphas: np.ndarray, results: Mapping[str, Mapping[str, np.ndarray]], path: str, *,
              xlabel: str = "α (filter-normalized direction)", title: str = "",
              marks: Sequence[float] = ()) -> str:
  """Loss (left, log scale when positive) and accuracy (right) along a line.

  results: label (e.g. "good", "bad") -> {"train/loss": (A,), "test/accuracy": (A,), ...}.
  marks: α values to mark with vertical lines (e.g. 0 and 1 for an interpolation).
  """
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  styles = {"train": "-", "test": "--"}
  for i, (label, res) in enumerate(results.items()):
    color = f"C{i}"
    for key, v in sorted(res.items()):
      split, _, metric = key.rpartition("/")
      ax = axes[0] if metric == "loss" else axes[1] if metric == "accuracy" else None
      if ax is None:
        continue
      ax.plot(alphas, v, styles.get(split, ":"), color=color, label=f"{label} {split}".strip())
  axes[0].set_ylabel("loss")
  losses = [v for res in results.values() for k, v in res.items() if k.endswith("loss")]
  if losses and all(np.all(np.asarray(v) > 0) for v in losses):
    axes[0].set_yscale("log")
  axes[1].set_ylabel("accuracy")
  axes[1].set_ylim(-0.02, 1.02)
  for ax in axes:
    ax.set_xlabel(xlabel)
    for m in marks:
      ax.axvline(m, color="0.7", lw=0.8)
    ax.legend(fontsize=8)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def surface_2d(axis: np.ndarray, z: np.ndarray, path: str, *, kind: str = "contour",
               title: str = "", label: str = "loss", log: bool | None = None) -> str:
  """One 2-D figure of z (num, num) indexed [x, y] over the grid axis (num,).

  kind: "contour", "contourf", "heatmap" or "surface3d". log: color by log10(z) (default: for
  positive losses).
  """
  if kind not in KINDS_2D:
    raise ValueError(f"kind={kind!r}; allowed: {', '.join(KINDS_2D)}")
  z = np.asarray(z, np.float64)
  if log is None:
    log = label.endswith("loss") and bool(np.all(z > 0))
  zz = np.log10(z) if log else z
  name = f"log10 {label}" if log else label
  x, y = np.meshgrid(axis, axis, indexing="ij")
  fig = plt.figure(figsize=(5.5, 4.5))
  if kind == "surface3d":
    ax = fig.add_subplot(projection="3d")
    ax.plot_surface(x, y, zz, cmap="viridis", linewidth=0, antialiased=True)
    ax.set_zlabel(name)
  else:
    ax = fig.add_subplot()
    if kind == "contour":
      cs = ax.contour(x, y, zz, levels=20, cmap="viridis")
      ax.clabel(cs, inline=True, fontsize=6, fmt="%.2g")
    elif kind == "contourf":
      cs = ax.contourf(x, y, zz, levels=30, cmap="viridis")
      fig.colorbar(cs, ax=ax, label=name)
    else:
      im = ax.imshow(zz.T, origin="lower", extent=(axis[0], axis[-1], axis[0], axis[-1]),
                     cmap="viridis", aspect="auto")
      fig.colorbar(im, ax=ax, label=name)
    ax.plot([0], [0], "r+", ms=10)
  ax.set_xlabel("δ")
  ax.set_ylabel("η")
  ax.set_title(title or name)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path
