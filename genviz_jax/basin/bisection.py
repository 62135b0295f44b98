"""The root finders of basin radii, many rays at once: geometric bracketing, then bisection
(bracket_and_bisect) or safeguarded interpolation (bracket_and_interpolate: Chandrupatla 1997's
inverse quadratic interpolation with bisection fallback, Brent 1973's step safeguard, in log r on
g = log((m - m(θ*)) / (τ - m(θ*)))). Both refine the same bracket to the same rtol and return the
smallest radius evaluated past the threshold.

Each method is a state machine over rays: `init` (per-ray arrays) and `update` (the state after
the metric at the proposed radii is known). Two drivers run it inside one lax.while_loop:
  lockstep  every ray of the batch steps together until the slowest is done (a batch costs its
            slowest ray's evaluations);
  refill    a fixed number of slots evaluate rays; a slot whose ray is done takes the next ray
            (a batch costs about its mean evaluations; measured on the swiss-roll MLP: mean 6.2,
            slowest 12 evaluations per ray with interpolation).
A ray's proposals depend only on its own metric values, so both drivers give the same radii
wherever the metric's values are the same.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp


class Config(NamedTuple):
  """What a method needs besides the metric: is_crossed(v) -> bool (NaN counts as crossed);
  score(v) -> g (interpolation only); first bracketing radius, largest radius, rtol, dtype."""
  is_crossed: Callable
  score: Callable | None
  r_init: float
  r_max: float
  rtol: float
  dtype: object = jnp.float32


def _radii(cfg: Config):
  return jnp.asarray(cfg.r_init, cfg.dtype), jnp.asarray(cfg.r_max, cfg.dtype)


def _bracket_step(s, v, crossed, cfg: Config):
  """The parts both methods share: which rays were active, found their bracket or were censored."""
  r_max = jnp.asarray(cfg.r_max, cfg.dtype)
  active = s["phase"] < 2
  bracketing = s["phase"] == 0
  censor_now = bracketing & ~crossed & (s["r"] >= r_max)
  new_phase = jnp.where(bracketing & crossed, 1, s["phase"])
  new_phase = jnp.where(censor_now, 2, new_phase)
  value = jnp.where(active & crossed, v, s["value"])
  value = jnp.where(censor_now, v, value)
  return active, bracketing, censor_now, new_phase, value


def _finish(s, new_lo, new_hi, new_phase, proposal, cfg: Config):
  """Converged rays stop (phase 2); the rest move to the next bracketing radius (2·r, the last
  step at r_max) or to proposal(midpoint) when refining."""
  next_bracket = jnp.minimum(2 * s["r"], jnp.asarray(cfg.r_max, cfg.dtype))
  mid = 0.5 * (new_lo + new_hi)
  converged = (new_hi - new_lo <= cfg.rtol * new_hi) | (mid <= new_lo) | (mid >= new_hi)
  new_phase = jnp.where((new_phase == 1) & converged, 2, new_phase)
  next_r = jnp.where(new_phase == 0, next_bracket, proposal(mid))
  return jnp.where(new_phase == 2, s["r"], next_r), new_phase


def result(s) -> dict[str, jax.Array]:
  """radius (smallest evaluated radius past the threshold; r_max when censored), censored,
  converged, value (metric at radius), num_evals."""
  return dict(radius=s["hi"], censored=s["censored"], converged=s["phase"] == 2,
              value=s["value"], num_evals=s["num_evals"])


# ---------------------------------------------------------------------------------------------
# Bisection.


def bisect_init(num: int, cfg: Config) -> dict:
  r_init, r_max = _radii(cfg)
  zeros = jnp.zeros((num,), cfg.dtype)
  # phase: 0 bracketing, 1 bisecting, 2 done.
  return dict(r=jnp.full((num,), jnp.minimum(r_init, r_max), cfg.dtype), lo=zeros,
              hi=jnp.full((num,), r_max, cfg.dtype), phase=jnp.zeros((num,), jnp.int32),
              censored=jnp.zeros((num,), bool), value=jnp.full((num,), jnp.nan, cfg.dtype),
              num_evals=jnp.zeros((num,), jnp.int32))


def bisect_update(s: dict, v: jax.Array, cfg: Config) -> dict:
  """Bracketing: a crossing fixes hi; no crossing moves lo up and doubles r (last step at r_max).
  Bisecting: the midpoint replaces hi (crossed) or lo."""
  v = v.astype(cfg.dtype)
  crossed = cfg.is_crossed(v)
  active, _, censor_now, new_phase, value = _bracket_step(s, v, crossed, cfg)
  new_hi = jnp.where(active & crossed, s["r"], s["hi"])
  new_lo = jnp.where(active & ~crossed, s["r"], s["lo"])
  next_r, new_phase = _finish(s, new_lo, new_hi, new_phase, lambda mid: mid, cfg)
  return dict(r=next_r, lo=new_lo, hi=new_hi, phase=new_phase,
              censored=s["censored"] | censor_now, value=value,
              num_evals=s["num_evals"] + active.astype(jnp.int32))


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


def interp_init(num: int, cfg: Config) -> dict:
  r_init, r_max = _radii(cfg)
  zeros = jnp.zeros((num,), cfg.dtype)
  nan = jnp.full((num,), jnp.nan, cfg.dtype)
  inf = jnp.full((num,), jnp.inf, cfg.dtype)
  # The centre is the first point: r = 0, g = -inf. phase: 0 bracketing, 1 refining, 2 done.
  return dict(r=jnp.full((num,), jnp.minimum(r_init, r_max), cfg.dtype), lo=zeros,
              hi=jnp.full((num,), r_max, cfg.dtype), glo=-inf, ghi=nan, xp=zeros, gp=-inf,
              xq=nan, gq=nan, xc=nan, gc=nan, step1=inf, step2=inf,
              phase=jnp.zeros((num,), jnp.int32), censored=jnp.zeros((num,), bool), value=nan,
              num_evals=jnp.zeros((num,), jnp.int32))


def interp_update(s: dict, v: jax.Array, cfg: Config) -> dict:
  """Bisection's bracketing; then every evaluated radius lies inside the current bracket and
  replaces lo (not crossed) or hi (crossed); the next radius is `_propose`'s."""
  v = v.astype(cfg.dtype)
  crossed = cfg.is_crossed(v)
  g = cfg.score(v).astype(cfg.dtype)
  r, lo, hi = s["r"], s["lo"], s["hi"]
  active, bracketing, censor_now, new_phase, value = _bracket_step(s, v, crossed, cfg)
  keep = lambda new, old: jnp.where(active, new, old)
  new_lo = keep(jnp.where(crossed, lo, r), lo)
  new_glo = keep(jnp.where(crossed, s["glo"], g), s["glo"])
  new_hi = keep(jnp.where(crossed, r, hi), hi)
  new_ghi = keep(jnp.where(crossed, g, s["ghi"]), s["ghi"])
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
  proposal = lambda mid: _propose(new_lo, new_hi, new_glo, new_ghi, (xp, gp), (xq, gq), (xc, gc),
                                  step2, cfg.rtol)
  next_r, new_phase = _finish(s, new_lo, new_hi, new_phase, proposal, cfg)
  return dict(r=next_r, lo=new_lo, hi=new_hi, glo=new_glo, ghi=new_ghi, xp=xp, gp=gp, xq=xq,
              gq=gq, xc=xc, gc=gc, step1=step1, step2=step2, phase=new_phase,
              censored=s["censored"] | censor_now, value=value,
              num_evals=s["num_evals"] + active.astype(jnp.int32))


