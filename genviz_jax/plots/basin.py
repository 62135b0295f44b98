"""Basin-radius figures: histograms of radii along random directions (minima overlaid)."""

from __future__ import annotations

from typing import Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def radius_histogram(radii: Mapping[str, np.ndarray], path: str, *,
                     censored: Mapping[str, int] | None = None, xlabel: str = "radius",
                     title: str = "", bins: int = 50) -> str:
  """Overlaid histograms (shared bins) of radii per label, e.g. {"good": r1, "bad": r2}.

  censored: label -> number of directions that never crossed (shown in the legend; their
  radius is r_max, so they sit in the last bin, not dropped).
  """
  arrays = {k: np.ravel(np.asarray(v, np.float64)) for k, v in radii.items()}
  allv = np.concatenate(list(arrays.values()))
  if allv.size == 0:
    raise ValueError("radius_histogram got no radii")
  lo, hi = float(allv.min()), float(allv.max())
  edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
  fig, ax = plt.subplots(figsize=(6, 4))
  for i, (label, v) in enumerate(arrays.items()):
    extra = ""
    if censored and censored.get(label):
      extra = f", {censored[label]} censored"
    ax.hist(v, bins=edges, alpha=0.6, color=f"C{i}",
            label=f"{label}: median {np.median(v):.3g} (K={v.size}{extra})")
  ax.set_xlabel(xlabel)
  ax.set_ylabel("directions")
  ax.legend(fontsize=8)
  if title:
    ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path
