"""The root finders of basin radii, many directions at once: geometric bracketing, then bisection
(bracket_and_bisect) or safeguarded interpolation (bracket_and_interpolate: Chandrupatla 1997's
inverse quadratic interpolation with bisection fallback, Brent 1973's step safeguard, in log r on
g = log((m - m(θ*)) / (τ - m(θ*)))). Both refine the same bracket to the same rtol and return the
smallest radius evaluated past the threshold."""

from __future__ import annotations

import functools
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


# ---------------------------------------------------------------------------------------------
# Interpolating refinement of the same bracket (method="chandrupatla").


def log_score(v, threshold, centre):
  """g = log((v - c) / (τ - c)): 0 at the threshold, >= 0 past it, -inf or NaN where v is on the
  far side of the centre value c (or NaN). Along a ray from a minimum the metric's change grows
  like a power of r (½ a r² near θ*), so g is close to linear in log r."""
  return jnp.log((v - centre) / (threshold - centre))


def _log_ratio(x, ref):
  """log(x / ref) for x, ref > 0, accurate when x is close to ref; -inf for x = 0."""
  return jnp.log1p((x - ref) / ref)


def _all_finite(*arrays):
  return functools.reduce(jnp.logical_and, [jnp.isfinite(a) for a in arrays])


def _inverse_quadratic(u_o, u_c, g_p, g_o, g_c):
  """u at g = 0 of the inverse quadratic u(g) through (0, g_p), (u_o, g_o), (u_c, g_c) (Lagrange
  form; the latest point p is the origin of u)."""
  return (u_o * g_p * g_c / ((g_o - g_p) * (g_o - g_c))
          + u_c * g_p * g_o / ((g_c - g_p) * (g_c - g_o)))


def _chandrupatla_ok(u_o, u_c, g_p, g_o, g_c):
  """Chandrupatla's (1997) test that the inverse quadratic through p, o, c is monotone on the
  bracket [p, o] (c lies beyond p): with ξ = (u_p - u_o)/(u_c - u_o), Φ = (g_p - g_o)/(g_c - g_o),
  Φ² < ξ and (1 - Φ)² < 1 - ξ."""
  xi = -u_o / (u_c - u_o)
  phi = (g_p - g_o) / (g_c - g_o)
  return (phi ** 2 < xi) & ((1 - phi) ** 2 < 1 - xi)


