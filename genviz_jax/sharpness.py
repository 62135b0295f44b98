"""Flatness and sharpness measures: PAC-Bayes σ' (plain and magnitude-aware), ε-sharpness, bounds.

Definitions and sources
-----------------------
PAC-Bayes flatness σ' (Jiang, Neyshabur, Mobahi, Krishnan, Bengio 2019, "Fantastic Generalization
Measures and Where to Find Them", arXiv 1912.02178, §C "PAC-Bayesian bounds"; the search as in
their released code): σ' is the largest σ such that Gaussian weight noise u ~ N(0, σ² I) lowers
the training accuracy by at most `target` (0.1 in the paper):

    acc(θ) - E_u[acc(θ + u)] <= target.

E_u is a Monte Carlo mean over `num_samples` noise draws, all evaluated in ONE batched call of
the evaluation engine (`engine.evaluate_points`); σ is found by bisection on log σ with the same
noise draws at every σ (common random numbers: the estimate is a smooth function of σ).

Magnitude-aware σ' (ibid., §C "Magnitude-aware perturbation bounds"): the same search with
u_i ~ N(0, σ² θ_i² + ε²), ε = 1e-3: the noise scales with each weight. (mag_noise="std" uses the
standard deviation σ|θ_i| + ε instead.)

Measures built from them (ibid., numbered as in the paper; m = training examples, ω = number of
weights, w = the weights, w0 = their initialization, sums over weights only, i.e. leaves with
ndim >= 2, as in the public code):
  (48) pacbayes.init      = ||w - w0||² / (4σ'²) + log(m/σ') + 10
  (49) pacbayes.orig      = ||w||² / (4σ'²) + log(m/σ') + 10
  (53) pacbayes.flatness  = 1/σ'²
  (56) pacbayes.mag.init  = ¼ Σ_i log[(ε² + (σ'²+1)||w-w0||²/ω) / (ε² + σ'²(w_i-w0_i)²)]
                            + log(m/σ') + 10
  (57) pacbayes.mag.orig  = the same with w in place of w - w0
  (61) pacbayes.mag.flatness = 1/σ'²  (magnitude-aware σ')
The paper then reports sqrt(value/m) for the non-log measures; the values here are unadjusted.

ε-sharpness (Keskar, Mudigere, Nocedal, Smelyanskiy, Tang 2017, "On Large-Batch Training for
Deep Learning: Generalization Gap and Sharp Minima", Metric 2.1, with A = I):

    φ(ε) = (max_{δ ∈ C_ε} L(θ + δ) - L(θ)) / (1 + L(θ)),   C_ε = {δ : |δ_i| <= ε(|θ_i| + 1)},

with L the training loss. Keskar et al. multiply by 100 and solve the inner maximization with
L-BFGS-B; here projected sign-gradient ascent (Madry et al. 2018) from δ = 0 and from random
starts in the box, keeping the best iterate: every value is a LOWER bound on the true maximum.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from genviz_jax import engine
from genviz_jax import hessian

PyTree = Any


# ------------------------------------------------------------------------------ noise

def _noise_std(params: PyTree, sigma, magnitude_eps: float | None, mag_noise: str,
               ignore_1d: bool) -> PyTree:
  """Per-coordinate noise std as a pytree like params (σ, or the magnitude-aware form)."""
  def leaf(p):
    p = jnp.asarray(p)
    if ignore_1d and p.ndim <= 1:
      return jnp.zeros_like(p)
    if magnitude_eps is None:
      return jnp.full_like(p, sigma)
    if mag_noise == "variance":
      return jnp.sqrt((sigma * p) ** 2 + magnitude_eps ** 2).astype(p.dtype)
    return (sigma * jnp.abs(p) + magnitude_eps).astype(p.dtype)
  return jax.tree_util.tree_map(leaf, params)


def gaussian_noise_delta(key: jax.Array, params: PyTree, sigma, *,
                         magnitude_eps: float | None = None, mag_noise: str = "variance",
                         ignore_1d: bool = False) -> engine.NoiseDelta:
  """delta_fn for the engine: point k = θ + std ⊙ z_k, z_k ~ N(0, I) drawn from fold_in(key, k).

  Args:
    key: PRNG key; noise k is a pure function of (key, k), so every σ sees the same z_k.
    params: θ (pytree).
    sigma: σ, a scalar.
    magnitude_eps: None for plain noise N(0, σ²); ε for the magnitude-aware form.
    mag_noise: "variance" (var σ²θ_i² + ε², Jiang et al.) or "std" (std σ|θ_i| + ε).
    ignore_1d: leave 1-D parameters (biases, BatchNorm scales) unperturbed.
  Returns:
    delta_fn(idx int32 (B,)) -> pytree like params with leaves (B, *leaf.shape).
  """
  if mag_noise not in ("variance", "std"):
    raise ValueError(f"mag_noise={mag_noise!r} is not one of 'variance', 'std'")
  return engine.noise_delta(key, _noise_std(params, sigma, magnitude_eps, mag_noise, ignore_1d))


# ------------------------------------------------------------------------------ σ' search

@dataclasses.dataclass(frozen=True)
class FlatnessSigma:
  """Result of the σ' search.

  sigma: σ', the geometric midpoint of the final bisection bracket (parameter units; for the
    magnitude-aware form, a fraction of |θ_i|).
  bracket: (lo, hi): the metric change was <= target at lo and > target at hi (one-sided when
    censored).
  ci: (lo, hi): a Monte Carlo interval from the evaluated σ: lo = the largest σ whose change is
    <= target even at +z·stderr, hi = the smallest σ whose change is > target even at -z·stderr
    (nan when no evaluated σ qualifies).
  censored: "" (found), "above" (change <= target even at sigma_max: σ' >= sigma_max) or
    "below" (change > target already at sigma_min: σ' <= sigma_min).
  base: the metric at θ; target: allowed change; metric; num_samples; magnitude_eps;
  history: list of (σ, mean change, stderr of the mean change) in evaluation order.
  """
  sigma: float
  bracket: tuple[float, float]
  ci: tuple[float, float]
  censored: str
  base: float
  target: float
  metric: str
  num_samples: int
  magnitude_eps: float | None
  mag_noise: str
  history: list

  def as_dict(self) -> dict:
    """JSON-ready: tuples as lists, inf / nan (censored ends, no qualifying σ) as None."""
    def clean(x):
      if isinstance(x, (tuple, list)):
        return [clean(v) for v in x]
      if isinstance(x, float) and not math.isfinite(x):
        return None
      return x
    return {k: clean(v) for k, v in dataclasses.asdict(self).items()}


def _check_positive(name: str, value) -> float:
  v = float(value)
  if not (v > 0 and math.isfinite(v)):
    raise ValueError(f"{name}={value!r} must be a finite number > 0")
  return v


def _check_int(name: str, value, lo: int) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
    raise ValueError(f"{name}={value!r} must be an integer >= {lo}")
  return int(value)


def _bisect_log_sigma(change: Callable[[float], float], target: float, sigma_min: float,
                      sigma_max: float, num_bisection: int) -> tuple[float, tuple, str]:
  """(σ', (lo, hi), censored) by bisection on log σ of change(σ) <= target (module docstring)."""
  if change(sigma_max) <= target:
    return sigma_max, (sigma_max, math.inf), "above"
  if change(sigma_min) > target:
    return sigma_min, (0.0, sigma_min), "below"
  lo, hi = sigma_min, sigma_max
  for _ in range(num_bisection):
    mid = math.sqrt(lo * hi)
    if change(mid) > target:
      hi = mid
    else:
      lo = mid
  return math.sqrt(lo * hi), (lo, hi), ""


def _mc_interval(history: list, target: float, z: float) -> tuple[float, float]:
  """(largest σ whose change is <= target even at +z·stderr, smallest σ whose change is > target
  even at -z·stderr); nan where no evaluated σ qualifies."""
  ok = [s for s, c, se in history if c + z * se <= target]
  bad = [s for s, c, se in history if c - z * se > target]
  return (max(ok) if ok else math.nan, min(bad) if bad else math.nan)


def flatness_sigma(metric_fn: Callable, params: PyTree, data: PyTree | None = None, *,
                   target: float = 0.1, metric: str = "accuracy", sigma_min: float = 1e-4,
                   sigma_max: float = 1.0, num_bisection: int = 12, num_samples: int = 64,
                   magnitude_eps: float | None = None, mag_noise: str = "variance",
                   ignore_1d: bool = False, key: jax.Array | None = None,
                   point_batch: int | None = None, data_batch: int | None = None, z: float = 1.96,
                   mesh=None, progress: Callable[[int, int], None] | None = None) -> FlatnessSigma:
  """PAC-Bayes flatness σ' of Jiang et al. 2019 (module docstring): bisection on log σ.

  Args:
    metric_fn: `metric_fn(params, batch)` -> dict of batch means with `metric` in it.
    params: θ.
    data: training data {"x": (N, ...), "y": (N,)} (or None for metric_fn(params)).
    target: the allowed change of the metric, > 0 (accuracy drop, or loss increase when metric
      is not "accuracy").
    metric: "accuracy" (change = base - perturbed) or a loss-like metric (perturbed - base).
    sigma_min, sigma_max: the search range, 0 < sigma_min < sigma_max.
    num_bisection: bisection steps after the two end points (the bracket shrinks by
      (sigma_max/sigma_min)^(2^-steps) in ratio).
    num_samples: K noise draws per σ, evaluated in one batched engine call.
    magnitude_eps, mag_noise, ignore_1d: the noise (see gaussian_noise_delta).
    key: PRNG key (default PRNGKey(0)).
    point_batch, data_batch: the engine's chunking.
    mesh: a jax.sharding.Mesh (engine.point_mesh()): noise samples sharded over its devices.
    z: normal quantile for `ci` (1.96: 95% per evaluated σ).
    progress: called as progress(evaluations_done, evaluations_total).
  """
  target = _check_positive("target", target)
  sigma_min = _check_positive("sigma_min", sigma_min)
  sigma_max = _check_positive("sigma_max", sigma_max)
  if not sigma_min < sigma_max:
    raise ValueError(f"sigma range [{sigma_min!r}, {sigma_max!r}] is empty; need "
                     "0 < sigma_min < sigma_max")
  num_bisection = _check_int("num_bisection", num_bisection, 0)
  num_samples = _check_int("num_samples", num_samples, 2)
  if magnitude_eps is not None:
    magnitude_eps = float(magnitude_eps)
    if not (magnitude_eps >= 0 and math.isfinite(magnitude_eps)):
      raise ValueError(f"magnitude_eps={magnitude_eps!r} must be a finite number >= 0")
  key = jax.random.PRNGKey(0) if key is None else key
  sign = 1.0 if metric == "accuracy" else -1.0

  def values_at(sigma):
    delta_fn = gaussian_noise_delta(key, params, jnp.float32(sigma), magnitude_eps=magnitude_eps,
                                    mag_noise=mag_noise, ignore_1d=ignore_1d)
    out = engine.evaluate_points(metric_fn, params, delta_fn, num_samples, data,
                                 point_batch=point_batch, data_batch=data_batch, mesh=mesh)
    if metric not in out:
      raise ValueError(f"metric={metric!r} is not among the metrics {sorted(out)}")
    return out[metric]

  total = num_bisection + 3
  done = [0]

  def evaluate_at(s: float) -> np.ndarray:
    v = np.asarray(values_at(s), np.float64)
    if not np.all(np.isfinite(v)):
      raise ValueError(f"metric {metric!r} is not finite under noise sigma={s:g}")
    done[0] += 1
    if progress is not None:
      progress(done[0], total)
    return v

  base = float(evaluate_at(0.0)[0])
  history = []

  def change(s: float) -> float:
    v = evaluate_at(s)
    c = sign * (base - v)
    history.append((s, float(c.mean()), float(c.std(ddof=1) / np.sqrt(len(c)))))
    return history[-1][1]

  sigma, (lo, hi), censored = _bisect_log_sigma(change, target, sigma_min, sigma_max,
                                                 num_bisection)
  return FlatnessSigma(sigma=sigma, bracket=(lo, hi), ci=_mc_interval(history, target, z), censored=censored, base=base,
                       target=target, metric=metric, num_samples=num_samples,
                       magnitude_eps=magnitude_eps, mag_noise=mag_noise, history=history)


# ------------------------------------------------------------------------------ bounds

def _weights_vector(params: PyTree, weights_only: bool) -> np.ndarray:
  leaves = [np.asarray(p, np.float64).ravel() for p in jax.tree_util.tree_leaves(params)
            if not (weights_only and np.ndim(p) <= 1)]
  return np.concatenate(leaves) if leaves else np.zeros(0)


def pacbayes_measures(params: PyTree, num_examples: int, *, sigma: float | None = None,
                      mag_sigma: float | None = None, init_params: PyTree | None = None,
                      magnitude_eps: float = 1e-3, weights_only: bool = True) -> dict[str, float]:
  """The PAC-Bayes measures of Jiang et al. 2019 (module docstring, eqs. 48-61) from σ'.

  Args:
    params: w (the trained parameters).
    num_examples: m, training set size.
    sigma: σ' of the plain search (None: skip those measures).
    mag_sigma: σ' of the magnitude-aware search (None: skip).
    init_params: w0 (None: the ".init" measures are skipped).
    magnitude_eps: ε of the magnitude-aware noise.
    weights_only: sums over leaves with ndim >= 2 only (Jiang et al.'s code).
  Returns:
    dict measure name -> value (larger = sharper / worse predicted generalization).
  """
  m = _check_int("num_examples", num_examples, 1)
  w = _weights_vector(params, weights_only)
  refs = {"orig": w}
  if init_params is not None:
    w0 = _weights_vector(init_params, weights_only)
    if w0.shape != w.shape:
      raise ValueError(f"init_params have {w0.size} weights, params {w.size}; they must match")
    refs["init"] = w - w0
  out = {}
  if sigma is not None:
    s = _check_positive("sigma", sigma)
    for name, ref in refs.items():
      out[f"pacbayes.{name}"] = float(ref @ ref / (4 * s ** 2) + math.log(m / s) + 10)
    out["pacbayes.flatness"] = 1.0 / s ** 2
  if mag_sigma is not None:
    s = _check_positive("mag_sigma", mag_sigma)
    eps2 = float(magnitude_eps) ** 2
    omega = w.size
    for name, ref in refs.items():
      num = eps2 + (s ** 2 + 1) * (ref @ ref) / omega
      den = eps2 + s ** 2 * ref ** 2
      if np.any(den <= 0):
        raise ValueError("magnitude_eps=0 with a zero weight makes pacbayes.mag infinite; "
                         "use magnitude_eps > 0")
      out[f"pacbayes.mag.{name}"] = float(0.25 * np.sum(np.log(num / den)) + math.log(m / s) + 10)
    out["pacbayes.mag.flatness"] = 1.0 / s ** 2
  return out


# ------------------------------------------------------------------------------ ε-sharpness

@dataclasses.dataclass(frozen=True)
class EpsSharpness:
  """Keskar et al.'s ε-sharpness (module docstring).

  sharpness: (max L - L)/(1 + L), the best over all starts (a lower bound on the true max);
  max_loss, base_loss: L at the best δ and at θ; per_start: (R,) sharpness reached from each
  start (start 0 is δ = 0); epsilon, num_steps, step_fraction: the settings.
  """
  sharpness: float
  max_loss: float
  base_loss: float
  per_start: np.ndarray
  epsilon: float
  num_steps: int
  step_fraction: float

  def as_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d["per_start"] = [float(x) for x in self.per_start]
    return d


def eps_sharpness(loss_fn: Callable, params: PyTree, data: PyTree | None = None, *,
                  epsilon: float = 1e-3, num_steps: int = 20, num_random_starts: int = 2,
                  step_fraction: float | None = None, key: jax.Array | None = None,
                  data_batch: int | None = None, mesh=None) -> EpsSharpness:
  """Worst-case ε-sharpness by projected sign-gradient ascent in the box |δ_i| <= ε(|θ_i| + 1).

  Args:
    loss_fn: `loss_fn(params, batch)` -> scalar or dict with "loss" (training loss).
    params: θ.
    data: training data (or None).
    epsilon: ε > 0 (Keskar et al. used 1e-3 and 5e-4).
    num_steps: ascent steps per start (>= 1); each costs one full-data gradient.
    num_random_starts: starts drawn uniformly in the box, besides δ = 0.
    step_fraction: step per iteration as a fraction of the box half-width (default 2.5/num_steps,
      Madry et al.'s rule: enough to cross the box).
    key: PRNG key for the random starts (default PRNGKey(0)).
    data_batch: examples per chunk (exact full-data loss and gradient).
    mesh: a jax.sharding.Mesh: every loss and gradient splits the examples over its devices.
  """
  epsilon = _check_positive("epsilon", epsilon)
  num_steps = _check_int("num_steps", num_steps, 1)
  num_random_starts = _check_int("num_random_starts", num_random_starts, 0)
  step_fraction = 2.5 / num_steps if step_fraction is None else _check_positive(
      "step_fraction", step_fraction)
  key = jax.random.PRNGKey(0) if key is None else key
  op = hessian.HessianOperator(loss_fn, params, data, data_batch=data_batch, mesh=mesh)

  def build(ops):
    theta = ops.flat
    box = epsilon * (jnp.abs(theta) + 1)

    def ascend(delta0):
      def step(carry, _):
        delta, best = carry
        loss, g = ops.loss_and_grad(theta + delta)
        best = jnp.maximum(best, loss)
        delta = jnp.clip(delta + step_fraction * box * jnp.sign(g), -box, box)
        return (delta, best), None

      (delta, best), _ = jax.lax.scan(step, (delta0, -jnp.inf), None, length=num_steps)
      final, _ = ops.loss_and_grad(theta + delta)
      return jnp.maximum(best, final)

    def run(key):
      starts = jax.random.uniform(key, (num_random_starts,) + theta.shape, theta.dtype, -1, 1)
      starts = jnp.concatenate([jnp.zeros((1,) + theta.shape, theta.dtype), starts * box])
      base, _ = ops.loss_and_grad(theta)
      return base, jax.lax.map(ascend, starts)

    return run

  base, maxes = op.compiled(f"eps{epsilon}_{num_steps}_{num_random_starts}_{step_fraction}",
                            build)(key)
  base, maxes = float(base), np.asarray(maxes, np.float64)
  if not (math.isfinite(base) and np.all(np.isfinite(maxes))):
    raise ValueError(f"loss is not finite inside the ε-box (epsilon={epsilon:g})")
  per_start = (maxes - base) / (1 + base)
  best = int(np.argmax(maxes))
  return EpsSharpness(sharpness=float(per_start[best]), max_loss=float(maxes[best]),
                      base_loss=base, per_start=per_start, epsilon=epsilon, num_steps=num_steps,
                      step_fraction=float(step_fraction))
