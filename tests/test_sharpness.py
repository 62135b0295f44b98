"""Sharpness measures against closed forms: Gaussian tail probabilities, box maxima of quadratics."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from genviz_jax import sharpness


def _band_accuracy(centre, halfwidth):
  """'accuracy'(θ) = fraction of coordinates with |θ_i - c_i| < h_i: under N(0, s_i²) noise its
  mean is 2Φ(h_i/s_i) - 1 exactly, so σ' has a closed form."""
  def metric_fn(params):
    w = params["w"]
    return {"accuracy": jnp.mean((jnp.abs(w - centre) < halfwidth).astype(jnp.float32)),
            "loss": jnp.mean((w - centre) ** 2)}
  return metric_fn


def test_noise_delta_has_the_stated_std():
  params = {"w": jnp.full((50, 40), 2.0), "b": jnp.ones(40)}
  idx = jnp.arange(400, dtype=jnp.int32)
  plain = sharpness.gaussian_noise_delta(jax.random.PRNGKey(0), params, 0.3)(idx)
  assert float(jnp.std(plain["w"])) == pytest.approx(0.3, rel=0.01)
  assert float(jnp.std(plain["b"])) == pytest.approx(0.3, rel=0.03)
  mag = sharpness.gaussian_noise_delta(jax.random.PRNGKey(0), params, 0.3, magnitude_eps=0.5,
                                       ignore_1d=True)(idx)
  assert float(jnp.std(mag["w"])) == pytest.approx(math.sqrt(0.6 ** 2 + 0.5 ** 2), rel=0.01)
  assert float(jnp.max(jnp.abs(mag["b"]))) == 0.0
  std = sharpness.gaussian_noise_delta(jax.random.PRNGKey(0), params, 0.3, magnitude_eps=0.5,
                                       mag_noise="std")(idx)
  assert float(jnp.std(std["w"])) == pytest.approx(0.6 + 0.5, rel=0.01)
  # Noise k does not depend on σ beyond scale (common random numbers across the bisection).
  again = sharpness.gaussian_noise_delta(jax.random.PRNGKey(0), params, 0.6)(idx)
  np.testing.assert_allclose(again["w"], 2 * plain["w"], rtol=1e-6)


def test_flatness_sigma_matches_the_gaussian_closed_form():
  h, target = 0.05, 0.1
  params = {"w": jnp.zeros((40, 50))}
  res = sharpness.flatness_sigma(_band_accuracy(0.0, h), params, target=target, sigma_min=1e-3,
                                 sigma_max=1.0, num_bisection=14, num_samples=32)
  exact = h / stats.norm.ppf(1 - target / 2)  # drop 2(1 - Φ(h/σ)) = target
  assert res.censored == ""
  assert res.base == 1.0
  assert res.sigma == pytest.approx(exact, rel=0.01)
  assert res.bracket[0] <= exact * 1.01 and res.bracket[1] >= exact * 0.99
  assert res.ci[0] <= exact <= res.ci[1]
  assert len(res.history) == 2 + 14


def test_magnitude_aware_sigma_matches_the_closed_form():
  c, a, eps, target = 2.0, 0.05, 0.02, 0.1
  params = {"w": jnp.full((40, 50), c)}
  res = sharpness.flatness_sigma(_band_accuracy(c, a * c), params, target=target,
                                 magnitude_eps=eps, sigma_min=1e-3, sigma_max=1.0,
                                 num_bisection=14, num_samples=32)
  z = stats.norm.ppf(1 - target / 2)
  exact = math.sqrt((a * c / z) ** 2 - eps ** 2) / c  # var σ²c² + ε² = (ac/z)²
  assert res.sigma == pytest.approx(exact, rel=0.015)


def test_flatness_sigma_flags_censoring_and_loss_metric():
  params = {"w": jnp.zeros((10, 10))}
  res = sharpness.flatness_sigma(_band_accuracy(0.0, 100.0), params, sigma_max=0.5,
                                 num_bisection=3, num_samples=4)
  assert res.censored == "above" and res.sigma == 0.5
  assert res.bracket == (0.5, math.inf) and res.as_dict()["bracket"] == [0.5, None]
  res = sharpness.flatness_sigma(_band_accuracy(0.0, 1e-9), params, sigma_min=1e-3,
                                 num_bisection=3, num_samples=4)
  assert res.censored == "below"
  # Loss metric: E[mean (u)^2] = σ², so a loss increase of 0.01 gives σ' = 0.1.
  res = sharpness.flatness_sigma(_band_accuracy(0.0, 1.0), {"w": jnp.zeros((100, 100))},
                                 metric="loss", target=0.01, num_bisection=14, num_samples=8)
  assert res.sigma == pytest.approx(0.1, rel=0.01)


