"""Loss landscapes of a trained workdir: 1-D line, 2-D plane, interpolation to another minimum.

`run(config, workdir, other_workdir=None, outdir=None)` writes into `outdir` (default
WORKDIR/landscape; the trained run's own files are never touched):
  line.npz           alphas (A,), "<label>/<split>/<metric>" (A,) for the workdir ("a") and, with
                     other_workdir, the other minimum ("b") along its own filter-normalized
                     direction (same seed); metadata (JSON string)
  line.png           loss and accuracy curves, the minima overlaid
  plane.npz          axis (G,), "<split>/<metric>" (G, G) indexed [x, y]; metadata (with each
                     split's loss-surface curvature: landscape.surface_curvature)
  plane_{contour,contourf,heatmap,surface3d}.png   the first split's loss
  interpolation.npz / .png   with other_workdir: (1-α)θ_a + αθ_b, α in [interp_lo, interp_hi]
Directions are Li et al.'s filter-normalized random directions (2018, "Visualizing the Loss
Landscape of Neural Nets"): direction 0 is the line, directions 1 and 2 span the plane.
Config keys: genviz_jax/configs/landscape.py.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
from absl import logging

from genviz_jax import directions
from genviz_jax import files
from genviz_jax import landscape
from genviz_jax import progress
from genviz_jax import workdir as workdir_lib
from genviz_jax.jobs import devices
from genviz_jax.jobs.phased import comma_list
from genviz_jax.plots import landscape as plots

KINDS = ("line", "plane", "interpolation")


def _check_ints(c) -> None:
  for key in ("line_points", "grid_points", "interp_points"):
    if isinstance(c[key], bool) or not isinstance(c[key], int) or c[key] < 2:
      raise ValueError(f"config.{key}={c[key]!r} must be an integer >= 2")
  for key in ("chunk_size", "point_batch"):
    if isinstance(c[key], bool) or not isinstance(c[key], int) or c[key] <= 0:
      raise ValueError(f"config.{key}={c[key]!r} must be a positive integer")


def check_config(c, has_other: bool) -> list[str]:
  """One-line ValueError for a bad config value; returns the kinds to compute."""
  kinds = comma_list(c.kinds)
  bad = [k for k in kinds if k not in KINDS]
  if bad or not kinds:
    raise ValueError(f"config.kinds={c.kinds!r}; allowed: a comma list of {', '.join(KINDS)}")
  if "interpolation" in kinds and not has_other:
    if kinds == ["interpolation"]:
      raise ValueError("config.kinds='interpolation' needs --other_workdir")
    kinds.remove("interpolation")
  if c.norm not in directions.NORMS:
    raise ValueError(f"config.norm={c.norm!r}; allowed: {', '.join(directions.NORMS)}")
  splits = comma_list(c.splits)
  if not splits or any(s not in ("train", "test") for s in splits):
    raise ValueError(f"config.splits={c.splits!r}; allowed: train, test (comma list)")
  _check_ints(c)
  if not c.line_range > 0:
    raise ValueError(f"config.line_range={c.line_range!r} must be > 0")
  if not c.grid_lo < c.grid_hi:
    raise ValueError(f"config grid range [{c.grid_lo}, {c.grid_hi}] needs grid_lo < grid_hi")
  if not c.interp_lo < c.interp_hi:
    raise ValueError(f"config interpolation range [{c.interp_lo}, {c.interp_hi}] needs lo < hi")
  return kinds


class _Job:
  """The loaded runs and settings one landscape run shares between its kinds."""

  def __init__(self, config, workdir, other_workdir, outdir):
    self.config, self.outdir = config, outdir
    self.splits = comma_list(config.splits)
    step = None if config.step < 0 else int(config.step)
    self.runs = {"a": workdir_lib.load(workdir, step=step)}
    self.label = {"a": os.path.basename(os.path.abspath(workdir))}
    if other_workdir is not None:
      self.runs["b"] = workdir_lib.load(other_workdir)
      directions.check_same_tree(self.runs["b"].params, self.runs["a"].params,
                                 what="other_workdir params")
      self.label["b"] = os.path.basename(os.path.abspath(other_workdir))
    self.kw = dict(chunk_size=int(config.chunk_size), point_batch=int(config.point_batch),
                   data_batch=int(config.data_batch) or None,
                   mesh=devices.point_mesh_for(config))
    self.meta = {"workdir": os.path.abspath(workdir), "step": self.runs["a"].step,
                 "seed": int(config.seed), "norm": config.norm,
                 "ignore_1d": bool(config.ignore_1d), "splits": self.splits,
                 "other_workdir": os.path.abspath(other_workdir) if other_workdir else None}

  def evaluate(self, run, fn, num_points: int, what: str):
    """fn(metric_fn, data=..., on_chunk=..., **kw) on every split -> (axis, {split/metric: v})."""
    p = progress.Progress(what, num_points * len(self.splits), unit="points")
    n = len(self.splits)
    res, axis = {}, None
    for i, s in enumerate(self.splits):
      r = fn(run.metric_fn, data=getattr(run.dataset, s),
             on_chunk=lambda d, k, i=i: p.update(i * k + d, force=i * k + d == n * k), **self.kw)
      axis, r = r if isinstance(r, tuple) else (None, r)
      res.update({f"{s}/{m}": v for m, v in r.items()})
    return axis, res

  def path(self, name: str) -> str:
    os.makedirs(self.outdir, exist_ok=True)
    return os.path.join(self.outdir, name)


def _line(job: _Job, bases) -> str:
  c = job.config
  alphas = np.linspace(-c.line_range, c.line_range, int(c.line_points))
  curves = {}
  for name, r in job.runs.items():
    d = jax.tree.map(lambda x: x[0], bases[name])
    _, curves[name] = job.evaluate(
        r, lambda fn, **k: landscape.line(fn, r.params, d, alphas, **k), len(alphas),
        f"line {job.label[name]}")
  arrays = {"alphas": alphas, **{f"{n}/{k}": v for n, cv in curves.items() for k, v in cv.items()}}
  out = job.path("line.npz")
  files.save_npz_atomic(out, arrays, {**job.meta, "labels": job.label})
  plots.curves_1d(alphas, {job.label[n]: cv for n, cv in curves.items()}, job.path("line.png"),
                  xlabel=f"α ({c.norm}-normalized random direction)", marks=(0.0,))
  return out


def _plane(job: _Job, bases) -> str:
  c, a = job.config, job.runs["a"]
  basis = jax.tree.map(lambda x: x[1:], bases["a"])
  g = int(c.grid_points)
  axis, grids = job.evaluate(
      a, lambda fn, **k: landscape.plane(fn, a.params, basis, num=g, lo=float(c.grid_lo),
                                         hi=float(c.grid_hi), **k), g * g, "plane")
  out = job.path("plane.npz")
  # How non-convex the plane is (Li et al. §5-6): negative-curvature share, mean |λmin/λmax|.
  curvature = {s: landscape.surface_curvature(axis, axis, grids[f"{s}/loss"]) for s in job.splits
               if f"{s}/loss" in grids}
  files.save_npz_atomic(out, {"axis": axis, **grids},
                        {**job.meta, "directions": [1, 2], "curvature": curvature})
  first = job.splits[0]
  z = grids[f"{first}/loss"]
  for kind in plots.KINDS_2D:
    plots.surface_2d(axis, z, job.path(f"plane_{kind}.png"), kind=kind, label=f"{first} loss",
                     title=f"{job.label['a']}: {first} loss")
  return out


def _interpolation(job: _Job) -> str:
  c, a, b = job.config, job.runs["a"], job.runs["b"]
  alphas = np.linspace(c.interp_lo, c.interp_hi, int(c.interp_points))
  _, res = job.evaluate(
      a, lambda fn, **k: landscape.interpolation(fn, a.params, b.params, alphas, **k),
      len(alphas), "interpolation")
  out = job.path("interpolation.npz")
  files.save_npz_atomic(out, {"alphas": alphas, **res}, {**job.meta, "labels": job.label})
  la, lb = job.label["a"], job.label["b"]
  plots.curves_1d(alphas, {f"{la} -> {lb}": res}, job.path("interpolation.png"),
                  xlabel=f"α: (1-α)·{la} + α·{lb}", marks=(0.0, 1.0))
  return out


def run(config, workdir: str, other_workdir: str | None = None,
        outdir: str | None = None) -> dict:
  """Computes the configured surfaces; returns {kind: npz path}."""
  kinds = check_config(config, other_workdir is not None)
  outdir = outdir or os.path.join(workdir, "landscape")
  if os.path.abspath(outdir) in (os.path.abspath(workdir),
                                 os.path.abspath(other_workdir or workdir)):
    raise ValueError(f"outdir={outdir!r} is a trained workdir; use a subfolder (default "
                     "WORKDIR/landscape)")
  job = _Job(config, workdir, other_workdir, outdir)
  t0 = time.time()
  # One compiled generation of three directions per run: 0 the line, 1 and 2 the plane.
  bases = {n: landscape.random_basis(jax.random.key(int(config.seed)), r.params, 3,
                                     norm=config.norm, ignore_1d=bool(config.ignore_1d))
           for n, r in job.runs.items()}
  out = {}
  if "line" in kinds:
    out["line"] = _line(job, bases)
  if "plane" in kinds:
    out["plane"] = _plane(job, bases)
  if "interpolation" in kinds:
    out["interpolation"] = _interpolation(job)
  logging.info("landscape: %s in %.1f s", out, time.time() - t0)
  return out
