"""The sharpness job's figures: loss along eigenvectors vs random directions, spectral densities,
and (2-D inputs) the decision boundary moving along the top eigenvector and a random direction.

An eigenvector has unit length and a filter-normalized direction has length ~||θ||, so the
eigenvectors are scaled to the random directions' mean length before the loss is compared
along both (Li et al. 2018 compare directions of equal length).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from jax.flatten_util import ravel_pytree

from genviz_jax import boundary
from genviz_jax import directions as directions_lib
from genviz_jax import hessian
from genviz_jax import landscape
from genviz_jax.plots import sharpness as sharp_plots


def _save(fig, path: str) -> str:
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return os.path.basename(path)


def _label(workdir: str) -> str:
  return os.path.basename(os.path.normpath(workdir))


def _eigen_vs_random(config, t, params, data, metric_fn, eig, out_dir, rand_list, eig_dirs,
                     scale, data_batch, mesh) -> str:
  f = config.figures
  alphas = np.linspace(-f.alpha_max, f.alpha_max, f.num_alphas)
  dirs = eig_dirs + rand_list
  d = len(dirs)
  coords = np.zeros((d * len(alphas), d))
  for i in range(d):
    coords[i * len(alphas):(i + 1) * len(alphas), i] = alphas
  losses = landscape.surface(metric_fn, params, dirs, coords, data=data, data_batch=data_batch,
                             mesh=mesh)["loss"].reshape(d, len(alphas))
  eig_losses = {f"v{i + 1} (λ={lam:.4g})": losses[i] for i, lam in enumerate(eig.eigenvalues)}
  fig = sharp_plots.eigen_vs_random_figure(
      alphas, eig_losses, losses[len(eig_dirs):],
      title=f"{_label(t.workdir)}: {config.split} loss")
  name = _save(fig, os.path.join(out_dir, "eigen_vs_random.png"))
  np.savez(os.path.join(out_dir, "eigen_vs_random.npz"), alphas=alphas, losses=losses,
           num_eigen=len(eig_dirs), scale=scale)
  return name


def _spectral_density(config, t, dens, out_dir) -> str:
  curves = {_label(t.workdir): hessian.spectral_density(dens)}
  for other in config.compare:
    z = np.load(os.path.join(other, config.out_subdir, "slq.npz"))
    curves[_label(other)] = hessian.spectral_density(
        hessian.SLQ(z["nodes"], z["weights"], int(z["dim"])))
  return _save(sharp_plots.spectral_density_figure(curves),
               os.path.join(out_dir, "spectral_density.png"))


def _boundary_animation(config, t, params, data, eig, eig_dirs, rand_list, out_dir,
                        mesh) -> str:
  f = config.figures
  extent = boundary.data_extent(t.dataset)
  state = t.model_state
  # Inputs in the parameters' dtype (float64 under config.x64).
  logits_fn = lambda p, x: t.model.apply({"params": p, **state}, x.astype(
      jax.tree_util.tree_leaves(p)[0].dtype), train=False)
  a = np.linspace(-f.anim_alpha_max, f.anim_alpha_max, f.anim_frames)
  frames = boundary.frames(
      logits_fn, params, {f"top eigenvector (λ={eig.eigenvalues[0]:.4g})": eig_dirs[0],
                          "random filter-normalized direction": rand_list[0]},
      a, extent, resolution=f.anim_resolution, mesh=mesh)
  path = os.path.join(out_dir, "boundary_animation.gif")
  sharp_plots.save_boundary_animation(path, frames, a, extent,
                                      (np.asarray(data["x"]), np.asarray(data["y"])),
                                      title=_label(t.workdir))
  return os.path.basename(path)


def write_all(config, t, params, data, metric_fn, eig, dens, out_dir, key, data_batch,
              mesh=None) -> list[str]:
  """Writes every figure of config.figures into out_dir; returns their file names."""
  f = config.figures
  rand = directions_lib.random_directions(key, params, f.num_random)
  rand_list = [jax.tree_util.tree_map(lambda a, i=i: a[i], rand) for i in range(f.num_random)]
  norms = [float(jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(d))))
           for d in rand_list]
  scale = float(np.mean(norms))
  unravel = ravel_pytree(params)[1]
  eig_dirs = [unravel(v * scale) for v in eig.eigenvectors]
  written = [_eigen_vs_random(config, t, params, data, metric_fn, eig, out_dir, rand_list,
                              eig_dirs, scale, data_batch, mesh),
             _spectral_density(config, t, dens, out_dir)]
  if f.animation and tuple(t.dataset.input_shape) == (2,):
    written.append(_boundary_animation(config, t, params, data, eig, eig_dirs, rand_list,
                                       out_dir, mesh))
  return written
