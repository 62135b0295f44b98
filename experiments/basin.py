"""Basin radius and volume of a trained workdir along many random directions.

  python -m experiments.basin --workdir=runs/swissroll_clean
  python -m experiments.basin --workdir=runs/bad --config=experiments/configs/basin.py:quick \
      --config.threshold=0.5 --outdir=runs/bad/basin_t05

Writes into --outdir (default WORKDIR/basin; the trained run's own files are never touched):
  basin.json         log10_volume (+ CI, ESS, largest share, censored count, measure), radius stats
  radii.npy          (K,) radii (K, 2 with two_sided: +d, -d) in units of the direction
  radii_details.npz  censored, converged, value at the radius, evaluations, ||d_k||
  histogram.png      the radii
  chunks/            finished chunks: killed and rerun with the same command, a sweep continues
                     and ends with identical radii; a different sweep there is refused.
Progress lines give directions/s, points/s and the ETA. Bad flags or configs: one line
`error: ...` on stderr, exit status 2, nothing written.
"""

from __future__ import annotations

import math
import os
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments import common

FLAGS = flags.FLAGS
_DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "basin.py")


def define_flags() -> None:
  """Defines the flags; only when run as a binary, so other code can import run()."""
  config_flags.DEFINE_config_file("config", _DEFAULT_CONFIG, "Basin config "
                                  "(experiments/configs/basin.py[:variant]).", lock_config=True)
  flags.DEFINE_string("workdir", None, "A trained workdir (experiments.train).")
  flags.DEFINE_string("outdir", None, "Output directory (default WORKDIR/basin).")
  flags.mark_flags_as_required(["workdir"])


RESULT_FILES = ("basin.json", "radii.npy", "radii_details.npz", "histogram.png")


def check_config(c) -> None:
  """One-line ValueError for a bad config value (before anything is loaded or written)."""
  from genviz_jax import directions
  if c.norm not in directions.NORMS:
    raise ValueError(f"config.norm={c.norm!r}; allowed: {', '.join(directions.NORMS)}")
  if c.split not in ("train", "test"):
    raise ValueError(f"config.split={c.split!r}; allowed: train, test")
  if c.crossing not in ("", "above", "below"):
    raise ValueError(f"config.crossing={c.crossing!r}; allowed: '' (auto), above, below")
  for key in ("num_directions", "chunk_size", "point_batch"):
    v = c[key]
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
      raise ValueError(f"config.{key}={v!r} must be a positive integer (K > 0)")
  if not isinstance(c.data_batch, int) or c.data_batch < 0:
    raise ValueError(f"config.data_batch={c.data_batch!r} must be an integer >= 0 (0: all)")
  for key in ("r_max", "r_init"):
    if not (isinstance(c[key], (int, float)) and math.isfinite(c[key]) and c[key] > 0):
      raise ValueError(f"config.{key}={c[key]!r} must be a finite number > 0")


