"""Checks of a sharpness config (genviz_jax/configs/sharpness.py) before anything is computed.

Every check raises a one-line ValueError naming the bad key, its value and what is allowed.
"""

from __future__ import annotations

import os


def _int(name, v, lo, hi=None):
  if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
    allowed = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
    raise ValueError(f"{name}={v!r} must be {allowed}")
  return v


def _pos(name, v):
  if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < float("inf"):
    raise ValueError(f"{name}={v!r} must be a finite number > 0")
  return float(v)


def _check_hessian(h, num_params: int | None) -> None:
  _int("hessian.top_k", h.top_k, 1, num_params)
  if h.lanczos_steps and num_params is not None:  # after top_k has been checked against n
    _int("hessian.lanczos_steps", h.lanczos_steps, h.top_k, num_params)
  _int("hessian.trace_samples", h.trace_samples, 2)
  if not 0 < h.trace_confidence < 1:
    raise ValueError(f"hessian.trace_confidence={h.trace_confidence!r} must be in (0, 1)")
  _int("hessian.slq_runs", h.slq_runs, 1)
  _int("hessian.slq_steps", h.slq_steps, 1, num_params)


def _check_pacbayes(p) -> None:
  _pos("pacbayes.target", p.target)
  lo, hi = p.sigma_min, p.sigma_max
  _pos("pacbayes.sigma_min", lo)
  _pos("pacbayes.sigma_max", hi)
  if not lo < hi:
    raise ValueError(f"pacbayes sigma range [{lo!r}, {hi!r}] is empty; need 0 < sigma_min < "
                     "sigma_max")
  _int("pacbayes.num_bisection", p.num_bisection, 0)
  _int("pacbayes.num_samples", p.num_samples, 2)
  _int("pacbayes.point_batch", p.point_batch, 1)
  _pos("pacbayes.magnitude_eps", p.magnitude_eps)
  if p.mag_noise not in ("variance", "std"):
    raise ValueError(f"pacbayes.mag_noise={p.mag_noise!r} is not one of 'variance', 'std'")


def _check_eps_and_figures(e, f) -> None:
  if not e.epsilons:
    raise ValueError("eps_sharpness.epsilons=() is empty; give at least one ε > 0")
  for eps in e.epsilons:
    _pos("eps_sharpness.epsilons entry", eps)
  _int("eps_sharpness.num_steps", e.num_steps, 1)
  _int("eps_sharpness.random_starts", e.random_starts, 0)
  _int("figures.num_random", f.num_random, 1)
  _int("figures.num_alphas", f.num_alphas, 2)
  _pos("figures.alpha_max", f.alpha_max)
  _int("figures.anim_frames", f.anim_frames, 2)
  _pos("figures.anim_alpha_max", f.anim_alpha_max)
  _int("figures.anim_resolution", f.anim_resolution, 2)


def validate_config(c, num_params: int | None = None) -> None:
  """Raises ValueError (one line, naming the bad value) for a config the job cannot run.

  With `num_params` (the parameter count n), also checks top_k, lanczos_steps, slq_steps <= n.
  """
  sub = c.out_subdir
  if not isinstance(sub, str) or not sub or sub in (".", "..") or os.sep in sub or "/" in sub:
    raise ValueError(f"out_subdir={sub!r} must be a plain folder name inside the workdir")
  if c.split not in ("train", "test"):
    raise ValueError(f"split={c.split!r} is not one of 'train', 'test'")
  _int("step", c.step, -1)
  _int("data_batch", c.data_batch, 0)
  _check_hessian(c.hessian, num_params)
  _check_pacbayes(c.pacbayes)
  _check_eps_and_figures(c.eps_sharpness, c.figures)
  for other in c.compare:
    if not os.path.isfile(os.path.join(other, sub, "slq.npz")):
      raise ValueError(f"compare entry {other!r} has no {sub}/slq.npz; run experiments.sharpness "
                       "on it first")