def _propose(lo, hi, glo, ghi, p, q, c, step2, rtol):
  """Next radius of a refining direction, strictly inside (lo, hi) (elementwise).

  p = (r, g) latest point (lo or hi), q = the point evaluated before it, c = Chandrupatla's third
  point (beyond p, or NaN); step2 = |step| before last. Interpolation in u = log(r / r_p), g:
    1. p, the other end o and c usable: inverse quadratic interpolation if Chandrupatla's test
       passes, else bisection (Chandrupatla 1997);
    2. otherwise the secant through p and q, else regula falsi on (lo, hi), else (the bracket
       starts at the centre, lo = 0) the quadratic-basin power law g = 2·log(r / hi) + g(hi);
    3. Brent's (1973) safeguard: an interpolated step not shorter than half the step before last
       bisects; an estimate outside (lo, hi) bisects;
    4. closing step: an estimate within W/2 of p, W = 0.98·rtol·r_p, is overshot to
       p ± min(W, max(2|e - p|, W/4)) towards the root, so that one evaluation can leave a point on
       each side of the root within rtol (one-sided convergence never shrinks the bracket).
  """
  (xp, gp), (xq, gq), (xc, gc) = p, q, c
  u_lo, u_hi = _log_ratio(lo, xp), _log_ratio(hi, xp)
  u_q = _log_ratio(xq, xp)
  # An estimate counts if finite and inside the bracket (rtol of slack: estimates at p itself).
  inside = lambda u: jnp.isfinite(u) & (u >= u_lo - rtol) & (u <= u_hi + rtol)
  at_lo = xp == lo
  xo, go = jnp.where(at_lo, hi, lo), jnp.where(at_lo, ghi, glo)
  u_o, u_c = _log_ratio(xo, xp), _log_ratio(xc, xp)
  # Three usable points decide between IQI and bisection (a repeated g, as on a step, bisects).
  three = _all_finite(u_o, u_c, gp, go, gc) & (go != gp)
  cand_iqi = _inverse_quadratic(u_o, u_c, gp, go, gc)
  use_iqi = three & (gc != gp) & (gc != go) & _chandrupatla_ok(u_o, u_c, gp, go, gc) & \
      inside(cand_iqi)
  cand_sec = gp * u_q / (gp - gq)
  use_sec = ~three & _all_finite(u_q, gp, gq) & (gq != gp) & inside(cand_sec)
  cand_rf = u_lo - glo * (u_hi - u_lo) / (ghi - glo)
  use_rf = ~three & ~use_sec & _all_finite(u_lo, u_hi, glo, ghi) & (ghi != glo) & inside(cand_rf)
  cand_pow = u_hi - 0.5 * ghi
  use_pow = ~three & ~use_sec & ~use_rf & (lo == 0) & jnp.isfinite(ghi) & inside(cand_pow)
  u = jnp.where(use_iqi, cand_iqi, jnp.where(use_sec, cand_sec,
                                             jnp.where(use_rf, cand_rf, cand_pow)))
  interp = use_iqi | use_sec | use_rf | use_pow
  e = xp * jnp.exp(jnp.where(interp, u, 0.0))
  d = jnp.abs(e - xp)
  mid = 0.5 * (lo + hi)
  x = jnp.where(interp & (d < 0.5 * step2) & (e > lo) & (e < hi), e, mid)
  window = 0.98 * rtol * xp
  towards = jnp.where(at_lo, 1.0, -1.0).astype(xp.dtype)
  overshoot = xp + towards * jnp.minimum(window, jnp.maximum(2.0 * d, 0.25 * window))
  x = jnp.where(interp & (d <= 0.5 * window), overshoot, x)
  return jnp.where((x > lo) & (x < hi), x, mid)