def run(config, workdir: str, outdir: str | None = None) -> dict:
  """The sweep: loads the workdir, finds radii (resumable), writes the outputs; returns basin.json."""
  import jax
  import numpy as np
  from genviz_jax import basin, evaluate
  from genviz_jax import workdir as workdir_lib
  from genviz_jax.plots import basin as plots_basin

  check_config(config)
  outdir = outdir or os.path.join(workdir, "basin")
  if os.path.abspath(outdir) == os.path.abspath(workdir):
    raise ValueError(f"outdir={outdir!r} is the trained workdir; use a subfolder (default "
                     "WORKDIR/basin)")
  store_dir = os.path.join(outdir, "chunks")
  if os.path.exists(os.path.join(outdir, "basin.json")) and not os.path.exists(
      os.path.join(store_dir, basin.ChunkStore.MANIFEST)):
    raise ValueError(f"outdir={outdir!r} holds basin results without their chunks/; use another "
                     "--outdir")
  trained = workdir_lib.load(workdir, step=None if config.step < 0 else int(config.step))
  split = getattr(trained.dataset, config.split)
  spec = basin.RandomDirections(jax.random.key(config.seed), int(config.num_directions),
                                norm=config.norm, ignore_1d=bool(config.ignore_1d))
  mesh = None
  if config.shard and jax.local_device_count() > 1 and jax.process_count() == 1:
    mesh = evaluate.point_mesh()
  progress = common.Progress("basin", int(config.num_directions), unit="directions")
  clock = {"t0": None, "points": 0}

  def on_chunk(done, total, arrays):
    if not arrays["resumed"]:
      if clock["t0"] is None:  # the first computed chunk includes compilation
        clock["t0"] = time.time()
      else:
        clock["points"] += int(np.sum(arrays["num_evals"]))
    dt = time.time() - clock["t0"] if clock["t0"] is not None else 0.0
    rate = clock["points"] / dt if dt > 0 else float("nan")
    progress.update(done, extra=f"({rate:.0f} points/s)", force=done == total)

  t0 = time.time()
  res = basin.radii(
      trained.metric_fn, trained.params, spec, threshold=float(config.threshold), data=split,
      metric=config.metric, crossing=config.crossing or None, relative=bool(config.relative),
      r_init=float(config.r_init), r_max=float(config.r_max), rtol=float(config.rtol),
      two_sided=bool(config.two_sided), chunk_size=int(config.chunk_size),
      point_batch=int(config.point_batch), data_batch=int(config.data_batch) or None,
      cache_directions=bool(config.cache_directions), mesh=mesh,
      store=basin.ChunkStore(store_dir), on_chunk=on_chunk)
  wall = time.time() - t0
  vol = res.volume(num_bootstrap=int(config.num_bootstrap), confidence=float(config.confidence),
                   seed=int(config.seed))
  r = np.asarray(res.radius, np.float64)
  units = {"isotropic": "parameter-space length", "filter-normalized": "filter-normalized direction",
           "layer-normalized": "layer-normalized direction"}[res.measure]
  summary = {
      **vol.to_json(),
      "radius_mean": float(r.mean()), "radius_median": float(np.median(r)),
      "radius_min": float(r.min()), "radius_max": float(r.max()),
      "radius_quantiles_5_25_75_95": np.quantile(r, [0.05, 0.25, 0.75, 0.95]).tolist(),
      "radius_units": units, "euclidean_radius_median": float(np.median(res.euclidean())),
      "num_directions": res.num_directions, "num_censored": res.num_censored,
      "num_unconverged": int(np.sum(~res.converged)), "threshold": res.threshold,
      "threshold_config": float(config.threshold), "relative": bool(config.relative),
      "metric": res.metric, "crossing": res.crossing, "split": config.split,
      "centre_value": res.centre_value, "norm": config.norm, "ignore_1d": bool(config.ignore_1d),
      "two_sided": bool(config.two_sided), "rtol": res.rtol, "r_max": res.r_max,
      # radius <= r*(1 + rtol): log V is biased up by at most n·log(1 + rtol).
      "log10_volume_tolerance_bias": res.dim * math.log10(1 + res.rtol),
      "seed": int(config.seed), "workdir": os.path.abspath(workdir), "step": trained.step,
      "num_evaluations": int(np.sum(res.num_evals)), "wall_time_s": round(wall, 3),
      "devices": 1 if mesh is None else int(mesh.size),
  }
  os.makedirs(outdir, exist_ok=True)
  np.save(os.path.join(outdir, "radii.npy.tmp.npy"), res.radius)
  os.replace(os.path.join(outdir, "radii.npy.tmp.npy"), os.path.join(outdir, "radii.npy"))
  tmp = os.path.join(outdir, "radii_details.tmp.npz")
  np.savez(tmp, **res.arrays())
  os.replace(tmp, os.path.join(outdir, "radii_details.npz"))
  cens = {"radii": res.num_censored}
  title = (f"{os.path.basename(os.path.abspath(workdir))}: {res.metric} "
           f"{'>' if res.crossing == 'above' else '<'} {res.threshold:g}, "
           f"log10 V = {vol.log10_volume:.4g} ({res.measure})")
  tmp_png = os.path.join(outdir, "histogram.tmp.png")
  plots_basin.radius_histogram({"radii": r}, tmp_png, censored=cens,
                               xlabel=f"radius ({units})", title=title)
  os.replace(tmp_png, os.path.join(outdir, "histogram.png"))
  common.write_json_atomic(os.path.join(outdir, "basin.json"), summary)
  logging.info("basin: %s", summary)
  return summary


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")

  def go():
    s = run(FLAGS.config, FLAGS.workdir, FLAGS.outdir)
    print(" ".join(f"{k}={s[k]}" for k in ("log10_volume", "log10_volume_ci",
                                             "effective_sample_size", "radius_median",
                                             "num_censored", "measure", "wall_time_s")))

  common.run_guarded(go)


if __name__ == "__main__":
  define_flags()
  app.run(main)
