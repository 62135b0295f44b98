"""Prior mass of a basin under an isotropic Gaussian prior, from its radii along random directions.

The measure (Scherlis & Belrose 2025, "Estimating the probability of sampling a trained neural
network at random", arXiv 2501.18812, §3; peer code EleutherAI/basin-volume, src/tyche/volume.py):

  M = ∫_B N(θ; μ, σ² I_n) dθ,   B = {θ* + t·u : u ∈ S^{n-1}, 0 <= t < r(u)}  (star-shaped),

over the n perturbed coordinates (the others stay at θ*). Polar coordinates around θ*, with
c = μ - θ*, b(u) = u·c, m = |c|, and |S^{n-1}| = 2π^{n/2}/Γ(n/2):

  M = E_u[ M_ray(u) ],  M_ray(u) = |S^{n-1}| ∫_0^{r(u)} N(θ* + t u; μ, σ²I) t^{n-1} dt
    = |S^{n-1}| (2π)^{-n/2} e^{-κ²/2} ∫_0^ρ s^{n-1} e^{-s²/2 + βs} ds,        (1)

with u uniform on the sphere and ρ = r/σ, β = b/σ, κ = m/σ (substituting t = σ s).

Centred prior (μ = θ*, β = κ = 0): (1) is the regularized lower incomplete gamma function,
  M_ray = P(n/2, r²/(2σ²)),
the chi-square CDF of n degrees of freedom at r²/σ². `log_gamma_p` evaluates log P in float64 for
any n: log1p(-Q) when P > 1/2; in the lower tail (x < a - 2√a for a > 100, where scipy's gammainc
loses up to 1e-4 relative at a ~ 5·10^6, and wherever it underflows, P < 1e-280, e.g.
P = 10^-10^6 at n = 10^7, r² = 0.3nσ²) the series (DLMF 8.7.1)
  log P(a, x) = a log x - x - log Γ(a+1) + log Σ_k Π_{j<=k} x/(a+j),
its first terms via Stirling's series for a >= 100 (no O(a log a) cancellation), ~1e-12
relative; elsewhere log(scipy gammainc).

Offset prior (μ ≠ θ*; Scherlis & Belrose centre the prior at the origin, the initialization
distribution, with the trained θ* away from it): (1) is e^{-κ²/2} ∫_0^ρ χ_n(s) e^{βs} ds, χ_n the
chi density of n d.o.f., integrated numerically in float64 and log space. The log-integrand
f(s) = log χ_n(s) + βs is concave, with its maximum on [0, ρ] at
s₀ = clip((β + sqrt(β² + 4(n-1)))/2, 0, ρ). The window where f > f(s₀) - 50 is found by bisection
on either side (by concavity everything outside is < e^{-50} of the integral) and integrated by
composite Gauss-Legendre (8 panels × 24 nodes) of e^{f - f(s₀)}: log ∫ = f(s₀) + log Σ. For
n >= 200, log χ_n is written around s_c = sqrt(n-1) with Stirling's series for Γ(n/2), so no
O(n log n) terms cancel. Accuracy: ~1e-13 absolute in log (tests: against P(n/2, ·) at β = 0 up to
n = 10^7, and against the noncentral chi-square CDF of a ball). (The peer code evaluates the same
integral through an erf-based closed form instead.)

Importance sampling (basin.sampling): directions v from the angular central Gaussian of a det-1
diagonal P have density p(v) = ||P^{-1}v||^{-n} w.r.t. the uniform one, so for ANY per-ray
function g, E_u[g(u)] = E_p[g(v)·||P^{-1}v||^n]: each ray's log-term gets the same log-weight
-n·log||P z_k|| = -n(log||d_k|| - log||g_k||) as the volume (`Radii.volume`). The estimate is
logmeanexp_k(log M_ray(v_k) + log w_k), with the ESS, largest share and bootstrap interval of
basin.volume (same helpers).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from genviz_jax import directions as directions_lib
from genviz_jax.basin.sampling import RandomDirections
from genviz_jax.basin.volume import VolumeEstimate, bootstrap_ci, check_samples, weight_statistics

PyTree = Any

_TINY = 1e-280        # below this scipy's gammainc loses relative precision / underflows
_WINDOW_NATS = 50.0   # the quadrature window: where the log-integrand is within 50 of its max
_PANELS, _NODES = 8, 24
_MAX_SERIES_TERMS = 10 ** 6


@dataclasses.dataclass(frozen=True)
class GaussianMass(VolumeEstimate):
  """log M, the prior mass of the basin, with the statistical quality of a VolumeEstimate.

  log_volume holds log M (natural log; also `log_mass`), ci its bootstrap interval, measure
  "gaussian-prior (σ=...)". log_ball is 0 (the mass has no ball factor). sigma: the prior's σ;
  offset_norm: |μ - θ*| over the perturbed coordinates (0: prior centred at the minimum).
  num_censored > 0: rays stopped at r_max, so log M is a lower bound.
  """
  sigma: float
  offset_norm: float

  @property
  def log_mass(self) -> float:
    return self.log_volume

  @property
  def log10_mass(self) -> float:
    return self.log10_volume

  def to_json(self) -> dict:
    return {"log10_mass": self.log10_volume, "log10_mass_ci": list(self.log10_ci),
            "log_mass": self.log_volume, "log_mass_ci": list(self.ci),
            "effective_sample_size": self.effective_sample_size, "max_share": self.max_share,
            "num_samples": self.num_samples, "num_censored": self.num_censored, "dim": self.dim,
            "measure": self.measure, "sigma": self.sigma, "offset_norm": self.offset_norm,
            "confidence": self.confidence, "lower_bound": self.num_censored > 0}


def log_gamma_p(a: Any, x: Any) -> np.ndarray:
  """log P(a, x), the regularized lower incomplete gamma function, float64, stable everywhere.

  P > 1/2: log1p(-Q(a, x)); P <= 1e-280, or a > 100 and x < a - 2√a: the series of DLMF 8.7.1 in
  log space (module docstring; there x < a, as the median of Gamma(a) is below a); else
  log(gammainc). (scipy's gammainc is off by up to 1e-4 relative in the lower tail for a ~ 5·10^6,
  e.g. at P ~ 1e-20, measured against the Poisson-tail sum; the series agrees with it to 1e-8.)
  """
  a, x = np.broadcast_arrays(np.asarray(a, np.float64), np.asarray(x, np.float64))
  out = np.empty(a.shape)
  q = special.gammaincc(a, x)
  p = special.gammainc(a, x)
  upper = q < 0.5
  low = ~upper & ((p <= _TINY) | ((a > 100) & (x < a - 2 * np.sqrt(a))))
  mid = ~upper & ~low
  out[upper] = np.log1p(-q[upper])
  out[mid] = np.log(p[mid])
  if np.any(low):
    out[low] = _log_gamma_p_series(a[low], x[low])
  return out


def _log_poisson_weight(a: np.ndarray, x: np.ndarray) -> np.ndarray:
  """a log x - x - log Γ(a+1). For a >= 100 without the O(a log a) cancellation: with Stirling,
  = a(log1p(y) - y) - log(2πa)/2 - stirling(a), y = x/a - 1."""
  with np.errstate(divide="ignore", invalid="ignore"):
    direct = a * np.log(x) - x - special.gammaln(a + 1.0)
    big = np.maximum(a, 100.0)
    y = x / big - 1.0
    stable = big * (np.log1p(y) - y) - 0.5 * np.log(2 * np.pi * big) - _stirling_correction(big)
  return np.where(a >= 100, stable, direct)


def _log_gamma_p_series(a: np.ndarray, x: np.ndarray) -> np.ndarray:
  """log P(a, x) = a log x - x - log Γ(a+1) + log S, S = Σ_{k>=0} Π_{j=1..k} x/(a+j), for x < a.

  Terms shrink by x/(a+j) < 1; summed until the next term is below 1e-17 of the sum, plus the
  geometric bound of the tail t·q/(1-q), q = x/(a+k+1), if the term cap is reached.
  """
  head = _log_poisson_weight(a, x)
  s = np.ones_like(x)
  t = np.ones_like(x)
  active = np.ones(x.shape, bool)
  j = 0
  while np.any(active) and j < _MAX_SERIES_TERMS:
    j += 1
    t[active] *= x[active] / (a[active] + j)
    s[active] += t[active]
    active &= t > 1e-17 * s
  q = x / (a + j + 1.0)
  s = s + np.where(active, t * q / (1.0 - q), 0.0)
  return head + np.log(s)


def _stirling_correction(z: float) -> float:
  """log Γ(z) - [(z - 1/2) log z - z + log(2π)/2] by its asymptotic series (DLMF 5.11.1), z >= 100
  (first omitted term < 1e-20)."""
  return 1 / (12 * z) - 1 / (360 * z ** 3) + 1 / (1260 * z ** 5) - 1 / (1680 * z ** 7)


def _log_chi_density(s: np.ndarray, dim: int) -> np.ndarray:
  """log χ_n(s) = log(|S^{n-1}| (2π)^{-n/2} s^{n-1} e^{-s²/2}), the chi density of n d.o.f.

  n < 200: directly. n >= 200, without the O(n log n) cancellation of the direct form: with
  s_c = sqrt(n-1), y = s/s_c - 1, log χ_n(s) = A(n) + (n-1)(log1p(y) - y - y²/2), where
  A(n) = 1/2 - log(π)/2 + ((n-1)/2)·log1p(-1/n) - stirling(n/2) (Stirling's formula for Γ(n/2)).
  """
  with np.errstate(divide="ignore"):
    if dim < 200:
      const = math.log(2.0) - float(special.gammaln(0.5 * dim)) - 0.5 * dim * math.log(2.0)
      return const - 0.5 * s * s + ((dim - 1) * np.log(s) if dim > 1 else 0.0)
    y = s / math.sqrt(dim - 1) - 1.0
    const = (0.5 - 0.5 * math.log(math.pi) + 0.5 * (dim - 1) * math.log1p(-1.0 / dim)
             - _stirling_correction(0.5 * dim))
    return const + (dim - 1) * (np.log1p(y) - y - 0.5 * y * y)


def _log_integrand(s: np.ndarray, beta: np.ndarray, dim: int) -> np.ndarray:
  """log(χ_n(s)·e^{βs}): concave in s (-inf at s = 0 for n > 1)."""
  return _log_chi_density(s, dim) + beta * s


def _mode(rho: np.ndarray, beta: np.ndarray, dim: int) -> np.ndarray:
  """argmax of f on [0, ρ]: the root of s² - βs - (n-1) = 0, without cancellation, clipped."""
  root = np.sqrt(beta * beta + 4.0 * (dim - 1))
  with np.errstate(divide="ignore", invalid="ignore"):
    s0 = np.where(beta >= 0, 0.5 * (beta + root), 2.0 * (dim - 1) / (root - beta))
  return np.clip(np.nan_to_num(s0), 0.0, rho)


def _bisect(lo: np.ndarray, hi: np.ndarray, g, iters: int = 80) -> np.ndarray:
  """A root of g in [lo, hi] with g(lo) < 0 <= g(hi) (or the reverse, via the sign at lo)."""
  neg_at_lo = g(lo) < 0
  for _ in range(iters):
    mid = 0.5 * (lo + hi)
    below = (g(mid) < 0) == neg_at_lo
    lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
  return 0.5 * (lo + hi)


def log_chi_integral(rho: Any, beta: Any, dim: int) -> np.ndarray:
  """log ∫_0^ρ χ_n(s) e^{βs} ds, χ_n the chi density of n d.o.f. (at β = 0: log P(n/2, ρ²/2)),
  float64, by windowed Gauss-Legendre (module docstring)."""
  rho, beta = np.broadcast_arrays(np.asarray(rho, np.float64), np.asarray(beta, np.float64))
  s0 = _mode(rho, beta, dim)
  f0 = _log_integrand(s0, beta, dim)
  g = lambda s: _log_integrand(s, beta, dim) - (f0 - _WINDOW_NATS)
  zero = np.zeros_like(rho)
  lo = np.where(g(zero) >= 0, zero, _bisect(zero, s0, g))
  hi = np.where(g(rho) >= 0, rho, _bisect(s0, rho, g))
  nodes, weights = np.polynomial.legendre.leggauss(_NODES)
  edges = lo[..., None] + (hi - lo)[..., None] * np.linspace(0.0, 1.0, _PANELS + 1)
  half = 0.5 * (edges[..., 1:] - edges[..., :-1])                      # (..., panels)
  mid = 0.5 * (edges[..., 1:] + edges[..., :-1])
  s = mid[..., None] + half[..., None] * nodes                          # (..., panels, nodes)
  f = _log_integrand(s, beta[..., None, None], dim) - f0[..., None, None]
  with np.errstate(divide="ignore"):
    log_w = np.log(half)[..., None] + np.log(weights)
  return f0 + special.logsumexp((f + log_w).reshape(*rho.shape, -1), axis=-1)


def log_ray_mass(radius: Any, dim: int, sigma: float, projection: Any | None = None,
                 offset_norm: float | None = None) -> np.ndarray:
  """log M_ray of equation (1): the prior mass of the cone of rays near u out to `radius`,
  times |S^{n-1}| (so its mean over uniform u is the mass).

  Centred (projection None): log P(n/2, r²/(2σ²)). Offset: -κ²/2 + log ∫_0^ρ χ_n(s) e^{βs} ds
  with ρ = r/σ, β = projection/σ, κ = offset_norm/σ (χ_n(s) = |S|(2π)^{-n/2} s^{n-1} e^{-s²/2}).
  """
  r = np.asarray(radius, np.float64)
  if projection is None:
    return log_gamma_p(0.5 * dim, 0.5 * np.square(r / sigma))
  kappa = offset_norm / sigma
  return -0.5 * kappa * kappa + log_chi_integral(r / sigma, np.asarray(projection, np.float64)
                                                 / sigma, dim)


def _check_sigma(sigma) -> float:
  try:
    s = float(sigma)
  except (TypeError, ValueError):
    raise ValueError(f"sigma={sigma!r} must be a finite number > 0") from None
  if not (math.isfinite(s) and s > 0):
    raise ValueError(f"sigma={sigma!r} must be a finite number > 0")
  return s


def _check_offset(projection, offset_norm, shape) -> tuple[np.ndarray | None, float]:
  """The per-direction projections u_k·(μ - θ*) broadcast to the radii's shape (-b for -d)."""
  if (projection is None) != (offset_norm is None):
    raise ValueError("projection and offset_norm go together: pass both (prior centred at μ) "
                     "or neither (prior centred at the minimum)")
  if projection is None:
    return None, 0.0
  m = float(offset_norm)
  if not (math.isfinite(m) and m >= 0):
    raise ValueError(f"offset_norm={offset_norm!r} must be a finite number >= 0")
  b = np.asarray(projection, np.float64)
  if b.shape != shape[:1]:
    raise ValueError(f"projection has shape {b.shape}; expected ({shape[0]},), one per direction")
  if not np.all(np.isfinite(b)):
    raise ValueError("projection contains a non-finite value")
  worst = float(np.max(np.abs(b))) if b.size else 0.0
  if worst > m * (1 + 1e-6) + 1e-12:
    raise ValueError(f"projection has |u·c| = {worst:.6g} > offset_norm = {m:.6g}; a projection "
                     "on a unit direction cannot exceed |c|")
  if len(shape) == 2:
    b = np.stack([b, -b], axis=1)
  return b, m


def log_gaussian_mass(radii: Any, dim: int, sigma: float, *, projection: Any | None = None,
                      offset_norm: float | None = None, log_weights: Any | None = None,
                      censored: Any | None = None, num_bootstrap: int = 1000,
                      confidence: float = 0.95, seed: int = 0) -> GaussianMass:
  """Monte Carlo log prior mass of a star-shaped basin under N(μ, σ² I_n) (module docstring).

  Args:
    radii: (K,) Euclidean radii > 0 along directions uniform on the sphere (or importance-sampled
      with `log_weights`), or (K, 2) along ±d (rows resampled together).
    dim: n, the number of perturbed coordinates.
    sigma: the prior's standard deviation per coordinate, > 0.
    projection: (K,) u_k·(μ - θ*) for unit directions u_k (along -d it is the negative), with
      offset_norm = |μ - θ*|; both None: the prior is centred at θ* (`offset_projections` makes
      them for generated directions).
    log_weights, censored, num_bootstrap, confidence, seed: as in basin.volume.log_volume (the
      same importance weight -n·log||P z_k||; censored radii make the mass a lower bound).

  Returns a GaussianMass (a VolumeEstimate whose log_volume is log M).
  """
  r, dim, log_w, num_cens = check_samples(radii, dim, log_weights=log_weights, censored=censored,
                                          num_bootstrap=num_bootstrap, confidence=confidence)
  sigma = _check_sigma(sigma)
  b, m = _check_offset(projection, offset_norm, r.shape)
  lw = log_ray_mass(r, dim, sigma, b, None if b is None else m) + log_w
  log_mean, ess, max_share = weight_statistics(lw)
  ci = (float("nan"), float("nan"))
  if num_bootstrap > 0:
    ci = bootstrap_ci(lw, int(num_bootstrap), confidence, seed)
  return GaussianMass(log_volume=log_mean, ci=ci, effective_sample_size=ess, max_share=max_share,
                      num_samples=int(lw.size), num_censored=num_cens, dim=dim,
                      measure=f"gaussian-prior (σ={sigma:g})", log_ball=0.0,
                      confidence=float(confidence), sigma=sigma, offset_norm=m)


def offset_projections(directions: RandomDirections, params: PyTree, prior_mean: PyTree, *,
                       chunk_size: int = 256) -> tuple[np.ndarray, float]:
  """(u_k·(μ - θ*) for k < K, |μ - θ*|) over the coordinates the directions move.

  Regenerates direction k exactly as basin.radii does (directions.random_direction, times the
  preconditioner), unit-normalizes it in float64 and projects μ - θ* on it; μ - θ* is restricted
  to the leaves direction 0 moves (ignored 1-D leaves stay at θ*, so they carry no prior mass).
  Memory: chunk_size directions at a time.
  """
  directions_lib.check_same_tree(prior_mean, params, what="prior_mean")
  if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
    raise ValueError(f"chunk_size={chunk_size!r} must be a positive integer")
  axes = directions_lib.filter_axes(params, directions.filter_axis)
  precond = directions.preconditioner

  def one(k):
    d = directions_lib.random_direction(directions.key, params, k, norm=directions.norm,
                                        ignore_1d=directions.ignore_1d, filter_axis=axes)
    if precond is None:
      return d
    return jax.tree.map(lambda a, p: a * p.astype(a.dtype), d, precond)

  batch = jax.jit(jax.vmap(one))
  moved = [bool(np.any(np.asarray(x) != 0)) for x in jax.tree.leaves(one(0))]
  offset = [(np.asarray(mu, np.float64) - np.asarray(p, np.float64)).ravel() * mv
            for mu, p, mv in zip(jax.tree.leaves(prior_mean), jax.tree.leaves(params), moved)]
  out = np.empty(directions.num)
  for start in range(0, directions.num, chunk_size):
    stop = min(start + chunk_size, directions.num)
    leaves = jax.tree.leaves(batch(jnp.arange(start, start + chunk_size)))
    rows = [np.asarray(x, np.float64).reshape(chunk_size, -1)[:stop - start] for x in leaves]
    dot = sum(x @ c for x, c in zip(rows, offset))
    norm = np.sqrt(sum(np.sum(x * x, axis=1) for x in rows))
    out[start:stop] = dot / norm
  return out, float(math.sqrt(sum(float(c @ c) for c in offset)))
