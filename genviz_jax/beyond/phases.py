"""The beyond job's phases: minima, connectivity, trajectory, skip (genviz_jax/configs/beyond.py).

Each phase is `fn(cfg, workdir) -> dict` (JSON-ready numbers and figure paths relative to the
workdir) and is a deterministic function of the config; trained runs live in WORKDIR/runs/ and
resume from their own checkpoints.
"""

from __future__ import annotations

import os
import shutil

import numpy as np

from genviz_jax import landscape
from genviz_jax.configs import digits_resnet as digits_resnet_cfg
from genviz_jax.configs import landscape as landscape_cfg
from genviz_jax.configs import swissroll as swissroll_cfg
from genviz_jax.jobs import connectivity as connectivity_job
from genviz_jax.jobs import landscape as landscape_job
from genviz_jax.jobs import train as train_job
from genviz_jax.jobs import trajectory as trajectory_job

SUMMARY_KEYS = ("train_accuracy", "test_accuracy", "train_loss", "test_loss", "steps",
                "wall_time_s", "num_params")
# name -> (swiss-roll variant, which seed: the job's or minima.other_seed)
MINIMA = {"good": ("clean", "seed"), "good_seed1": ("clean", "other_seed"),
          "bad": ("poisoned", "seed")}
PAIRS = {"good_good": ("good", "good_seed1"), "good_bad": ("good", "bad")}


def run_dir(workdir: str, name: str) -> str:
  return os.path.join(workdir, "runs", name)


def _figure(workdir: str, src: str, name: str) -> str:
  """Copies a job's figure into WORKDIR/figures/name; returns the path relative to workdir."""
  os.makedirs(os.path.join(workdir, "figures"), exist_ok=True)
  dst = os.path.join(workdir, "figures", name)
  shutil.copyfile(src, dst)
  return os.path.relpath(dst, workdir)


def _needs(workdir: str, names) -> None:
  for n in names:
    if not os.path.exists(os.path.join(run_dir(workdir, n), "summary.json")):
      raise ValueError(f"phase needs the {n!r} run of the 'minima' phase "
                       f"({run_dir(workdir, n)} has no summary.json); run the minima phase first")


def phase_minima(cfg, workdir: str) -> dict:
  """Two good swiss-roll minima (two seeds) and a bad one, each with parameter snapshots."""
  m, out = cfg.minima, {}
  for name, (variant, which) in MINIMA.items():
    steps = m.poisoned_steps if variant == "poisoned" else m.clean_steps
    seed = int(cfg.seed) if which == "seed" else int(m.other_seed)
    c = swissroll_cfg.scaled_config(variant, int(steps), seed=seed, snapshots=int(m.snapshots))
    c.plot = False
    summary = train_job.run(c, run_dir(workdir, name))
    out[name] = {"seed": seed, "variant": variant, **{k: summary[k] for k in SUMMARY_KEYS}}
  return out


def phase_connectivity(cfg, workdir: str) -> dict:
  """Curves good<->good (two seeds) and good<->bad: barriers, radii along the curve."""
  out = {}
  for pair, (a, b) in PAIRS.items():
    _needs(workdir, (a, b))
    outdir = os.path.join(workdir, "connectivity", pair)
    res = connectivity_job.run(cfg.connectivity, run_dir(workdir, a), run_dir(workdir, b), outdir)
    res["figure"] = _figure(workdir, os.path.join(outdir, "connectivity.png"),
                            f"connectivity_{pair}.png")
    out[pair] = res
  return out


def phase_trajectory(cfg, workdir: str) -> dict:
  """The good and the bad run on the PCA planes of their trajectories."""
  out = {}
  for name in ("good", "bad"):
    _needs(workdir, (name,))
    res = trajectory_job.run(cfg.trajectory, run_dir(workdir, name),
                             os.path.join(workdir, "trajectory", name))
    res["figure"] = _figure(workdir, res["figure"], f"trajectory_{name}.png")
    out[name] = res
  return out


def _skip_config(cfg, skip: bool):
  variant = ("" if skip else "noskip") + ("_quick" if cfg.skip.quick else "")
  variant = {"_quick": "quick"}.get(variant, variant)
  return digits_resnet_cfg.get_config(variant)


def _plane_config(cfg):
  c = landscape_cfg.get_config("")
  c.kinds, c.splits, c.seed = "plane", "train", int(cfg.skip.direction_seed)
  c.grid_points = int(cfg.skip.grid_points)
  c.grid_lo, c.grid_hi = -float(cfg.skip.range), float(cfg.skip.range)
  return c


def phase_skip(cfg, workdir: str) -> dict:
  """ResNets on digits with and without skip connections: 2-D landscapes and non-convexity."""
  out = {}
  for name, skip in (("with_skip", True), ("without_skip", False)):
    rd = run_dir(workdir, f"digits_resnet_{name}")
    summary = train_job.run(_skip_config(cfg, skip), rd)
    outdir = os.path.join(workdir, "skip", name)
    npz = landscape_job.run(_plane_config(cfg), rd, outdir=outdir)["plane"]
    with np.load(npz) as z:
      axis, loss = z["axis"], z["train/loss"]
    curv = landscape.surface_curvature(axis, axis, loss)
    out[name] = {**{k: summary[k] for k in SUMMARY_KEYS}, **curv,
                 "loss_range": [float(np.min(loss)), float(np.max(loss))],
                 "figures": [_figure(workdir, os.path.join(outdir, f"plane_{k}.png"),
                                     f"skip_{name}_{k}.png") for k in ("contour", "surface3d")]}
  return out


PHASE_FNS = {"minima": phase_minima, "connectivity": phase_connectivity,
             "trajectory": phase_trajectory, "skip": phase_skip}
