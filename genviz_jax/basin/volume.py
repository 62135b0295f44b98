"""Basin volume from radii along random directions, with its statistical quality.

Volume of a star-convex basin with radial function r(u), u uniform on the unit sphere of the n
perturbed coordinates (Huang et al. 2019 measure radii; the volume formula is the polar-coordinate
integral of the ball):

  Vol = V_ball(n) · E_u[r(u)^n],   V_ball(n) = π^{n/2} / Γ(n/2 + 1),
  log Vol = log V_ball(n) + logmeanexp_k(n·log r_k),

in float64 numpy with gammaln, so n = 10^7 and more never overflows. The mean is dominated by the
largest sample in high dimension, so every estimate carries its effective sample size, the
largest sample's share, a bootstrap interval and the number of censored directions.

Measures. Only directions uniform on the sphere give a Lebesgue volume in parameter space
("isotropic": isotropic Gaussian directions with radii converted to Euclidean length). Radii
along filter- (or layer-) normalized directions are coefficients in units of the normalized
direction; V_ball(n)·mean(r^n) from them is in "filter-normalized" coordinates: comparable
between minima of one architecture, not a parameter-space volume. Every result says which.

References: Huang et al., arXiv 1906.03291; Scherlis & Belrose, arXiv 2501.18812 (EleutherAI
basin-volume: importance weights, Gaussian-prior measure).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from scipy import special

MEASURES = ("isotropic", "filter-normalized", "layer-normalized", "given-directions")


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
  if measure not in MEASURES:
    raise ValueError(f"measure={measure!r}; allowed: {', '.join(MEASURES)}")
  r, dim, log_w, num_cens = check_samples(radii, dim, log_weights=log_weights, censored=censored,
                                          num_bootstrap=num_bootstrap, confidence=confidence)
  lw = dim * np.log(r) + log_w
  log_mean, ess, max_share = weight_statistics(lw)
  log_ball = log_ball_volume(dim)
  ci = (float("nan"), float("nan"))
  if num_bootstrap > 0:
    ci = bootstrap_ci(lw, int(num_bootstrap), confidence, seed)
    ci = (log_ball + ci[0], log_ball + ci[1])
  return VolumeEstimate(log_volume=log_ball + log_mean, ci=ci, effective_sample_size=ess,
                        max_share=max_share, num_samples=int(lw.size), num_censored=num_cens,
                        dim=dim, measure=measure, log_ball=log_ball, confidence=float(confidence))


def check_samples(radii: Any, dim: Any, *, log_weights: Any | None, censored: Any | None,
                  num_bootstrap: Any, confidence: Any) -> tuple[np.ndarray, int, np.ndarray, int]:
  """The arguments shared by log_volume and basin.gaussian, checked: (radii float64, n,
  log-weights (zeros when None), number censored). ValueError names the bad value."""
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
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence={confidence!r} must be in (0, 1)")
  if isinstance(num_bootstrap, bool) or int(num_bootstrap) != num_bootstrap or num_bootstrap < 0:
    raise ValueError(f"num_bootstrap={num_bootstrap!r} must be an integer >= 0")
  w = np.zeros(r.shape)
  if log_weights is not None:
    w = np.asarray(log_weights, np.float64)
    if w.shape != r.shape:
      raise ValueError(f"log_weights has shape {w.shape}; radii has {r.shape}")
    if not np.all(np.isfinite(w)):
      raise ValueError("log_weights contains a non-finite value")
  num_cens = 0
  if censored is not None:
    c = np.asarray(censored, bool)
    if c.shape != r.shape:
      raise ValueError(f"censored has shape {c.shape}; radii has {r.shape}")
    num_cens = int(c.sum())
  return r, int(dim), w, num_cens


def weight_statistics(log_w: np.ndarray) -> tuple[float, float, float]:
  """(logmeanexp, ESS, largest share) of per-sample log-weights (any shape, all samples pooled).

  ESS = (Σw)²/Σw², largest share = max w / Σw, in log space (float64): w may be e^{10^7}.
  """
  flat = np.asarray(log_w, np.float64).ravel()
  lse = float(_logsumexp(flat))
  ess = float(math.exp(2 * lse - float(_logsumexp(2 * flat))))
  return lse - math.log(flat.size), ess, float(math.exp(float(flat.max()) - lse))


def bootstrap_ci(lw: np.ndarray, num: int, confidence: float, seed: int) -> tuple[float, float]:
  """Percentile interval of logmeanexp over rows of lw (K,) or (K, 2), resampled with replacement
  (shared by basin.volume and basin.gaussian)."""
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
