"""Sharpness figures: loss along the top Hessian eigenvector vs random filter-normalized directions,
Hessian spectral densities of good and bad minima, and (2-D data) a GIF of the decision boundary
as the parameters move along the top eigenvector and along a random direction.

Plotting only: the numbers come from genviz_jax.hessian / landscape / boundary and are passed in
as arrays.
"""

from __future__ import annotations

import warnings
from typing import Mapping

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import animation
from matplotlib import collections

from genviz_jax import plots as _plots  # noqa: F401  (selects the Agg backend)


def eigen_vs_random_figure(alphas: np.ndarray, eigen_losses: Mapping[str, np.ndarray],
                           random_losses: np.ndarray, *, ylabel: str = "train loss",
                           title: str = "", log_y: bool = True,
                           floor: float = 1e-8) -> plt.Figure:
  """Two panels with a shared y axis: loss along Hessian eigenvectors | along random directions.

  Args:
    alphas: (A,) step sizes α (the x axis; point = θ + α·d).
    eigen_losses: label -> (A,) loss along an eigenvector direction (e.g. "v1 (λ=7570)").
    random_losses: (R, A) loss along R random filter-normalized directions.
    log_y: log y axis, values clipped below at `floor` (a minimum at loss 0 stays visible).
  """
  alphas = np.asarray(alphas)
  random_losses = np.atleast_2d(np.asarray(random_losses))
  clip = (lambda y: np.maximum(y, floor)) if log_y else (lambda y: y)
  fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
  for label, ys in eigen_losses.items():
    ax0.plot(alphas, clip(ys), lw=1.6, label=label)
  ax0.set_title("top Hessian eigenvector(s)", fontsize=9)
  ax0.legend(fontsize=7)
  for ys in random_losses:
    ax1.plot(alphas, clip(ys), color="0.6", lw=0.7)
  ax1.plot(alphas, clip(random_losses.mean(axis=0)), color="k", lw=1.6,
           label=f"mean of {len(random_losses)}")
  ax1.set_title("random filter-normalized directions", fontsize=9)
  ax1.legend(fontsize=7)
  for ax in (ax0, ax1):
    ax.set_xlabel("α (direction scaled to the random directions' norm)", fontsize=8)
    if log_y:
      ax.set_yscale("log")
  ax0.set_ylabel(ylabel)
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  return fig


def spectral_density_figure(densities: Mapping[str, tuple[np.ndarray, np.ndarray]], *,
                            floor: float = 1e-8, title: str = "Hessian spectral density (SLQ)"
                            ) -> plt.Figure:
  """Smoothed spectral densities (log y, as PyHessian plots them), one line per minimum.

  Args:
    densities: label -> (grid (G,), density (G,)) from hessian.spectral_density.
    floor: densities are clipped below at this value for the log scale.
  """
  fig, ax = plt.subplots(figsize=(6, 3.6))
  for label, (grid, dens) in densities.items():
    ax.semilogy(grid, np.maximum(dens, floor), lw=1.2, label=label)
  ax.set_xlabel("eigenvalue")
  ax.set_ylabel("density (log)")
  ax.set_ylim(bottom=floor)
  ax.legend(fontsize=8)
  ax.set_title(title, fontsize=10)
  fig.tight_layout()
  return fig


def save_boundary_animation(path: str, frames: Mapping[str, np.ndarray], alphas: np.ndarray,
                            extent, points: tuple[np.ndarray, np.ndarray] | None = None, *,
                            fps: int = 6, title: str = "") -> None:
  """A GIF (PillowWriter): one panel per direction, frame i at α = alphas[i].

  Args:
    path: output .gif.
    frames: label -> (A, H, W) probabilities from genviz_jax.boundary.frames.
    alphas: (A,).
    extent: (x0, x1, y0, y1) of the frames.
    points: optional (x (N, 2), y (N,)) training points drawn on every frame.
  """
  labels = list(frames)
  fig, axes = plt.subplots(1, len(labels), figsize=(3.6 * len(labels), 3.9), squeeze=False)
  axes = axes[0]
  images = []
  for ax, label in zip(axes, labels):
    im = ax.imshow(frames[label][0], origin="lower", extent=extent, cmap="coolwarm", vmin=0,
                   vmax=1, aspect="auto", interpolation="bilinear")
    if points is not None:
      ax.scatter(points[0][:, 0], points[0][:, 1], c=points[1], cmap="coolwarm", s=6,
                 edgecolors="k", linewidths=0.2)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(label, fontsize=8)
    images.append(im)
  suptitle = fig.suptitle("", fontsize=9)

  def draw(i):
    for ax, im, label in zip(axes, images, labels):
      im.set_data(frames[label][i])
      for c in list(ax.collections):
        if not isinstance(c, collections.PathCollection):  # keep the scattered points
          c.remove()
      ax.contour(np.linspace(extent[0], extent[1], frames[label].shape[2]),
                 np.linspace(extent[2], extent[3], frames[label].shape[1]), frames[label][i],
                 levels=[0.5], colors="k", linewidths=0.6)
    suptitle.set_text(f"{title}  α = {alphas[i]:+.3f}".strip())
    return images

  anim = animation.FuncAnimation(fig, draw, frames=len(alphas), blit=False)
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="No contour levels were found")
    anim.save(path, writer=animation.PillowWriter(fps=fps))
  plt.close(fig)
