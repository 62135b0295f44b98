"""The PCA plane of a trained run's trajectory (Li et al. 2018, §7), drawn over its loss contour.

`run(config, workdir, outdir=None)` reads the run's parameter snapshots θ_i (trained with
snapshot_every > 0) and its final parameters θ_final, finds the top-2 principal directions of
{θ_i − θ_final} (trajectory.pca_plane), evaluates the loss on a grid of that plane around θ_final
covering the path (trajectory.contour, through the engine), and writes into `outdir` (default
WORKDIR/trajectory):
  trajectory.npz    steps (T,), coords (T, 2), xs, ys, "<split>/<metric>" (G, G), explained_variance
  trajectory.json   explained variance of the two directions, number of iterates, path length
  trajectory.png    the path over the contour, explained variance on the axes
Config keys: genviz_jax/configs/trajectory.py.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
from absl import logging

from genviz_jax import engine
from genviz_jax import files
from genviz_jax import trajectory
from genviz_jax import workdir as workdir_lib
from genviz_jax.jobs import devices
from genviz_jax.plots import trajectory as plots


def check_config(c) -> None:
  """One-line ValueError for a bad config value."""
  g = c.grid_points
  if isinstance(g, bool) or not isinstance(g, int) or g < 3:
    raise ValueError(f"config.grid_points={g!r} must be an integer >= 3")
  if not (np.isfinite(c.margin) and c.margin >= 0):
    raise ValueError(f"config.margin={c.margin!r} must be a number >= 0")
  if c.split not in ("train", "test"):
    raise ValueError(f"config.split={c.split!r}; allowed: train, test")
  engine.metrics.positive_int("config.point_batch", c.point_batch)


def run(config, workdir: str, outdir: str | None = None) -> dict:
  """PCA plane, contour and figure of the run in `workdir`; returns trajectory.json."""
  check_config(config)
  outdir = outdir or os.path.join(workdir, "trajectory")
  if os.path.abspath(outdir) == os.path.abspath(workdir):
    raise ValueError(f"outdir={outdir!r} is the trained workdir; use a subfolder (default "
                     "WORKDIR/trajectory)")
  steps, iterates = workdir_lib.snapshots(workdir)
  trained = workdir_lib.load(workdir)
  t0 = time.time()
  plane = trajectory.pca_plane(jax.tree.map(np.asarray, iterates), trained.params)
  xs, ys, grids = trajectory.contour(
      trained.metric_fn, trained.params, plane, num=int(config.grid_points),
      margin=float(config.margin), data=getattr(trained.dataset, config.split),
      mesh=devices.point_mesh_for(config), point_batch=int(config.point_batch))
  ev = [float(v) for v in plane.explained_variance]
  label = os.path.basename(os.path.abspath(workdir))
  os.makedirs(outdir, exist_ok=True)
  files.save_npz_atomic(
      os.path.join(outdir, "trajectory.npz"),
      {"steps": steps, "coords": plane.coords, "xs": xs, "ys": ys,
       "explained_variance": np.asarray(ev), **{f"{config.split}/{k}": v for k, v in grids.items()}},
      {"workdir": os.path.abspath(workdir), "split": config.split})
  fig = plots.trajectory_contour(
      xs, ys, grids["loss"], plane.coords, os.path.join(outdir, "trajectory.png"),
      explained_variance=ev, title=f"{label}: {config.split} loss, {len(steps)} iterates")
  summary = {"workdir": label, "explained_variance": ev,
             "explained_variance_top2": float(sum(ev)), "num_iterates": int(len(steps)),
             "first_step": int(steps[0]), "last_step": int(steps[-1]),
             "path_length": float(np.sum(np.linalg.norm(np.diff(plane.coords, axis=0), axis=1))),
             "figure": fig, "wall_time_s": round(time.time() - t0, 2)}
  files.write_json_atomic(os.path.join(outdir, "trajectory.json"), summary)
  logging.info("trajectory: %s explained variance %.3f + %.3f", label, *ev)
  return summary
