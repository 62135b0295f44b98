"""Basin radius and volume of a trained workdir along many random directions.

`run(config, workdir, outdir=None)` writes into `outdir` (default WORKDIR/basin; the trained
run's own files are never touched):
  basin.json         log10_volume (+ CI, ESS, largest share, censored count, measure), radius stats;
                     with prior_sigma > 0 also "gaussian_prior": the basin's log10 prior mass under
                     N(μ, σ²I) (+ CI, ESS, largest share; basin.gaussian)
  radii.npy          (K,) radii (K, 2 with two_sided: +d, -d) in units of the direction
  radii_details.npz  censored, converged, value at the radius, evaluations, ||d_k||
  histogram.png      the radii
  chunks/            finished chunks: a killed sweep rerun with the same arguments continues and
                     ends with identical radii; a different sweep there is refused.
The volume is that of the star-shaped region r(d) in n dimensions, log10 V = log10 V_ball(n) +
log10 mean_k r_k^n (genviz_jax.basin). Config keys: genviz_jax/configs/basin.py.

preconditioner="adam" (Scherlis & Belrose 2025, arXiv 2501.18812): directions P·g_k with
P ∝ (v + eps)^{-1/2}, det P = 1 (basin.diagonal_preconditioner), and the exact importance weight in
both measures. Checkpoints hold params only, so v is estimated as the mean over one epoch of train
minibatches of the squared minibatch gradient at θ*: Adam's v is an exponential average of
exactly that squared gradient, and at convergence (θ_t ≈ θ*) it estimates E_batch[g_b(θ*)²].
The gradient is of the clean train loss (the metric's "loss"), not of a poisoned objective.
"""

from __future__ import annotations

import math
import os
import time

import jax
import numpy as np
from absl import logging

from genviz_jax import basin
from genviz_jax import directions
from genviz_jax.basin import gaussian
from genviz_jax.basin.radii import METHODS
from genviz_jax import files
from genviz_jax import hessian
from genviz_jax import progress
from genviz_jax import workdir as workdir_lib
from genviz_jax.jobs import devices
from genviz_jax.plots import basin as plots_basin

RESULT_FILES = ("basin.json", "radii.npy", "radii_details.npz", "histogram.png")
PRECONDITIONERS = ("", "adam")
PRIOR_CENTRES = ("minimum", "zero")
DEFAULT_PRECONDITIONER_BATCH = 32
UNITS = {"isotropic": "parameter-space length", "filter-normalized": "filter-normalized direction",
         "layer-normalized": "layer-normalized direction"}


