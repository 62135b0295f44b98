"""Basin radius along many random directions, and the basin volume it implies.

Radius (Huang et al. 2019): along direction d_k, the smallest r > 0 at which the chosen metric of
θ* + r·d_k crosses a threshold τ (train loss above τ, or train accuracy below τ). All directions of a
chunk are solved together inside one `lax.while_loop`: geometric bracketing (r_init, 2·r_init, ...,
r_max) and then bisection, each direction with its own convergence mask. The radius returned is the
smallest radius actually EVALUATED past the threshold (the bracket's upper end), so
r* <= radius <= r*·(1 + rtol) for a metric that crosses once. Directions still inside at r_max are
censored: flagged, counted, reported with radius r_max, never dropped.

Volume of a star-convex basin with radial function r(u), u uniform on the unit sphere of the n
perturbed coordinates (DESIGN §2):

  Vol = V_ball(n) · E_u[r(u)^n],    log Vol = log V_ball(n) + logmeanexp_k(n·log r_k),

in float64 numpy with gammaln, so n = 10^7 and more never overflows.

Measures. Only directions uniform on the sphere give a Lebesgue volume in parameter space: isotropic
Gaussian directions (norm="none"), with radii converted to Euclidean length r·||d_k||; that number is
in the "isotropic" measure. Filter- (or layer-) normalized directions are not uniform on the sphere;
their radii are coefficients in units of the normalized direction, and the "volume" computed from them
(V_ball(n)·mean(r^n)) is in "filter-normalized" coordinates: comparable between minima of one
architecture, not a parameter-space volume. Every result says which.

Importance sampling (Scherlis & Belrose 2025, EleutherAI basin-volume). Draw g ~ N(0, I_n), set
d = P g with P diagonal, positive, det P = 1 (e.g. from Adam's second moment), v = d / ||d||. The
density of v on the sphere with respect to the uniform one is the angular central Gaussian with
covariance P²:  p(v) = det(P)^{-1} · ||P^{-1} v||^{-n} = ||P^{-1} v||^{-n}.  Hence
  E_unif[r(u)^n] = E_p[r(v)^n / p(v)] = E_p[r(v)^n · ||P^{-1} v||^n],
and with P^{-1} v = g / ||P g||, writing z = g / ||g|| (uniform on the sphere):
  log weight_k = n·log r_k(Euclidean) + n·log||g_k|| - n·log||P g_k||
              = n·log r_k - n·log||P z_k||,
the correction -n·log|P z| of basin-volume. `radii` records ||g_k|| and ||P g_k|| per direction so
`Radii.volume()` applies it exactly.

References: Huang et al., arXiv 1906.03291; Li et al., arXiv 1712.09913; Scherlis & Belrose,
arXiv 2501.18812.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

PyTree = Any

MEASURES = ("isotropic", "filter-normalized", "layer-normalized", "given-directions")


# ----------------------------------------------------------------------------- direction specs


@dataclasses.dataclass(frozen=True)
class RandomDirections:
  """Directions generated on the fly: direction k = directions.random_direction(key, params, k, ...).

  Only one chunk of directions is ever held in memory, so `num` may be 10^6 or more. With
  `preconditioner` (a pytree like params, positive, Σ log P = 0 over the perturbed coordinates; see
  `diagonal_preconditioner`) direction k is P ⊙ g_k with g_k the un-normalized Gaussian
  (norm must be "none"), and volumes get the exact importance weight (module docstring).
  """
  key: jax.Array
  num: int
  norm: str = "filter"
  ignore_1d: bool = True
  preconditioner: PyTree | None = None


def diagonal_preconditioner(second_moment: PyTree, params: PyTree, *, ignore_1d: bool = True,
                            eps: float = 1e-12, power: float = 0.5) -> PyTree:
  """P ∝ (v + eps)^(-power) over the perturbed coordinates, scaled to det P = 1 (Σ log P = 0).

  `second_moment` is e.g. Adam's ν (same tree as params). Directions of high curvature (large ν)
  get short proposal steps, as in Adam. Ignored 1-D leaves get P = 1 (their direction is zero).
  Returns a pytree like params (float32).
  """
  _check_same_tree(second_moment, params, "second_moment")
  mask = _perturbed_mask(params, ignore_1d)
  logs = jax.tree.map(lambda v: -power * np.log(np.asarray(v, np.float64) + eps), second_moment)
  total = sum(float(np.sum(l)) for l, m in zip(jax.tree.leaves(logs), mask) if m)
  n = sum(int(np.size(l)) for l, m in zip(jax.tree.leaves(params), mask) if m)
  if n == 0:
    raise ValueError("params has no perturbed coordinates (all leaves are 1-D and ignore_1d=True)")
  mean = total / n
  leaves = [np.exp(l - mean).astype(np.float32) if m else np.ones(np.shape(l), np.float32)
            for l, m in zip(jax.tree.leaves(logs), mask)]
  return jax.tree.unflatten(jax.tree.structure(params), leaves)


def _perturbed_mask(params: PyTree, ignore_1d: bool) -> list[bool]:
  return [not (ignore_1d and np.ndim(l) <= 1) for l in jax.tree.leaves(params)]


def _check_same_tree(tree: PyTree, params: PyTree, name: str, stacked: bool = False) -> int | None:
  """ValueError naming the first differing path unless `tree` is like params (leading K if
  stacked); returns K for a stack."""
  from genviz_jax import directions as directions_lib
  directions_lib.check_same_tree(tree, params, leading=1 if stacked else 0, what=name)
  if not stacked:
    return None
  sizes = {np.shape(x)[0] for x in jax.tree.leaves(tree)}
  if len(sizes) != 1:
    raise ValueError(f"{name} leaves have different numbers of directions {sorted(sizes)}")
  return sizes.pop()


def _check_preconditioner(precond: PyTree, params: PyTree, ignore_1d: bool) -> None:
  """P must be positive and finite, with det P = 1 over the perturbed coordinates (the weight
  -n·log|Pz| assumes it)."""
  _check_same_tree(precond, params, "preconditioner")
  total, n = 0.0, 0
  for x, m in zip(jax.tree.leaves(precond), _perturbed_mask(params, ignore_1d)):
    a = np.asarray(x, np.float64)
    if not np.all(np.isfinite(a) & (a > 0)):
      raise ValueError("preconditioner has a non-positive or non-finite entry; P must be > 0")
    if m:
      total += float(np.sum(np.log(a)))
      n += a.size
  if n and abs(total / n) > 1e-4:
    raise ValueError(f"preconditioner has mean log P = {total / n:.3g} over the perturbed "
                     "coordinates; det P must be 1 (use diagonal_preconditioner)")


# ----------------------------------------------------------------------------- the root finder


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


# ----------------------------------------------------------------------------- volume estimators


@dataclasses.dataclass(frozen=True)
class VolumeEstimate:
  """log V with its statistical quality. Natural logs unless the name says log10.

  log_volume: log V_ball(n) + logmeanexp(n·log r_k + log w_k).
  ci: (low, high) bootstrap percentile interval of log_volume (resampling directions, or pairs of
    ±d rows for two-sided radii). Unreliable when effective_sample_size is small: the mean is
    then one sample's value, and the interval is too narrow.
  effective_sample_size: (Σw)²/Σw² of the per-sample weights w = r^n (× importance weight).
  max_share: the largest sample's share of Σw (1 = one direction decides the estimate).
  num_censored: samples that never crossed (their radius is r_max): log_volume is then a lower bound.
  measure: "isotropic" (Lebesgue volume in the perturbed parameter subspace), "filter-normalized"
    or "layer-normalized" (coordinates in units of normalized directions), "given-directions".
  """
  log_volume: float
  ci: tuple[float, float]
  effective_sample_size: float
  max_share: float
  num_samples: int
  num_censored: int
  dim: int
  measure: str
  log_ball: float
  confidence: float

  @property
  def log10_volume(self) -> float:
    return self.log_volume / math.log(10)

  @property
  def log10_ci(self) -> tuple[float, float]:
    return (self.ci[0] / math.log(10), self.ci[1] / math.log(10))

  def to_json(self) -> dict:
    return {"log10_volume": self.log10_volume, "log10_volume_ci": list(self.log10_ci),
            "log_volume": self.log_volume, "log_volume_ci": list(self.ci),
            "log10_ball_volume": self.log_ball / math.log(10),
            "effective_sample_size": self.effective_sample_size, "max_share": self.max_share,
            "num_samples": self.num_samples, "num_censored": self.num_censored, "dim": self.dim,
            "measure": self.measure, "confidence": self.confidence,
            "lower_bound": self.num_censored > 0}


def log_ball_volume(dim: int) -> float:
  """log V_ball(n) = (n/2)·log π - log Γ(n/2 + 1), float64, any n."""
  return 0.5 * dim * math.log(math.pi) - float(special.gammaln(0.5 * dim + 1.0))


def _logsumexp(x: np.ndarray, axis=None) -> np.ndarray:
  return special.logsumexp(x, axis=axis)


def log_volume(radii: Any, dim: int, *, log_weights: Any | None = None, censored: Any | None = None,
               measure: str = "isotropic", num_bootstrap: int = 1000, confidence: float = 0.95,
               seed: int = 0) -> VolumeEstimate:
  """Monte Carlo log-volume of a star-convex basin from its radii along random directions.

  Args:
    radii: (K,) radii > 0 along directions uniform on the sphere of the `dim` perturbed coordinates
      (in the units of `measure`), or (K, 2) radii along ±d (rows resampled together).
    dim: n, the number of perturbed coordinates (any positive integer; 10^7 is fine).
    log_weights: optional importance log-weights, same shape as radii (e.g. -n·log||P z_k||).
    censored: optional bool mask, same shape: radii that never crossed (counted, kept).
    measure: one of MEASURES; recorded in the result, not used in the arithmetic.
    num_bootstrap: bootstrap resamples for the interval (0: the interval is (nan, nan)).
    confidence: two-sided level of the percentile interval, in (0, 1).
    seed: bootstrap seed (numpy).

  Returns a VolumeEstimate (float64 arithmetic throughout).
  """
  r = np.asarray(radii, np.float64)
  if r.ndim not in (1, 2) or (r.ndim == 2 and r.shape[1] != 2):
    raise ValueError(f"radii has shape {r.shape}; expected (K,) or (K, 2)")
  if r.shape[0] <= 0:
    raise ValueError(f"radii has K={r.shape[0]} samples; need K >= 1")
  if not np.all(np.isfinite(r)) or np.any(r <= 0):
    bad = r[~(np.isfinite(r) & (r > 0))].ravel()[0]
    raise ValueError(f"radii contains {bad!r}; every radius must be finite and > 0")
  if isinstance(dim, bool) or not float(dim).is_integer() or dim <= 0:
    raise ValueError(f"dim={dim!r} must be a positive integer")
  dim = int(dim)
  if measure not in MEASURES:
    raise ValueError(f"measure={measure!r}; allowed: {', '.join(MEASURES)}")
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence={confidence!r} must be in (0, 1)")
  if isinstance(num_bootstrap, bool) or int(num_bootstrap) != num_bootstrap or num_bootstrap < 0:
    raise ValueError(f"num_bootstrap={num_bootstrap!r} must be an integer >= 0")
  lw = dim * np.log(r)
  if log_weights is not None:
    w = np.asarray(log_weights, np.float64)
    if w.shape != r.shape:
      raise ValueError(f"log_weights has shape {w.shape}; radii has {r.shape}")
    if not np.all(np.isfinite(w)):
      raise ValueError("log_weights contains a non-finite value")
    lw = lw + w
  num_cens = 0
  if censored is not None:
    c = np.asarray(censored, bool)
    if c.shape != r.shape:
      raise ValueError(f"censored has shape {c.shape}; radii has {r.shape}")
    num_cens = int(c.sum())
  flat = lw.ravel()
  lse = float(_logsumexp(flat))
  log_mean = lse - math.log(flat.size)
  ess = float(math.exp(2 * lse - float(_logsumexp(2 * flat))))
  max_share = float(math.exp(float(flat.max()) - lse))
  log_ball = log_ball_volume(dim)
  ci = (float("nan"), float("nan"))
  if num_bootstrap > 0:
    ci = _bootstrap_ci(lw, int(num_bootstrap), confidence, seed)
    ci = (log_ball + ci[0], log_ball + ci[1])
  return VolumeEstimate(log_volume=log_ball + log_mean, ci=ci, effective_sample_size=ess,
                        max_share=max_share, num_samples=int(flat.size), num_censored=num_cens,
                        dim=dim, measure=measure, log_ball=log_ball, confidence=float(confidence))


def _bootstrap_ci(lw: np.ndarray, num: int, confidence: float, seed: int) -> tuple[float, float]:
  """Percentile interval of logmeanexp over rows of lw (K,) or (K, 2), resampled with replacement."""
  rng = np.random.default_rng(seed)
  rows = lw.reshape(lw.shape[0], -1)
  k = rows.shape[0]
  # Row-wise logsumexp once, so a resample is a logsumexp over K numbers; chunks bound memory.
  row_lse = _logsumexp(rows, axis=1)
  per = rows.shape[1]
  out = np.empty(num)
  chunk = max(1, min(num, 2 ** 24 // max(k, 1)))
  for s in range(0, num, chunk):
    idx = rng.integers(0, k, size=(min(chunk, num - s), k))
    out[s:s + idx.shape[0]] = _logsumexp(row_lse[idx], axis=1) - math.log(k * per)
  a = (1.0 - confidence) / 2
  lo, hi = np.quantile(out, [a, 1 - a])
  return float(lo), float(hi)


# ----------------------------------------------------------------------------- radii


@dataclasses.dataclass(frozen=True)
class Radii:
  """Basin radii of K directions (numpy). Leading axis K; a trailing axis of 2 (+d, -d) if two-sided.

  radius: coefficient r_k along d_k (θ* + r_k·d_k is the first evaluated point past the threshold),
    in units of the direction (for filter-normalized directions: of ||θ||, filter by filter); r_max
    where censored.
  censored: never crossed up to r_max. converged: bracket narrowed to rtol (False: max_iter hit).
  value: the metric at `radius`. num_evals: evaluations each direction used.
  direction_norm: (K,) ||d_k|| over all coordinates (Euclidean radius = radius·direction_norm).
  base_norm: (K,) ||g_k|| of the Gaussian before preconditioning, or None.
  dim: n, perturbed coordinates. measure: the measure `volume()` reports in (module docstring).
  threshold: absolute threshold used; centre_value: the metric at θ*.
  """
  radius: np.ndarray
  censored: np.ndarray
  converged: np.ndarray
  value: np.ndarray
  num_evals: np.ndarray
  direction_norm: np.ndarray
  base_norm: np.ndarray | None
  dim: int
  measure: str
  metric: str
  crossing: str
  threshold: float
  centre_value: float
  rtol: float
  r_max: float

  @property
  def num_directions(self) -> int:
    return int(self.radius.shape[0])

  @property
  def num_censored(self) -> int:
    return int(np.sum(self.censored))

  def euclidean(self) -> np.ndarray:
    """Radii in parameter-space length: radius · ||d_k||, same shape as radius (float64)."""
    norm = np.asarray(self.direction_norm, np.float64)
    return np.asarray(self.radius, np.float64) * (norm[:, None] if self.radius.ndim == 2 else norm)

  def volume(self, **kwargs) -> VolumeEstimate:
    """log_volume in this result's measure (isotropic: Euclidean radii and importance weights).

    Keyword arguments go to `log_volume` (num_bootstrap, confidence, seed).
    """
    log_w = None
    if self.measure == "isotropic":
      r = self.euclidean()
      if self.base_norm is not None:
        lw = -self.dim * (np.log(np.asarray(self.direction_norm, np.float64))
                          - np.log(np.asarray(self.base_norm, np.float64)))
        log_w = np.broadcast_to(lw[:, None] if r.ndim == 2 else lw, r.shape)
    else:
      r = np.asarray(self.radius, np.float64)
    if np.any(r <= 0):
      raise ValueError("a radius is 0 (a zero direction?); volumes need every radius > 0")
    return log_volume(r, self.dim, log_weights=log_w, censored=self.censored, measure=self.measure,
                      **kwargs)

  def arrays(self) -> dict[str, np.ndarray]:
    out = {k: getattr(self, k) for k in ("radius", "censored", "converged", "value", "num_evals",
                                         "direction_norm")}
    if self.base_norm is not None:
      out["base_norm"] = self.base_norm
    return out


def _as_metric_fn(loss_fn):
  def fn(*args):
    out = loss_fn(*args)
    return dict(out) if isinstance(out, Mapping) else {"loss": out}
  return fn


def _check_positive(name: str, value, allow_inf: bool = False) -> float:
  try:
    v = float(value)
  except (TypeError, ValueError):
    raise ValueError(f"{name}={value!r} must be a number > 0") from None
  if not (v > 0) or (math.isinf(v) and not allow_inf):
    raise ValueError(f"{name}={value!r} must be a finite number > 0")
  return v


def _check_count(name: str, value) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
    raise ValueError(f"{name}={value!r} must be a positive integer")
  return int(value)


def centre_metrics(loss_fn, params: PyTree, data: PyTree | None = None) -> dict[str, float]:
  """The metrics at θ* (floats). Evaluated on all of `data` at once."""
  fn = _as_metric_fn(loss_fn)
  out = jax.jit(fn)(params, data) if data is not None else jax.jit(fn)(params)
  return {k: float(v) for k, v in out.items()}


def _resolve_threshold(centre: Mapping[str, float], metric: str, threshold, crossing,
                       relative: bool) -> tuple[float, str]:
  if metric not in centre:
    raise ValueError(f"metric={metric!r} is not returned by loss_fn; it returns "
                     f"{', '.join(sorted(centre))}")
  if crossing is None:
    crossing = "below" if "acc" in metric else "above"
  if crossing not in ("above", "below"):
    raise ValueError(f"crossing={crossing!r}; allowed: above, below")
  try:
    tau = float(threshold)
  except (TypeError, ValueError):
    raise ValueError(f"threshold={threshold!r} must be a finite number") from None
  if not math.isfinite(tau):
    raise ValueError(f"threshold={threshold!r} must be a finite number")
  c = centre[metric]
  if not math.isfinite(c):
    raise ValueError(f"{metric} at the centre is {c}; the centre must have finite metrics")
  if relative:
    if tau <= 0:
      raise ValueError(f"threshold={threshold!r} relative to the centre must be > 0")
    tau = c + tau if crossing == "above" else c - tau
  crossed = c > tau if crossing == "above" else c < tau
  if crossed or c == tau:
    raise ValueError(f"threshold {metric} {'>' if crossing == 'above' else '<'} {tau:g} is already "
                     f"crossed at the centre ({metric}={c:g}); choose a threshold the minimum is "
                     "inside of")
  return tau, crossing


def radii(loss_fn, params: PyTree, directions, *, threshold: float, data: PyTree | None = None,
          metric: str = "loss", crossing: str | None = None, relative: bool = False,
          r_init: float = 0.125, r_max: float = 64.0, rtol: float = 1e-4,
          max_iter: int | None = None, two_sided: bool = False, chunk_size: int = 512,
          point_batch: int = 8, data_batch: int | None = None, cache_directions: bool | None = None,
          mesh=None, store: "ChunkStore | None" = None,
          on_chunk: Callable[[int, int, dict], None] | None = None) -> Radii:
  """Basin radius of θ* = params along K directions (module docstring).

  Args:
    loss_fn: `loss_fn(params, batch)` (or `loss_fn(params)` when data is None) returning a scalar
      batch-mean loss or a dict of batch-mean metrics.
    params: θ*, a pytree of float arrays.
    directions: a stacked pytree like params with leaves (K, *leaf.shape), or `RandomDirections`
      (generated chunk by chunk: memory for one chunk only).
    threshold: τ. On the metric's absolute value; with relative=True, on its change from the
      centre (loss above centre + τ, accuracy below centre - τ).
    data: the batch the metric is computed on (all of it: exact means), e.g. the train set.
    metric: which metric of loss_fn's dict ("loss" for a scalar loss_fn).
    crossing: "above" or "below"; default "below" for metrics whose name contains "acc",
      else "above". NaN/inf metrics count as crossed.
    r_init, r_max: first bracketing radius and the largest radius tried, in units of the direction.
    rtol: relative tolerance: r* <= radius <= r*·(1 + rtol) for a metric that crosses once.
      (In high dimension this bounds log-volume's bias by n·log(1 + rtol) nats.)
    max_iter: iteration cap per chunk; default covers bracketing plus bisection to rtol plus 30.
    two_sided: also the radius along -d_k (radius gets a trailing axis (+, -)).
    chunk_size: directions per compiled call (per device when sharded over a mesh).
    point_batch, data_batch: the engine's chunking (evaluate.point_metrics).
    cache_directions: build a chunk's directions once per chunk (chunk·|θ| floats) rather than in
      every bisection step; default when that is under 256 MB.
    mesh: a jax.sharding.Mesh: chunks are sharded over its devices (points axis).
    store: a ChunkStore: finished chunks are saved and found again (resumable sweeps).
    on_chunk: called as on_chunk(done, K, arrays) after every chunk (progress); arrays: the
      chunk's results (num_evals counts the points it evaluated; a chunk found in `store`
      comes with arrays["resumed"] = True).

  Returns:
    Radii (numpy).

  Raises:
    ValueError: trees unlike params, K <= 0, r_max <= 0, r_init outside (0, r_max], rtol outside
      (0, 1), a threshold the centre already crosses, non-finite metrics at the centre.
  """
  r_max = _check_positive("r_max", r_max)
  r_init = _check_positive("r_init", r_init)
  if r_init > r_max:
    raise ValueError(f"r_init={r_init!r} is larger than r_max={r_max!r}")
  if not 0 < float(rtol) < 1:
    raise ValueError(f"rtol={rtol!r} must be in (0, 1)")
  chunk_size = _check_count("chunk_size", chunk_size)
  point_batch = _check_count("point_batch", point_batch)
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
      raise ValueError(f"params leaf {jax.tree_util.keystr(path)} has dtype "
                       f"{jnp.result_type(leaf)}; need floating point")

  if mesh is not None and _POINT_AXIS not in mesh.shape:
    raise ValueError(f"mesh axes {tuple(mesh.shape)} have no {_POINT_AXIS!r} axis; build it with "
                     "evaluate.point_mesh()")
  spec = directions if isinstance(directions, RandomDirections) else None
  if spec is not None:
    num = _check_count("num directions (K)", spec.num)
    from genviz_jax import directions as directions_lib
    directions_lib._check_norm(spec.norm)
    if spec.preconditioner is not None:
      if spec.norm != "none":
        raise ValueError(f"a preconditioner needs norm='none' (got norm={spec.norm!r}): it "
                         "replaces the normalization")
      _check_preconditioner(spec.preconditioner, params, spec.ignore_1d)
    dim = directions_lib.num_perturbed(params, spec.ignore_1d, norm=spec.norm)
    measure = {"none": "isotropic", "filter": "filter-normalized",
               "layer": "layer-normalized"}[spec.norm]
    stacked = None
  else:
    leaves = jax.tree.leaves(directions)
    if not leaves:
      raise ValueError("directions has no arrays; pass a stacked pytree like params or "
                       "RandomDirections")
    k = _check_same_tree(directions, params, "directions", stacked=True)
    num = _check_count("num directions (K)", k)
    stacked = jax.tree.map(jnp.asarray, directions)
    dim = sum(int(np.count_nonzero(np.any(np.asarray(l) != 0, axis=0))) for l in leaves)
    measure = "given-directions"
  if dim == 0:
    raise ValueError("directions move no coordinate (n = 0): nothing to measure")

  centre = centre_metrics(loss_fn, params, data)
  bad = {k: v for k, v in centre.items() if not math.isfinite(v)}
  if bad:
    raise ValueError(f"non-finite metric at the centre: {bad}; the centre must be a finite minimum")
  tau, crossing = _resolve_threshold(centre, metric, threshold, crossing, relative)

  dtype = jnp.result_type(*jax.tree.leaves(params))
  if max_iter is None:
    max_iter = int(math.ceil(math.log2(r_max / r_init))) + 2 + \
        int(math.ceil(math.log2(1.0 / float(rtol)))) + 30
  param_count = sum(int(np.size(l)) for l in jax.tree.leaves(params))
  per_device = chunk_size
  if cache_directions is None:
    cache_directions = per_device * param_count * 4 <= 256 * 2 ** 20

  solve = _make_solver(loss_fn, metric, None if spec is None else (spec.norm, spec.ignore_1d),
                       two_sided=bool(two_sided), crossing=crossing,
                       r_init=r_init, r_max=r_max, rtol=float(rtol), max_iter=max_iter,
                       dtype=dtype, point_batch=point_batch, data_batch=data_batch,
                       cache=cache_directions, mesh=mesh)
  material = ((spec.key, spec.preconditioner) if spec is not None else None)
  n_dev = 1 if mesh is None else int(mesh.shape[_POINT_AXIS])
  step = chunk_size * n_dev
  tau_arr = jnp.asarray(tau, dtype)

  def run_chunk(idx):
    if spec is None:
      rows = np.minimum(idx, num - 1)
      dirs = jax.tree.map(lambda x: np.asarray(x)[rows], stacked)
      norms = np.sqrt(sum(np.sum(np.square(x.reshape(len(rows), -1).astype(np.float64)), axis=1)
                          for x in jax.tree.leaves(dirs))).astype(np.float32)
      extra = {"direction_norm": norms}
    elif cache_directions:
      gen = _direction_generator(spec.norm, spec.ignore_1d, mesh)
      dirs, norms, base = gen(idx, params, material)
      extra = {"direction_norm": norms}
      if spec.preconditioner is not None:
        extra["base_norm"] = base
    else:
      dirs, extra = None, {}
    out = solve(idx, dirs, params, data, tau_arr, material)
    out.update(extra)
    return out

  if store is not None:
    store.bind(_fingerprint(
        params=params, data=data, directions=material if spec is not None else stacked, num=num,
        spec=None if spec is None else dict(norm=spec.norm, ignore_1d=spec.ignore_1d),
        threshold=tau, metric=metric, crossing=crossing, r_init=r_init, r_max=r_max,
        rtol=float(rtol), max_iter=max_iter, two_sided=bool(two_sided), step=step,
        point_batch=point_batch, data_batch=data_batch))
  parts = []
  for start in range(0, num, step):
    got = store.get(start) if store is not None else None
    resumed = got is not None
    if got is None:
      idx = np.arange(start, start + step, dtype=np.int32)
      got = _to_host(run_chunk(idx))
      if store is not None:
        store.put(start, got)
    parts.append(got)
    if on_chunk is not None:
      on_chunk(min(start + step, num), num, {**got, "resumed": resumed})
  res = {k: np.concatenate([p[k] for p in parts])[:num] for k in parts[0]}
  return Radii(radius=res["radius"], censored=res["censored"], converged=res["converged"],
               value=res["value"], num_evals=res["num_evals"],
               direction_norm=res["direction_norm"], base_norm=res.get("base_norm"), dim=int(dim),
               measure=measure, metric=metric, crossing=crossing, threshold=tau,
               centre_value=centre[metric], rtol=float(rtol), r_max=r_max)


_POINT_AXIS = "points"


def _to_host(tree):
  from genviz_jax import evaluate
  return {k: np.asarray(v) for k, v in evaluate.to_host(tree).items()}


def _one_direction(key, params, precond, k, norm, ignore_1d):
  """Direction k (pytree like params) and ||g_k|| of the Gaussian before preconditioning."""
  from genviz_jax import directions as directions_lib
  d = directions_lib.random_direction(key, params, k, norm=norm, ignore_1d=ignore_1d)
  if precond is None:
    return d, jnp.zeros((), jnp.float32)
  return jax.tree.map(lambda a, p: a * p.astype(a.dtype), d, precond), _tree_norm(d)


def _specs_like(tree, spec):
  return jax.tree.map(lambda _: spec, tree)


@functools.lru_cache(maxsize=None)
def _direction_generator(norm: str, ignore_1d: bool, mesh):
  """jit((indices (B,), params, (key, precond)) -> (dirs (B, ...), ||d|| (B,), ||g|| (B,))).

  Module-level and memoized: Gaussian generation is slow to compile on CPU (seconds per leaf
  under load), so every radii() call of a process with the same shapes reuses one executable.
  With a mesh each device generates its own share of the chunk.
  """
  from jax.sharding import PartitionSpec as P

  def gen(indices, params, material):
    key, precond = material
    dirs, base = jax.vmap(lambda k: _one_direction(key, params, precond, k, norm, ignore_1d))(
        indices)
    return dirs, jax.vmap(_tree_norm)(dirs), base

  if mesh is None:
    return jax.jit(gen)

  def sharded(indices, params, material):
    return jax.shard_map(lambda i: gen(i, params, material), mesh=mesh,
                         in_specs=P(_POINT_AXIS), out_specs=P(_POINT_AXIS),
                         check_vma=False)(indices)
  return jax.jit(sharded)


@functools.lru_cache(maxsize=32)
def _make_solver(loss_fn, metric, spec, *, two_sided, crossing, r_init, r_max, rtol, max_iter,
                 dtype, point_batch, data_batch, cache, mesh):
  """jit(f(indices (B,), dirs | None, params, data, tau, material) -> dict of (B,) or (B, 2)).

  dirs: the chunk's directions (leaves (B, ...)), or None to regenerate them from material =
  (key, preconditioner) in every evaluation (memory for one point group only). With a mesh the
  chunk is split over the mesh's "points" axis; each device runs its own while_loop.
  Memoized (loss_fn and the settings are the key): repeated sweeps reuse the executable.
  spec: (norm, ignore_1d) of generated directions, or None for given ones.
  """
  from jax.sharding import PartitionSpec as P
  from genviz_jax import evaluate
  metric_fn = _as_metric_fn(loss_fn)

  def local(indices, dirs, params, data, tau, material):
    b = indices.shape[0]
    signs = jnp.concatenate([jnp.ones((b,), dtype), -jnp.ones((b,), dtype)]) if two_sided \
        else jnp.ones((b,), dtype)
    m = signs.shape[0]

    def delta_fn(ids, r):
      s = (signs * r)[ids]
      if dirs is not None:
        d = jax.tree.map(lambda x: x[ids % b], dirs)
      else:
        key, precond = material
        d, _ = jax.vmap(lambda k: _one_direction(key, params, precond, k, *spec))(
            indices[ids % b])
      return jax.tree.map(lambda x: x * s.astype(x.dtype).reshape((-1,) + (1,) * (x.ndim - 1)),
                          d)

    def metric_at(r):
      out = evaluate.point_metrics(metric_fn, params, lambda ids: delta_fn(ids, r),
                                   jnp.arange(m, dtype=jnp.int32), data, point_batch=point_batch,
                                   data_batch=data_batch)
      return out[metric]

    if crossing == "above":
      is_crossed = lambda v: ~(v <= tau)  # NaN counts as crossed
    else:
      is_crossed = lambda v: ~(v >= tau)
    res = bracket_and_bisect(metric_at, m, is_crossed=is_crossed, r_init=r_init, r_max=r_max,
                             rtol=rtol, max_iter=max_iter, dtype=dtype)
    if two_sided:
      res = {k: jnp.stack([v[:b], v[b:]], axis=1) for k, v in res.items()}
    if dirs is None:
      # One direction at a time: the norms must not need the whole chunk in memory either.
      key, precond = material
      def norms(k):
        d, g = _one_direction(key, params, precond, k, *spec)
        return _tree_norm(d), g
      res["direction_norm"], base = jax.lax.map(norms, indices)
      if precond is not None:
        res["base_norm"] = base
    return res

  if mesh is None:
    return jax.jit(local)

  def sharded(indices, dirs, params, data, tau, material):
    fn = lambda i, d: local(i, d, params, data, tau, material)
    return jax.shard_map(fn, mesh=mesh, in_specs=(P(_POINT_AXIS), _specs_like(dirs, P(_POINT_AXIS))),
                         out_specs=P(_POINT_AXIS), check_vma=False)(indices, dirs)
  return jax.jit(sharded)


def _tree_norm(tree: PyTree) -> jax.Array:
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


# ----------------------------------------------------------------------------- resumable sweeps


def _fingerprint(**fields) -> dict:
  """JSON-able identity of a sweep: arrays are replaced by a SHA-256 of their bytes."""
  def digest(tree):
    if tree is None:
      return None
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
      if isinstance(leaf, jax.Array) and jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
      a = np.ascontiguousarray(np.asarray(leaf))
      h.update(jax.tree_util.keystr(path).encode())
      h.update(str((a.dtype.str, a.shape)).encode())
      h.update(a.tobytes())
    return h.hexdigest()
  out = {}
  for k, v in fields.items():
    out[k] = digest(v) if k in ("params", "data", "directions") else v
  return out


class ChunkStore:
  """Finished chunks of a radius sweep in a directory: a sweep killed and rerun continues.

  Files: `sweep.json` (the sweep's fingerprint: parameters, centre, data and directions hashed)
  and `chunk_<start>.npz`, each written to a temporary name and renamed, so a kill never leaves a
  partial chunk. A directory holding a different sweep is refused (ValueError), never overwritten.
  """

  MANIFEST = "sweep.json"

  def __init__(self, path: str):
    self.path = path
    self._bound = False

  def bind(self, fingerprint: dict) -> None:
    manifest = os.path.join(self.path, self.MANIFEST)
    want = json.loads(json.dumps(fingerprint))  # normalize tuples/floats as they will be stored
    if os.path.exists(manifest):
      with open(manifest) as f:
        have = json.load(f)
      if have != want:
        diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
        raise ValueError(f"{self.path} holds chunks of a different sweep (differs in "
                         f"{', '.join(diff)}); use another directory")
    else:
      os.makedirs(self.path, exist_ok=True)
      tmp = f"{manifest}.tmp{os.getpid()}"
      with open(tmp, "w") as f:
        json.dump(want, f, indent=2, sort_keys=True)
      os.replace(tmp, manifest)
    self._bound = True

  def _file(self, start: int) -> str:
    return os.path.join(self.path, f"chunk_{start:012d}.npz")

  def get(self, start: int) -> dict[str, np.ndarray] | None:
    if not self._bound:
      raise RuntimeError("ChunkStore.get before bind")
    f = self._file(start)
    if not os.path.exists(f):
      return None
    with np.load(f) as z:
      return {k: z[k] for k in z.files}

  def put(self, start: int, arrays: Mapping[str, np.ndarray]) -> None:
    if not self._bound:
      raise RuntimeError("ChunkStore.put before bind")
    f = self._file(start)
    tmp = f"{f}.tmp{os.getpid()}.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, f)

  def num_chunks(self) -> int:
    if not os.path.isdir(self.path):
      return 0
    return sum(1 for n in os.listdir(self.path) if n.startswith("chunk_") and n.endswith(".npz")
               and ".tmp" not in n)