METHODS = {"bisection": (bisect_init, bisect_update),
           "chandrupatla": (interp_init, interp_update)}


# ---------------------------------------------------------------------------------------------
# Drivers.


def lockstep(metric_at: Callable[[jax.Array], jax.Array], num: int, method: str, cfg: Config,
             max_iter: int) -> dict[str, jax.Array]:
  """All `num` rays step together: metric_at(r (num,)) -> (num,) once per iteration (finished
  rays too: shapes stay static; their state is frozen) until every ray is done or max_iter."""
  init, update = METHODS[method]

  def cond(c):
    it, s = c
    return jnp.logical_and(it < max_iter, jnp.any(s["phase"] < 2))

  def body(c):
    it, s = c
    return it + 1, update(s, metric_at(s["r"]), cfg)

  _, s = jax.lax.while_loop(cond, body, (jnp.int32(0), init(num, cfg)))
  return result(s)


def refill(metric_at: Callable[[jax.Array, jax.Array], jax.Array], num: int, slots: int,
           method: str, cfg: Config, max_iter: int) -> dict[str, jax.Array]:
  """Rays 0..num-1 through `slots` evaluation slots: metric_at(ray ids (S,), r (S,)) -> (S,) once
  per iteration; a slot whose ray is done (or used max_iter evaluations: converged False) stores
  its result and takes the next ray. Idle slots (no rays left) evaluate ray 0 and are ignored."""
  init, update = METHODS[method]
  slots = min(int(slots), int(num))
  fresh = init(slots, cfg)
  out = jax.tree.map(lambda x: jnp.zeros((num,), x.dtype), result(init(1, cfg)))
  ray = jnp.arange(slots, dtype=jnp.int32)

  def cond(c):
    return jnp.any(c[1] < num)

  def body(c):
    s, ray, nxt, out = c
    live = ray < num
    s = update(s, metric_at(jnp.where(live, ray, 0), s["r"]), cfg)
    done = live & ((s["phase"] == 2) | (s["num_evals"] >= max_iter))
    where = jnp.where(done, ray, num)  # num: dropped
    out = jax.tree.map(lambda o, x: o.at[where].set(x, mode="drop"), out, result(s))
    new_ray = nxt + jnp.cumsum(done.astype(jnp.int32)) - 1
    ray = jnp.where(done, jnp.where(new_ray < num, new_ray, num), ray)
    s = jax.tree.map(lambda a, f: jnp.where(done, f, a), s, fresh)
    return s, ray, nxt + jnp.sum(done.astype(jnp.int32)), out

  _, _, _, out = jax.lax.while_loop(cond, body, (fresh, ray, jnp.int32(slots), out))
  return out


