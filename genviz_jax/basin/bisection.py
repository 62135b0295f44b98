"""The root finder of basin radii: geometric bracketing, then bisection, many directions at once."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp


def bracket_and_bisect(metric_at: Callable[[jax.Array], jax.Array], num: int, *,
                       is_crossed: Callable[[jax.Array], jax.Array], r_init: float, r_max: float,
                       rtol: float, max_iter: int, dtype=jnp.float32) -> dict[str, jax.Array]:
  """Smallest crossing radius of `num` directions at once, inside one lax.while_loop (traceable).

  Bracketing r_init, 2·r_init, ... (the last step at r_max) finds the first evaluated radius past
  the threshold (hi) and the one before it (lo; 0 at first); bisection then halves [lo, hi] until
  hi - lo <= rtol·hi, and hi is returned: a radius evaluated past the threshold, within rtol of a
  crossing. A metric that crosses and comes back between two bracketing radii (non-monotone) is
  resolved only at the bracketing spacing. All directions step in lockstep (one batched
  evaluation per iteration), so a chunk costs the evaluations of its slowest direction:
  about |log2(r*/r_init)| + log2(1/rtol) + 2.

  Args:
    metric_at: r (num,) -> metric (num,): the metric of point j at radius r[j]. Called once per
      iteration with every direction (finished ones too: shapes stay static; their state is frozen).
    is_crossed: metric (num,) -> bool (num,): past the threshold (NaN must count as crossed).
    r_init, r_max: first bracketing radius and the largest radius evaluated (> 0, r_init <= r_max).
    rtol: stop a direction when (hi - lo) <= rtol·hi, or when float resolution stops bisection.
    max_iter: hard cap on iterations (a direction not finished then has converged=False).

  Returns dict of (num,) arrays: radius (smallest evaluated radius past the threshold; r_max when
  censored), censored (bool: not crossed up to r_max), converged (bool), value (metric at radius),
  num_evals (int32: evaluations this direction needed).
  """
  r_init = jnp.asarray(r_init, dtype)
  r_max = jnp.asarray(r_max, dtype)
  zeros = jnp.zeros((num,), dtype)
  # phase: 0 bracketing, 1 bisecting, 2 done.
  state = dict(it=jnp.int32(0), r=jnp.full((num,), jnp.minimum(r_init, r_max), dtype), lo=zeros,
               hi=jnp.full((num,), r_max, dtype), phase=jnp.zeros((num,), jnp.int32),
               censored=jnp.zeros((num,), bool), value=jnp.full((num,), jnp.nan, dtype),
               num_evals=jnp.zeros((num,), jnp.int32))

  def cond(s):
    return jnp.logical_and(s["it"] < max_iter, jnp.any(s["phase"] < 2))

  def body(s):
    r, lo, hi, phase = s["r"], s["lo"], s["hi"], s["phase"]
    v = metric_at(r).astype(dtype)
    crossed = is_crossed(v)
    active = phase < 2
    bracketing = phase == 0
    # Bracketing: a crossing fixes hi; no crossing moves lo up and doubles r (last step at r_max).
    at_max = r >= r_max
    censor_now = bracketing & ~crossed & at_max
    new_hi = jnp.where(active & crossed, r, hi)
    new_lo = jnp.where(active & ~crossed, r, lo)
    new_phase = jnp.where(bracketing & crossed, 1, phase)
    new_phase = jnp.where(censor_now, 2, new_phase)
    bisecting = new_phase == 1
    mid = 0.5 * (new_lo + new_hi)
    converged = (new_hi - new_lo <= rtol * new_hi) | (mid <= new_lo) | (mid >= new_hi)
    new_phase = jnp.where(bisecting & converged, 2, new_phase)
    next_r = jnp.where(new_phase == 0, jnp.minimum(2 * r, r_max), mid)
    next_r = jnp.where(new_phase == 2, r, next_r)
    value = jnp.where(active & crossed, v, s["value"])
    value = jnp.where(censor_now, v, value)
    return dict(it=s["it"] + 1, r=next_r, lo=new_lo, hi=new_hi, phase=new_phase,
                censored=s["censored"] | censor_now, value=value,
                num_evals=s["num_evals"] + active.astype(jnp.int32))

  s = jax.lax.while_loop(cond, body, state)
  return dict(radius=s["hi"], censored=s["censored"], converged=s["phase"] == 2, value=s["value"],
              num_evals=s["num_evals"])
