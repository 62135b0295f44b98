"""The paper's phases that measure the geometry around the good and the bad minimum.

landscape: filter-normalized 1-D (both minima overlaid) and 2-D slices, interpolation good->bad.
basin: radii along random filter-normalized directions and log10 volumes.
sharpness: Hessian spectrum, PAC-Bayes flatness and ε-sharpness of both minima.
Each reads the two trained runs of the decision phase (WORKDIR/runs/{good,bad}) through the jobs
layer (genviz_jax.jobs) and returns a JSON-ready dict.
"""

from __future__ import annotations

import os

import numpy as np

from genviz_jax.configs import basin as basin_cfg
from genviz_jax.configs import landscape as landscape_cfg
from genviz_jax.configs import sharpness as sharpness_cfg
from genviz_jax.jobs import basin as basin_job
from genviz_jax.jobs import landscape as landscape_job
from genviz_jax.jobs import sharpness as sharpness_job
from genviz_jax.paper import common

BASIN_KEYS = ("log10_volume", "log10_volume_ci", "effective_sample_size", "max_share",
              "radius_mean", "radius_median", "num_directions", "num_censored", "dim",
              "threshold", "metric", "measure", "centre_value", "wall_time_s")


def _landscape_numbers(both: dict, bad: dict) -> dict:
  line = np.load(both["line"])
  interp = np.load(both["interpolation"])
  out = {}
  for name, key in (("good", "a"), ("bad", "b")):
    loss = line[f"{key}/train/loss"]
    out[name] = {"line_train_loss_at_alpha_pm_half": [
        float(np.interp(-0.5, line["alphas"], loss)), float(np.interp(0.5, line["alphas"], loss))]}
  for name, path in (("good", both["plane"]), ("bad", bad["plane"])):
    z = np.load(path)["train/loss"]
    out[name]["plane_train_loss_mean"] = float(np.mean(z))
    out[name]["plane_share_below_1"] = float(np.mean(z < 1.0))
  out["interpolation_max_train_loss"] = float(np.max(interp["train/loss"]))
  return out


def phase_landscape(cfg, workdir: str) -> dict:
  """Filter-normalized 1-D (good and bad overlaid) and 2-D landscapes, interpolation good->bad."""
  L = cfg.landscape
  dirs = common.minima(workdir)
  c = landscape_cfg.get_config("")
  c.seed = int(L.direction_seed)
  c.line_points, c.grid_points = int(L.num_1d), int(L.num_2d)
  c.interp_points = int(L.num_interpolation)
  # The swiss-roll basins are narrow (radius ~0.05-0.1 of ||θ|| filter by filter): the default
  # [-1, 1] window would show only their walls.
  c.line_range = float(L.range_1d)
  c.grid_lo, c.grid_hi = -float(L.range_2d), float(L.range_2d)
  both = landscape_job.run(c, dirs["good"], other_workdir=dirs["bad"],
                           outdir=os.path.join(workdir, "landscape", "good"))
  c.kinds = "plane"
  bad = landscape_job.run(c, dirs["bad"], outdir=os.path.join(workdir, "landscape", "bad"))
  out = _landscape_numbers(both, bad)
  figs = [os.path.join("landscape", "good", f) for f in
          ("line.png", "plane_contour.png", "plane_surface3d.png", "interpolation.png")]
  figs += [os.path.join("landscape", "bad", f) for f in ("plane_contour.png", "plane_surface3d.png")]
  out["figures"] = [f for f in figs if os.path.exists(os.path.join(workdir, f))]
  out["npz"] = {k: common.rel(workdir, v) for k, v in both.items()}
  return out


def phase_basin(cfg, workdir: str) -> dict:
  """Basin radii along filter-normalized directions and log10 volumes, good vs bad."""
  from genviz_jax.plots import basin as basin_plots
  B = cfg.basin
  dirs = common.minima(workdir)
  c = basin_cfg.get_config("")
  c.num_directions, c.threshold = int(B.num_directions), float(B.threshold)
  c.r_max, c.seed = float(B.r_max), int(B.direction_seed)
  c.chunk_size = min(int(c.chunk_size), int(B.num_directions))
  out, radii, cens = {}, {}, {}
  for name, d in dirs.items():
    outdir = os.path.join(workdir, "basin", name)
    res = basin_job.run(c, d, outdir=outdir)
    out[name] = {k: res[k] for k in BASIN_KEYS}
    radii[name] = np.load(os.path.join(outdir, "radii.npy"))
    cens[name] = res["num_censored"]
  path = common.figure_path(workdir, "basin_radii_histogram.png")
  basin_plots.radius_histogram(
      radii, path, censored=cens, xlabel="radius (filter-normalized direction)",
      title=f"train loss > {B.threshold:g}: log10 V good {out['good']['log10_volume']:.4g}, "
            f"bad {out['bad']['log10_volume']:.4g}")
  out["figure"] = common.rel(workdir, path)
  return out


def _sharpness_numbers(res: dict) -> dict:
  out = {}
  for name, r in res.items():
    h = r["hessian"]
    out[name] = {"top_eigenvalue": h["top_eigenvalues"][0], "trace": h["trace"]["estimate"],
                 "trace_ci": h["trace"]["ci"], "pacbayes_sigma": r["pacbayes"]["sigma"]["sigma"],
                 "pacbayes_mag_sigma": r["pacbayes"]["mag_sigma"]["sigma"],
                 "train_loss": r["centre"]["loss"]}
  measures = sorted(set(res["good"]["measures"]) & set(res["bad"]["measures"]))
  values = {m: [res["good"]["measures"][m], res["bad"]["measures"][m]] for m in measures}
  out["measures"] = measures
  out["values_good_bad"] = values
  # Every entry of `measures` is "larger = sharper" (genviz_jax.jobs.sharpness).
  out["ranked_sharper_by"] = [m for m, (g, b) in values.items()
                              if g is not None and b is not None and b > g]
  return out


def phase_sharpness(cfg, workdir: str) -> dict:
  """Hessian spectrum, PAC-Bayes flatness and ε-sharpness of the good and bad minima."""
  dirs = common.minima(workdir)
  c = sharpness_cfg.get_config(str(cfg.sharpness.variant))
  res = {}
  for name in ("good", "bad"):
    # The bad minimum's density figure overlays the good one's spectrum (computed first).
    c.compare = (dirs["good"],) if name == "bad" else ()
    res[name] = sharpness_job.compute(c, dirs[name])
  out = _sharpness_numbers(res)
  figs = []
  for name in ("good", "bad"):
    sub = os.path.join(dirs[name], c.out_subdir)
    figs += [common.rel(workdir, os.path.join(sub, f)) for f in res[name].get("figures", [])]
  out["figures"] = [f for f in figs if os.path.exists(os.path.join(workdir, f))]
  return out
