"""A training trajectory over the loss contour of its PCA plane (Li et al. 2018, Fig. 10)."""

from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def trajectory_contour(xs: np.ndarray, ys: np.ndarray, z: np.ndarray, coords: np.ndarray,
                       path: str, *, explained_variance: Sequence[float], title: str = "",
                       levels: int = 25) -> str:
  """Contour of z[i, j] = loss at (xs[i], ys[j]) (log10 when positive), the path coords (T, 2)
  from its first iterate (circle) to the final one (star); each axis names its explained variance.
  """
  z = np.asarray(z, np.float64)
  log = bool(np.all(z > 0))
  zz = np.log10(z) if log else z
  fig, ax = plt.subplots(figsize=(6, 5))
  cs = ax.contour(xs, ys, zz.T, levels=levels, cmap="viridis")
  fig.colorbar(cs, ax=ax, label="log10 loss" if log else "loss")
  ax.plot(coords[:, 0], coords[:, 1], "-", color="C3", lw=1.2)
  ax.plot(coords[:, 0], coords[:, 1], ".", color="C3", ms=3)
  ax.plot(coords[0, 0], coords[0, 1], "o", color="k", ms=6, label="first iterate")
  ax.plot(coords[-1, 0], coords[-1, 1], "*", color="k", ms=10, label="last iterate")
  ax.plot(0.0, 0.0, "x", color="C1", ms=8, label="final minimum")
  ev = list(explained_variance)
  ax.set_xlabel(f"1st PCA component: {100 * ev[0]:.1f}% of variance")
  ax.set_ylabel(f"2nd PCA component: {100 * ev[1]:.1f}% of variance")
  ax.legend(loc="best", fontsize=8)
  if title:
    ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