def bracket_and_bisect(metric_at: Callable[[jax.Array], jax.Array], num: int, *,
                       is_crossed: Callable[[jax.Array], jax.Array], r_init: float, r_max: float,
                       rtol: float, max_iter: int, dtype=jnp.float32) -> dict[str, jax.Array]:
  """Smallest crossing radius of `num` directions at once, inside one lax.while_loop (traceable).

  Bracketing r_init, 2·r_init, ... (the last step at r_max) finds the first evaluated radius past
  the threshold (hi) and the one before it (lo; 0 at first); bisection then halves [lo, hi] until
  hi - lo <= rtol·hi, and hi is returned: a radius evaluated past the threshold, within rtol of a
  crossing. A metric that crosses and comes back between two bracketing radii (non-monotone) is
  resolved only at the bracketing spacing. All directions step in lockstep (`lockstep`), so a
  batch costs the evaluations of its slowest direction: about
  |log2(r*/r_init)| + log2(1/rtol) + 2.

  Args:
    metric_at: r (num,) -> metric (num,): the metric of point j at radius r[j].
    is_crossed: metric (num,) -> bool (num,): past the threshold (NaN must count as crossed).
    r_init, r_max: first bracketing radius and the largest radius evaluated (> 0, r_init <= r_max).
    rtol: stop a direction when (hi - lo) <= rtol·hi, or when float resolution stops bisection.
    max_iter: hard cap on iterations (a direction not finished then has converged=False).

  Returns dict of (num,) arrays: radius (smallest evaluated radius past the threshold; r_max when
  censored), censored (bool: not crossed up to r_max), converged (bool), value (metric at radius),
  num_evals (int32: evaluations this direction needed).
  """
  cfg = Config(is_crossed, None, r_init, r_max, rtol, dtype)
  return lockstep(metric_at, num, "bisection", cfg, max_iter)


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
  cfg = Config(is_crossed, score, r_init, r_max, rtol, dtype)
  return lockstep(metric_at, num, "chandrupatla", cfg, max_iter)
