"""What the paper's phases share: output paths, figure saving, progress, small statistics."""

from __future__ import annotations

import os

import ml_collections
import numpy as np

from genviz_jax import progress
from genviz_jax import train as train_lib
from genviz_jax.jobs.phased import comma_list  # noqa: F401 - the phases' comma lists
from genviz_jax.configs import swissroll as swissroll_cfg


def progress_hook(what: str, total: int, unit: str = "steps"):
  """`fn(done, *_)` that logs `what done/total, rate, ETA` (genviz_jax.progress)."""
  p = progress.Progress(what, total, unit)
  return lambda done, *_: p.update(done)


def adam_tx(lr: float, boundaries=(), clip: float = 0.0):
  """The trainer's Adam with step decays x0.1 at `boundaries` and global-norm clipping `clip`."""
  c = train_lib.default_config()
  c.optimizer, c.learning_rate, c.lr_boundaries, c.grad_clip = "adam", lr, tuple(boundaries), clip
  return train_lib.make_optimizer(c)


def figure_path(workdir: str, name: str) -> str:
  os.makedirs(os.path.join(workdir, "figures"), exist_ok=True)
  return os.path.join(workdir, "figures", name)


def save(fig, path: str) -> str:
  import matplotlib.pyplot as plt
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def spearman(a, b) -> float:
  """Spearman's rank correlation over the finite pairs; NaN with < 3 pairs or a constant side."""
  from scipy import stats
  a, b = np.asarray(a, float), np.asarray(b, float)
  ok = np.isfinite(a) & np.isfinite(b)
  if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
    return float("nan")
  return float(stats.spearmanr(a[ok], b[ok]).statistic)


def rel(workdir: str, path: str) -> str:
  return os.path.relpath(path, workdir)


def swissroll_config(cfg, variant: str) -> ml_collections.ConfigDict:
  """The swiss-roll training config of `variant` with the paper config's step counts."""
  steps = cfg.decision.poisoned_steps if variant == "poisoned" else cfg.decision.clean_steps
  c = swissroll_cfg.scaled_config(variant, int(steps), seed=int(cfg.seed))
  c.plot = True
  return c


def minima(workdir: str) -> dict[str, str]:
  """The good and bad trained runs of the decision phase; ValueError if they are missing."""
  dirs = {n: os.path.join(workdir, "runs", n) for n in ("good", "bad")}
  for n, d in dirs.items():
    if not os.path.exists(os.path.join(d, "summary.json")):
      raise ValueError(f"phase needs the {n} minimum of the 'decision' phase ({d} has no "
                       "summary.json); run with the decision phase first")
  return dirs