def test_pacbayes_measures_properties():
  # ||w||² = 25 and ||w - w0||² = 1 over the kernel; the biases (7, 7) vs (1, 1) add 98 and 72.
  params = {"Dense_0": {"kernel": jnp.array([[3.0, 4.0]]), "bias": jnp.array([7.0, 7.0])}}
  init = {"Dense_0": {"kernel": jnp.array([[3.0, 3.0]]), "bias": jnp.array([1.0, 1.0])}}
  m, s = 100, 0.5
  out = sharpness.pacbayes_measures(params, m, sigma=s, mag_sigma=0.2, init_params=init,
                                    magnitude_eps=0.1)
  # (53), (61): the flatness measures are 1/σ'² by definition.
  assert out["pacbayes.flatness"] == 4.0
  assert out["pacbayes.mag.flatness"] == pytest.approx(25.0, rel=1e-14)
  # (49) - (48): log(m/σ') and the constant cancel, leaving (||w||² - ||w - w0||²)/(4σ'²).
  diff = lambda o: o["pacbayes.orig"] - o["pacbayes.init"]
  assert diff(out) == pytest.approx((25 - 1) / (4 * s ** 2), rel=1e-12)
  # With 1-D leaves included the biases enter both norms: (123 - 73)/(4σ'²).
  full = sharpness.pacbayes_measures(params, m, sigma=s, init_params=init, weights_only=False)
  assert diff(full) == pytest.approx((123 - 73) / (4 * s ** 2), rel=1e-12)
  # Doubling σ' divides the quadratic term by 4.
  wide = sharpness.pacbayes_measures(params, m, sigma=2 * s, init_params=init)
  assert diff(wide) == pytest.approx(diff(out) / 4, rel=1e-12)
  # At w = w0 the quadratic term of (48) vanishes and the published value is log(m/σ') + 10;
  # the magnitude-aware (56) has num = den = ε² at every weight, so the same value.
  same = sharpness.pacbayes_measures(params, m, sigma=s, mag_sigma=0.2, init_params=params,
                                     magnitude_eps=0.1)
  assert same["pacbayes.init"] == pytest.approx(math.log(m / s) + 10, rel=1e-12)
  assert same["pacbayes.mag.init"] == pytest.approx(math.log(m / 0.2) + 10, rel=1e-12)
  # ... and the quadratic term is then the whole of orig minus init: ||w||²/(4σ'²).
  assert diff(same) == pytest.approx(25 / (4 * s ** 2), rel=1e-12)
  # Sharper (smaller σ') means larger measures, plain and magnitude-aware.
  sigmas = [1.0, 0.5, 0.2, 0.1, 0.05, 0.01, 1e-3]
  seq = [sharpness.pacbayes_measures(params, m, sigma=x, mag_sigma=x, init_params=init,
                                     magnitude_eps=0.1) for x in sigmas]
  for name in ["pacbayes.orig", "pacbayes.init", "pacbayes.mag.orig", "pacbayes.mag.init"]:
    vals = [o[name] for o in seq]
    assert all(b > a for a, b in zip(vals, vals[1:])), (name, vals)
  # Magnitude-aware with ε = 0 depends on w only through ratios: scaling w leaves it unchanged,
  # while the plain measure's ||w||²/(4σ'²) grows by the square of the scale.
  scaled = jax.tree_util.tree_map(lambda p: 3.0 * p, params)
  a = sharpness.pacbayes_measures(params, m, sigma=s, mag_sigma=0.2, magnitude_eps=0.0)
  b = sharpness.pacbayes_measures(scaled, m, sigma=s, mag_sigma=0.2, magnitude_eps=0.0)
  assert b["pacbayes.mag.orig"] == pytest.approx(a["pacbayes.mag.orig"], rel=1e-12)
  assert b["pacbayes.orig"] - a["pacbayes.orig"] == pytest.approx(
      (9 - 1) * 25 / (4 * s ** 2), rel=1e-12)


def test_eps_sharpness_reaches_the_box_corner_of_a_quadratic():
  a = jnp.array([[1.0, 5.0, 0.5], [2.0, 0.1, 3.0]])
  theta = {"k": jnp.array([[0.5, -1.0, 2.0], [-0.2, 0.3, 1.0]])}
  eps = 1e-2
  loss = lambda p: 0.5 * jnp.sum(a * p["k"] ** 2)
  res = sharpness.eps_sharpness(loss, theta, epsilon=eps, num_steps=20, num_random_starts=2)
  t = np.asarray(theta["k"], np.float64)
  base = 0.5 * np.sum(np.asarray(a) * t ** 2)
  # A separable convex function is maximized over a box at the corner away from 0.
  top = 0.5 * np.sum(np.asarray(a) * (np.abs(t) + eps * (np.abs(t) + 1)) ** 2)
  assert res.base_loss == pytest.approx(base, rel=1e-6)
  assert res.max_loss == pytest.approx(top, rel=1e-5)
  assert res.sharpness == pytest.approx((top - base) / (1 + base), rel=1e-4)
  assert res.per_start.shape == (3,)
  # A sharper quadratic (Hessian x10) is sharper by this measure too.
  sharp = sharpness.eps_sharpness(lambda p: 10 * loss(p), theta, epsilon=eps)
  assert sharp.sharpness > res.sharpness


def test_bad_input_is_a_clear_error():
  params = {"w": jnp.zeros((3, 3))}
  fn = _band_accuracy(0.0, 1.0)
  with pytest.raises(ValueError, match=r"sigma range \[0.5, 0.1\] is empty"):
    sharpness.flatness_sigma(fn, params, sigma_min=0.5, sigma_max=0.1)
  with pytest.raises(ValueError, match="sigma_min=-1.0 must be a finite number > 0"):
    sharpness.flatness_sigma(fn, params, sigma_min=-1.0)
  with pytest.raises(ValueError, match="target=0"):
    sharpness.flatness_sigma(fn, params, target=0)
  with pytest.raises(ValueError, match="metric='margin' is not among"):
    sharpness.flatness_sigma(fn, params, metric="margin", num_bisection=1, num_samples=2)
  with pytest.raises(ValueError, match="epsilon=0"):
    sharpness.eps_sharpness(lambda p: jnp.sum(p["w"]), params, epsilon=0)
  with pytest.raises(ValueError, match="mag_noise='abs'"):
    sharpness.gaussian_noise_delta(jax.random.PRNGKey(0), params, 0.1, mag_noise="abs")