def bracket_and_interpolate(metric_at: Callable[[jax.Array], jax.Array], num: int, *,
                            is_crossed: Callable[[jax.Array], jax.Array],
                            score: Callable[[jax.Array], jax.Array], r_init: float, r_max: float,
                            rtol: float, max_iter: int, dtype=jnp.float32) -> dict[str, jax.Array]:
  """bracket_and_bisect's bracket, refined by safeguarded interpolation (traceable).

  Bracketing is bracket_and_bisect's (r_init, 2·r_init, ..., r_max), so both methods refine the
  same first bracket [lo, hi]. Refinement interpolates the root of g = score(metric) in log r
  (`_propose`: Chandrupatla's 1997 inverse quadratic interpolation with his bisection fallback,
  a secant or quadratic-basin first step while fewer than three points are usable, Brent's 1973
  step safeguard, and a closing step across the root). Every evaluated radius lies inside the
  current bracket and replaces lo (not crossed) or hi (crossed), so hi stays the smallest radius
  evaluated past the threshold; the stopping test is bisection's, hi - lo <= rtol·hi (or no float
  between them), and hi is returned: r* <= radius <= r*/(1 - rtol) for a metric crossing once in
  [lo, hi], as with bisection. With several crossings inside the first bracket either method
  may return any of them (bisection: the one its halving meets). NaN or unusable scores (metric
  beyond the centre value, NaN/inf) only make steps bisection steps.

  Args:
    metric_at, num, is_crossed, r_init, r_max, rtol, max_iter, dtype: as bracket_and_bisect.
    score: metric (num,) -> g (num,): increasing in the metric's distance past the centre, 0 at
      the threshold (`log_score`); non-finite where unusable.

  Returns: as bracket_and_bisect (num_evals counts this method's evaluations).
  """
  r_init = jnp.asarray(r_init, dtype)
  r_max = jnp.asarray(r_max, dtype)
  zeros = jnp.zeros((num,), dtype)
  nan = jnp.full((num,), jnp.nan, dtype)
  inf = jnp.full((num,), jnp.inf, dtype)
  # The centre is the first point: r = 0, g = -inf. phase: 0 bracketing, 1 refining, 2 done.
  state = dict(it=jnp.int32(0), r=jnp.full((num,), jnp.minimum(r_init, r_max), dtype), lo=zeros,
               hi=jnp.full((num,), r_max, dtype), glo=-inf, ghi=nan, xp=zeros, gp=-inf, xq=nan,
               gq=nan, xc=nan, gc=nan, step1=inf, step2=inf, phase=jnp.zeros((num,), jnp.int32),
               censored=jnp.zeros((num,), bool), value=nan, num_evals=jnp.zeros((num,), jnp.int32))

  def cond(s):
    return jnp.logical_and(s["it"] < max_iter, jnp.any(s["phase"] < 2))

  def body(s):
    r, lo, hi, phase = s["r"], s["lo"], s["hi"], s["phase"]
    v = metric_at(r).astype(dtype)
    crossed = is_crossed(v)
    g = score(v).astype(dtype)
    active = phase < 2
    bracketing = phase == 0
    censor_now = bracketing & ~crossed & (r >= r_max)
    keep = lambda new, old: jnp.where(active, new, old)
    new_lo = keep(jnp.where(crossed, lo, r), lo)
    new_glo = keep(jnp.where(crossed, s["glo"], g), s["glo"])
    new_hi = keep(jnp.where(crossed, r, hi), hi)
    new_ghi = keep(jnp.where(crossed, g, s["ghi"]), s["ghi"])
    new_phase = jnp.where(bracketing & crossed, 1, phase)
    new_phase = jnp.where(censor_now, 2, new_phase)
    found = bracketing & crossed
    # Chandrupatla's third point: the latest point when the new one falls on its side, else the
    # other end of the old bracket; none when the bracket was just found.
    p_was_hi = s["xp"] == hi
    same_side = crossed == p_was_hi
    xc = jnp.where(same_side, s["xp"], jnp.where(p_was_hi, lo, hi))
    gc = jnp.where(same_side, s["gp"], jnp.where(p_was_hi, s["glo"], s["ghi"]))
    xc = keep(jnp.where(found, jnp.nan, xc), s["xc"])
    gc = keep(jnp.where(found, jnp.nan, gc), s["gc"])
    xq, gq = keep(s["xp"], s["xq"]), keep(s["gp"], s["gq"])
    xp, gp = keep(r, s["xp"]), keep(g, s["gp"])
    # Steps of the refinement only: bracketing steps do not restrain the first interpolation.
    step2 = jnp.where(found, jnp.inf, keep(s["step1"], s["step2"]))
    step1 = jnp.where(found, jnp.inf, keep(jnp.abs(r - s["xp"]), s["step1"]))
    mid = 0.5 * (new_lo + new_hi)
    converged = (new_hi - new_lo <= rtol * new_hi) | (mid <= new_lo) | (mid >= new_hi)
    new_phase = jnp.where((new_phase == 1) & converged, 2, new_phase)
    proposal = _propose(new_lo, new_hi, new_glo, new_ghi, (xp, gp), (xq, gq), (xc, gc), step2,
                        rtol)
    next_r = jnp.where(new_phase == 0, jnp.minimum(2 * r, r_max), proposal)
    next_r = jnp.where(new_phase == 2, r, next_r)
    value = jnp.where(active & crossed, v, s["value"])
    value = jnp.where(censor_now, v, value)
    return dict(it=s["it"] + 1, r=next_r, lo=new_lo, hi=new_hi, glo=new_glo, ghi=new_ghi, xp=xp,
                gp=gp, xq=xq, gq=gq, xc=xc, gc=gc, step1=step1, step2=step2, phase=new_phase,
                censored=s["censored"] | censor_now, value=value,
                num_evals=s["num_evals"] + active.astype(jnp.int32))

  s = jax.lax.while_loop(cond, body, state)
  return dict(radius=s["hi"], censored=s["censored"], converged=s["phase"] == 2, value=s["value"],
              num_evals=s["num_evals"])