def check_config(c) -> None:
  """One-line ValueError for a bad config value (before anything is loaded or written)."""
  if c.norm not in directions.NORMS:
    raise ValueError(f"config.norm={c.norm!r}; allowed: {', '.join(directions.NORMS)}")
  if c.split not in ("train", "test"):
    raise ValueError(f"config.split={c.split!r}; allowed: train, test")
  if c.crossing not in ("", "above", "below"):
    raise ValueError(f"config.crossing={c.crossing!r}; allowed: '' (auto), above, below")
  for key in ("num_directions", "chunk_size"):
    v = c[key]
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
      raise ValueError(f"config.{key}={v!r} must be a positive integer (K > 0)")
  for key in ("point_batch", "data_batch"):
    v = c[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
      raise ValueError(f"config.{key}={v!r} must be an integer >= 0 (0: the engine's default)")
  if c.method not in METHODS:
    raise ValueError(f"config.method={c.method!r}; allowed: {', '.join(METHODS)}")
  for key in ("r_max", "r_init"):
    if not (isinstance(c[key], (int, float)) and math.isfinite(c[key]) and c[key] > 0):
      raise ValueError(f"config.{key}={c[key]!r} must be a finite number > 0")
  _check_prior_config(c)


def _check_prior_config(c) -> None:
  """The preconditioner and Gaussian-prior keys, and their combinations with norm."""
  if c.preconditioner not in PRECONDITIONERS:
    raise ValueError(f"config.preconditioner={c.preconditioner!r}; allowed: '' (none), adam")
  if c.preconditioner and c.norm != "none":
    raise ValueError(f"config.preconditioner={c.preconditioner!r} needs config.norm='none' (got "
                     f"{c.norm!r}): the preconditioner replaces the normalization")
  v = c.preconditioner_batch_size
  if isinstance(v, bool) or not isinstance(v, int) or v < 0:
    raise ValueError(f"config.preconditioner_batch_size={v!r} must be an integer >= 0 (0: the "
                     "run's batch size)")
  s = c.prior_sigma
  if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s < 0:
    raise ValueError(f"config.prior_sigma={s!r} must be a finite number >= 0 (0: no prior mass)")
  if s > 0 and c.norm != "none":
    raise ValueError(f"config.prior_sigma={s!r} needs config.norm='none' (got {c.norm!r}): the "
                     "prior mass needs Euclidean radii")
  if c.prior_centre not in PRIOR_CENTRES:
    raise ValueError(f"config.prior_centre={c.prior_centre!r}; allowed: "
                     f"{', '.join(PRIOR_CENTRES)}")


def _check_outdir(workdir: str, outdir: str, store_dir: str) -> None:
  if os.path.abspath(outdir) == os.path.abspath(workdir):
    raise ValueError(f"outdir={outdir!r} is the trained workdir; use a subfolder (default "
                     "WORKDIR/basin)")
  if os.path.exists(os.path.join(outdir, "basin.json")) and not os.path.exists(
      os.path.join(store_dir, basin.ChunkStore.MANIFEST)):
    raise ValueError(f"outdir={outdir!r} holds basin results without their chunks/; use another "
                     "outdir")


def _progress_hook(num_directions: int):
  """on_chunk for basin.radii: directions/s and points/s, the first (compiling) chunk left out."""
  p = progress.Progress("basin", num_directions, unit="directions")
  clock = {"t0": None, "points": 0}

  def on_chunk(done, total, arrays):
    if not arrays["resumed"]:
      if clock["t0"] is None:
        clock["t0"] = time.time()
      else:
        clock["points"] += int(np.sum(arrays["num_evals"]))
    dt = time.time() - clock["t0"] if clock["t0"] is not None else 0.0
    rate = clock["points"] / dt if dt > 0 else float("nan")
    p.update(done, extra=f"({rate:.0f} points/s)", force=done == total)

  return on_chunk


def squared_gradient(metric_fn, params, train, batch_size: int, seed: int):
  """v = mean_b (∇L_b(θ*))², elementwise, over the floor(N / batch_size) minibatches of one
  seeded shuffle of `train` (each minibatch's mean loss; hessian.loss_and_grad). A pytree like
  params, float64 numpy."""
  n = int(np.shape(jax.tree.leaves(train)[0])[0])
  batch_size = min(int(batch_size), n)
  order = np.random.default_rng(seed).permutation(n)
  grad = jax.jit(lambda p, b: hessian.loss_and_grad(metric_fn, p, b)[1])
  total = None
  num = n // batch_size
  for i in range(num):
    idx = order[i * batch_size:(i + 1) * batch_size]
    g = grad(params, jax.tree.map(lambda x: x[idx], train))
    sq = jax.tree.map(lambda x: np.square(np.asarray(x, np.float64)), g)
    total = sq if total is None else jax.tree.map(np.add, total, sq)
  return jax.tree.map(lambda x: x / num, total)


def _directions(config, trained) -> basin.RandomDirections:
  precond = None
  if config.preconditioner == "adam":
    batch = (int(config.preconditioner_batch_size) or int(trained.config.get("batch_size", 0))
             or DEFAULT_PRECONDITIONER_BATCH)
    v = squared_gradient(trained.metric_fn, trained.params, trained.dataset.train, batch,
                         int(config.seed))
    precond = basin.diagonal_preconditioner(v, trained.params, ignore_1d=bool(config.ignore_1d))
  return basin.RandomDirections(jax.random.key(config.seed), int(config.num_directions),
                                norm=config.norm, ignore_1d=bool(config.ignore_1d),
                                preconditioner=precond)


def _prior_mass(config, trained, spec, res):
  """The Gaussian-prior mass (basin.gaussian), centred at θ* or at 0; None when prior_sigma = 0."""
  if not config.prior_sigma:
    return None
  kwargs = dict(num_bootstrap=int(config.num_bootstrap), confidence=float(config.confidence),
                seed=int(config.seed))
  if config.prior_centre == "zero":
    zeros = jax.tree.map(np.zeros_like, trained.params)
    b, m = gaussian.offset_projections(spec, trained.params, zeros,
                                       chunk_size=int(config.chunk_size))
    kwargs.update(projection=b, offset_norm=m)
  return res.gaussian_mass(float(config.prior_sigma), **kwargs)


def _sweep(config, trained, spec, store_dir: str, mesh):
  split = getattr(trained.dataset, config.split)
  return basin.radii(
      trained.metric_fn, trained.params, spec, threshold=float(config.threshold), data=split,
      metric=config.metric, crossing=config.crossing or None, relative=bool(config.relative),
      r_init=float(config.r_init), r_max=float(config.r_max), rtol=float(config.rtol),
      two_sided=bool(config.two_sided), chunk_size=int(config.chunk_size),
      point_batch=int(config.point_batch) or None, data_batch=int(config.data_batch) or None,
      method=str(config.method),
      cache_directions=bool(config.cache_directions), mesh=mesh,
      store=basin.ChunkStore(store_dir), on_chunk=_progress_hook(int(config.num_directions)))


def _summary(config, res, vol, mass, workdir: str, step: int, wall: float, mesh) -> dict:
  r = np.asarray(res.radius, np.float64)
  prior = {}
  if mass is not None:
    prior = {"gaussian_prior": {**mass.to_json(), "centre": config.prior_centre}}
  return {
      **vol.to_json(), **prior, "preconditioner": config.preconditioner,
      "radius_mean": float(r.mean()), "radius_median": float(np.median(r)),
      "radius_min": float(r.min()), "radius_max": float(r.max()),
      "radius_quantiles_5_25_75_95": np.quantile(r, [0.05, 0.25, 0.75, 0.95]).tolist(),
      "radius_units": UNITS[res.measure], "euclidean_radius_median": float(np.median(res.euclidean())),
      "num_directions": res.num_directions, "num_censored": res.num_censored,
      "num_unconverged": int(np.sum(~res.converged)), "threshold": res.threshold,
      "threshold_config": float(config.threshold), "relative": bool(config.relative),
      "metric": res.metric, "crossing": res.crossing, "split": config.split,
      "centre_value": res.centre_value, "norm": config.norm, "ignore_1d": bool(config.ignore_1d),
      "two_sided": bool(config.two_sided), "rtol": res.rtol, "r_max": res.r_max,
      # radius <= r*(1 + rtol): log V is biased up by at most n·log(1 + rtol).
      "log10_volume_tolerance_bias": res.dim * math.log10(1 + res.rtol),
      "seed": int(config.seed), "workdir": os.path.abspath(workdir), "step": step,
      "num_evaluations": int(np.sum(res.num_evals)), "wall_time_s": round(wall, 3),
      "devices": 1 if mesh is None else int(mesh.size),
  }


def _write(outdir: str, workdir: str, res, vol, summary: dict) -> None:
  os.makedirs(outdir, exist_ok=True)
  files.save_npy_atomic(os.path.join(outdir, "radii.npy"), res.radius)
  files.save_npz_atomic(os.path.join(outdir, "radii_details.npz"), res.arrays())
  title = (f"{os.path.basename(os.path.abspath(workdir))}: {res.metric} "
           f"{'>' if res.crossing == 'above' else '<'} {res.threshold:g}, "
           f"log10 V = {vol.log10_volume:.4g} ({res.measure})")
  tmp_png = os.path.join(outdir, "histogram.tmp.png")
  plots_basin.radius_histogram({"radii": np.asarray(res.radius, np.float64)}, tmp_png,
                               censored={"radii": res.num_censored},
                               xlabel=f"radius ({UNITS[res.measure]})", title=title)
  os.replace(tmp_png, os.path.join(outdir, "histogram.png"))
  files.write_json_atomic(os.path.join(outdir, "basin.json"), summary)


def run(config, workdir: str, outdir: str | None = None) -> dict:
  """The sweep: loads the workdir, finds radii (resumable), writes the outputs; returns basin.json."""
  check_config(config)
  outdir = outdir or os.path.join(workdir, "basin")
  store_dir = os.path.join(outdir, "chunks")
  _check_outdir(workdir, outdir, store_dir)
  trained = workdir_lib.load(workdir, step=None if config.step < 0 else int(config.step))
  mesh = devices.point_mesh_for(config)
  t0 = time.time()
  spec = _directions(config, trained)
  res = _sweep(config, trained, spec, store_dir, mesh)
  wall = time.time() - t0
  vol = res.volume(num_bootstrap=int(config.num_bootstrap), confidence=float(config.confidence),
                   seed=int(config.seed))
  mass = _prior_mass(config, trained, spec, res)
  summary = _summary(config, res, vol, mass, workdir, trained.step, wall, mesh)
  _write(outdir, workdir, res, vol, summary)
  logging.info("basin: %s", summary)
  return summary
