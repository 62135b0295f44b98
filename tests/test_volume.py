"""Basin volume estimators against closed forms (balls, ellipsoids) and exact importance weights."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genviz_jax import basin


def _log_ball(n):
  # Independent of basin.log_ball_volume: math.lgamma rather than scipy.
  return 0.5 * n * math.log(math.pi) - math.lgamma(0.5 * n + 1)


@pytest.mark.parametrize("n", [10, 1000, 10**7])
def test_isotropic_log_volume_is_the_balls(n):
  r = 0.37
  est = basin.log_volume(np.full(64, r), n, num_bootstrap=50)
  want = _log_ball(n) + n * math.log(r)
  assert math.isfinite(est.log_volume)
  assert est.log_volume == pytest.approx(want, rel=1e-12, abs=1e-9)
  assert est.log10_volume == pytest.approx(want / math.log(10), rel=1e-12)
  assert est.ci[0] == pytest.approx(want, rel=1e-12) and est.ci[1] == pytest.approx(want, rel=1e-12)
  assert est.effective_sample_size == pytest.approx(64, rel=1e-6)
  assert est.max_share == pytest.approx(1 / 64, rel=1e-6)


def test_unit_ball_in_two_and_three_dimensions():
  assert math.exp(basin.log_volume([1.0], 2, num_bootstrap=0).log_volume) == pytest.approx(math.pi)
  assert math.exp(basin.log_volume([2.0], 3, num_bootstrap=0).log_volume) == pytest.approx(
      4 / 3 * math.pi * 8)


def test_ess_and_max_share_limit_cases():
  # n log r: with n = 100 a radius of 2 outweighs a radius of 1 by 2^100, so one sample carries
  # all the weight: ESS -> 1 and max_share -> 1 (the other three contribute ~3·2^-100).
  est = basin.log_volume(np.array([1.0, 1.0, 1.0, 2.0]), 100, num_bootstrap=0)
  assert est.effective_sample_size == pytest.approx(1.0, abs=1e-12)
  assert est.max_share == pytest.approx(1.0, abs=1e-12)
  # Equal radii: every sample counts fully, whatever n (the log-space arithmetic rounds at about
  # eps·n·|log r|, ~5e-11 relative for n = 10^6).
  for k, n in [(1, 7), (5, 3), (37, 10**6)]:
    est = basin.log_volume(np.full(k, 0.8), n, num_bootstrap=0)
    assert est.effective_sample_size == pytest.approx(k, rel=1e-9)
    assert est.max_share == pytest.approx(1 / k, rel=1e-9)
  # Two equal dominant samples share the weight: ESS -> 2, max_share -> 1/2.
  est = basin.log_volume(np.array([1.0, 2.0, 1.0, 2.0, 1.0]), 100, num_bootstrap=0)
  assert est.effective_sample_size == pytest.approx(2.0, abs=1e-12)
  assert est.max_share == pytest.approx(0.5, abs=1e-12)


def _quadratic(h):
  hj = jnp.asarray(h, jnp.float32)
  return lambda p: 0.5 * jnp.sum(hj * jnp.square(p["w"]))


def test_anisotropic_ellipsoid_within_reported_interval():
  # {½ Σ h_i w_i² <= τ} is an ellipsoid with semi-axes sqrt(2τ/h_i).
  h = np.array([[1.0, 4.0], [9.0, 0.5]])
  tau = 0.5
  n = h.size
  want = _log_ball(n) + 0.5 * np.sum(np.log(2 * tau / h))
  params = {"w": jnp.zeros((2, 2), jnp.float32)}
  spec = basin.RandomDirections(jax.random.key(3), 4000, norm="none")
  res = basin.radii(_quadratic(h), params, spec, threshold=tau, rtol=1e-5, chunk_size=1000)
  assert res.measure == "isotropic" and res.dim == n and res.num_censored == 0
  est = res.volume(num_bootstrap=400)
  assert est.ci[0] <= want <= est.ci[1]
  assert est.ci[1] - est.ci[0] < 0.3  # the interval is informative, not arbitrarily wide
  # More directions move the estimate closer (log-scale error of a few 1/sqrt(K)).
  small = basin.log_volume(res.euclidean()[:250], n, num_bootstrap=0)
  assert abs(est.log_volume - want) < 0.1
  assert abs(small.log_volume - want) < 0.3


def test_preconditioned_directions_get_the_exact_weight():
  # P ∝ H^{-1/2} (det 1) makes every weighted sample equal to the ellipsoid's volume: the
  # correction -n·log|P z| must cancel the proposal's density exactly, so 20 samples suffice.
  h = np.array([[1.0, 30.0, 0.2], [5.0, 2.0, 80.0]])
  tau = 0.3
  n = h.size
  want = _log_ball(n) + 0.5 * np.sum(np.log(2 * tau / h))
  params = {"w": jnp.zeros(h.shape, jnp.float32)}
  precond = basin.diagonal_preconditioner({"w": h}, params, power=0.5, eps=0.0)
  assert float(np.sum(np.log(precond["w"]))) == pytest.approx(0.0, abs=1e-5)
  spec = basin.RandomDirections(jax.random.key(0), 20, norm="none", preconditioner=precond)
  res = basin.radii(_quadratic(h), params, spec, threshold=tau, rtol=1e-6)
  est = res.volume(num_bootstrap=100)
  assert est.log_volume == pytest.approx(want, abs=5e-4)
  assert est.effective_sample_size > 19.9
  # Without the weight the same radii are biased: the check above is not vacuous.
  plain = basin.log_volume(res.euclidean(), n, num_bootstrap=0)
  assert abs(plain.log_volume - want) > 0.1


def test_two_sided_rows_are_resampled_together_and_censored_counted():
  # Rows (a, b) and (b, a) all have the same mean of r^n, so resampling whole rows can only ever
  # produce that same mean: the bootstrap interval has zero width. Resampling single radii (or
  # rows that pair a with a and b with b) draws different means, and the interval opens up.
  a, b, n = 0.7, 1.3, 5
  paired = np.array([[a, b], [b, a]] * 10)
  est = basin.log_volume(paired, n, num_bootstrap=300)
  assert est.num_samples == 40
  assert est.ci[0] == pytest.approx(est.log_volume, rel=1e-12, abs=1e-12)
  assert est.ci[1] == pytest.approx(est.log_volume, rel=1e-12, abs=1e-12)
  same_values = [basin.log_volume(np.array([[a, a], [b, b]] * 10), n, num_bootstrap=300),
                 basin.log_volume(paired.ravel(), n, num_bootstrap=300)]
  for other in same_values:
    # The point estimate does not depend on the pairing, only the interval does.
    assert other.log_volume == pytest.approx(est.log_volume, rel=1e-12)
    assert other.ci[1] - other.ci[0] > 0.1
  # Limit case: equal radii along ±d are a ball of that radius.
  ball = basin.log_volume(np.full((6, 2), 0.37), n, num_bootstrap=50)
  assert ball.log_volume == pytest.approx(_log_ball(n) + n * math.log(0.37), rel=1e-12)
  # Censored radii are counted and kept; the estimate becomes a lower bound.
  r = np.array([[1.0, 2.0], [1.5, 1.5], [0.5, 3.0]])
  cens = np.array([[False, True], [False, False], [False, False]])
  est = basin.log_volume(r, 3, censored=cens, num_bootstrap=200)
  assert est.num_samples == 6 and est.num_censored == 1
  assert est.log_volume == pytest.approx(basin.log_volume(r, 3, num_bootstrap=0).log_volume,
                                         rel=1e-12)
  assert est.to_json()["lower_bound"] is True
  assert basin.log_volume(r, 3, num_bootstrap=0).to_json()["lower_bound"] is False


@pytest.mark.parametrize("radii,dim,match", [
    ([], 3, "K=0"),
    ([1.0, 0.0], 3, "0.0"),
    ([1.0, float("nan")], 3, "nan"),
    ([1.0], 0, "dim=0"),
    ([1.0], 2.5, "dim=2.5"),
])
def test_bad_input(radii, dim, match):
  with pytest.raises(ValueError, match=match):
    basin.log_volume(np.asarray(radii), dim)


def test_bad_measure_and_weights():
  with pytest.raises(ValueError, match="measure='lebesgue'"):
    basin.log_volume([1.0], 2, measure="lebesgue")
  with pytest.raises(ValueError, match="log_weights has shape"):
    basin.log_volume([1.0, 2.0], 2, log_weights=[0.0])


@pytest.mark.parametrize("shape", [(2, 5), (25, 40)])
def test_isotropic_quadratic_through_radii_is_the_ball(shape):
  # ½|w|² <= τ is the ball of radius sqrt(2τ): every Gaussian direction, converted to Euclidean
  # length, must give it, and the volume is the ball's up to the tolerance bias n·log(1+rtol).
  n = int(np.prod(shape))
  tau, rtol = 0.8, 1e-6
  params = {"w": jnp.zeros(shape, jnp.float32)}
  spec = basin.RandomDirections(jax.random.key(4), 16, norm="none")
  res = basin.radii(lambda p: 0.5 * jnp.sum(jnp.square(p["w"])), params, spec, threshold=tau,
                    rtol=rtol, r_init=0.01)
  np.testing.assert_allclose(res.euclidean(), math.sqrt(2 * tau), rtol=2e-6)
  est = res.volume(num_bootstrap=50)
  want = _log_ball(n) + 0.5 * n * math.log(2 * tau)
  assert want - 1e-3 <= est.log_volume <= want + n * math.log1p(2 * rtol) + 1e-3
  assert est.effective_sample_size > 15


def test_preconditioner_must_have_determinant_one():
  params = {"w": jnp.zeros((2, 3))}
  f = lambda p: 0.5 * jnp.sum(p["w"] ** 2)
  for bad, match in (({"w": jnp.full((2, 3), 2.0)}, "det P must be 1"),
                     ({"w": jnp.zeros((2, 3))}, "non-positive")):
    spec = basin.RandomDirections(jax.random.key(0), 4, norm="none", preconditioner=bad)
    with pytest.raises(ValueError, match=match):
      basin.radii(f, params, spec, threshold=1.0)
  with pytest.raises(ValueError, match="needs norm='none'"):
    basin.radii(f, params, basin.RandomDirections(jax.random.key(0), 4,
                                                  preconditioner={"w": jnp.ones((2, 3))}),
                threshold=1.0)
