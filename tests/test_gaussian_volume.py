"""Gaussian-prior basin mass (basin.gaussian) against closed forms that do not use its code.

Closed forms: the chi-square CDF (a ball centred at the prior mean), the Poisson-tail sum of the
incomplete gamma function (the underflowing lower tail), Imhof's inversion formula for a weighted
sum of chi-squares (an anisotropic quadratic basin) with a Monte Carlo cross-check, and the
noncentral chi-square CDF (a ball with the prior mean away from its centre).
"""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special, stats

from genviz_jax import basin
from genviz_jax import directions as directions_lib
from genviz_jax.basin import gaussian


def _log_chi2_cdf(x, n, nc=None):
  """log of the (noncentral) chi-square CDF, from scipy.stats, keeping digits near 1."""
  dist = stats.chi2(n) if nc is None else stats.ncx2(n, nc)
  sf = dist.sf(x)
  return math.log1p(-sf) if sf < 0.5 else math.log(dist.cdf(x))


def _poisson_tail_log_p(a: int, x: float, terms: int = 400_000) -> float:
  # P(a, x) = e^{-x} Σ_{k>=a} x^k / k! for integer a (Poisson tail), in log space.
  k = np.arange(a, a + terms, dtype=np.float64)
  return -x + float(special.logsumexp(k * math.log(x) - special.gammaln(k + 1)))


def _imhof_cdf(lam, x):
  """P(Σ λ_i z_i² <= x), z standard normal (Imhof 1961, eq. 3.2), by quadrature."""
  lam = np.asarray(lam, np.float64)

  def integrand(u):
    theta = 0.5 * np.sum(np.arctan(lam * u)) - 0.5 * x * u
    rho = np.prod((1 + (lam * u) ** 2) ** 0.25)
    return math.sin(theta) / (u * rho)

  val, err = integrate.quad(integrand, 0, np.inf, limit=2000, epsabs=1e-13, epsrel=1e-12)
  assert err < 1e-9
  return 0.5 - val / math.pi


def _uniform_directions(rng, k, n):
  g = rng.standard_normal((k, n))
  return g / np.linalg.norm(g, axis=1, keepdims=True)


# ------------------------------------------------------------------ centred prior: chi-square CDF


@pytest.mark.parametrize("n", [1, 10, 1000])
@pytest.mark.parametrize("ratio", [0.5, 0.98, 1.0, 1.5])
def test_centred_ball_is_the_chi_square_cdf(n, ratio):
  # L = |θ - θ*|² < τ, prior N(θ*, σ²I): every ray's radius is √τ and M = chi2.cdf(τ/σ², n).
  sigma = 0.3
  tau = ratio * n * sigma ** 2
  est = gaussian.log_gaussian_mass(np.full(8, math.sqrt(tau)), n, sigma, num_bootstrap=20)
  want = _log_chi2_cdf(tau / sigma ** 2, n)
  # 1e-10 relative in log M; near M = 1 (log M = -1e-22 at n = 1000, ratio 1.5) the floor is the
  # logsumexp of the K terms: 1e-15 absolute in log M, i.e. 1e-15 relative in M itself.
  tol = 1e-10 * abs(want) + 1e-15
  assert abs(est.log_mass - want) <= tol
  assert abs(est.log10_mass - want / math.log(10)) <= tol
  assert abs(est.ci[0] - want) <= tol and abs(est.ci[1] - want) <= tol
  assert est.effective_sample_size == pytest.approx(8) and est.max_share == pytest.approx(1 / 8)
  assert est.measure == "gaussian-prior (σ=0.3)" and est.offset_norm == 0.0
  assert abs(est.to_json()["log10_mass"] - want / math.log(10)) <= tol


@pytest.mark.parametrize("n,ratio", [(10**6, 0.3), (2 * 10**6, 0.9), (10**7, 0.998)])
def test_tiny_masses_take_the_series_and_match_the_poisson_tail(n, ratio):
  # r² ≪ nσ²: P(n/2, r²/2σ²) underflows float64 (first two cases: ~10^-10^5 and ~10^-2400),
  # or scipy's gammainc is inaccurate (third: a = 5·10^6, P ~ 1e-3); the series path must still
  # give log P to ~1e-12 relative. Reference: the Poisson-tail sum (independent formula).
  sigma = 2.0
  x = 0.5 * ratio * n
  r = math.sqrt(2 * x) * sigma
  if ratio < 0.95:
    assert special.gammainc(n / 2, x) == 0.0  # the underflowing path really is exercised
  want = _poisson_tail_log_p(n // 2, x)
  est = gaussian.log_gaussian_mass([r, r], n, sigma, num_bootstrap=0)
  assert math.isfinite(est.log_mass)
  # The reference's own rounding: its terms k·log x are ~n·log n, so ~eps·n·log n absolute.
  assert abs(est.log_mass - want) <= 1e-11 * abs(want) + 2e-16 * n * math.log(n)


def test_log_gamma_p_paths_agree_at_their_borders():
  # Each side of every switch (P = 1/2, x = a - 2√a, P = 1e-280) against the Poisson tail.
  for a in (50, 5000):
    for x in (a - 2 * math.sqrt(a) - 1e-9, a - 2 * math.sqrt(a) + 1e-9, a - 0.6, a + 0.6):
      assert float(gaussian.log_gamma_p(a, x)) == pytest.approx(_poisson_tail_log_p(a, x),
                                                               rel=1e-11, abs=1e-13)


# ------------------------------------------------------ anisotropic quadratic: weighted chi-square

_A = np.array([0.5, 1.0, 2.0, 4.0, 8.0, 16.0])
_TAU, _SIGMA = 6.0, 1.0


def _anisotropic_exact():
  # M = P(Σ a_i θ_i² < τ) for θ ~ N(0, σ²I) = P(Σ (a_i σ²) z_i² < τ).
  return _imhof_cdf(_A * _SIGMA ** 2, _TAU)


def test_imhof_reference_agrees_with_monte_carlo():
  # The reference itself, checked independently: 10^6 prior samples (binomial sd ~ 4e-4).
  z = np.random.default_rng(0).standard_normal((10**6, _A.size))
  mc = float(np.mean(np.sum(_A * (_SIGMA * z) ** 2, axis=1) < _TAU))
  exact = _anisotropic_exact()
  assert abs(mc - exact) < 5 * math.sqrt(exact * (1 - exact) / 1e6)


def test_anisotropic_basin_rays_agree_with_the_weighted_chi_square():
  # r(u) = sqrt(τ / Σ a_i u_i²) along uniform u: the ray estimator's interval holds the exact mass.
  u = _uniform_directions(np.random.default_rng(1), 20000, _A.size)
  r = np.sqrt(_TAU / np.sum(_A * u * u, axis=1))
  est = gaussian.log_gaussian_mass(r, _A.size, _SIGMA, num_bootstrap=400, seed=1)
  want = math.log(_anisotropic_exact())
  assert est.ci[0] <= want <= est.ci[1]
  assert est.ci[1] - est.ci[0] < 0.05


def _quadratic(a, shape):
  aj = jnp.asarray(np.reshape(a, shape), jnp.float32)
  return lambda p: jnp.sum(aj * jnp.square(p["w"]))


def test_importance_sampling_same_mass_higher_ess():
  # Through the engine: uniform (Gaussian) directions vs directions P·g with P ∝ a^{-1/2}, det 1
  # (the curvature-matched preconditioner). Both intervals hold the exact mass; P's ESS is higher.
  shape = (2, 3)
  params = {"w": jnp.zeros(shape, jnp.float32)}
  f = _quadratic(_A, shape)
  want = math.log(_anisotropic_exact())
  plain = basin.radii(f, params, basin.RandomDirections(jax.random.key(5), 3000, norm="none"),
                      threshold=_TAU, rtol=1e-6, chunk_size=1000)
  precond = basin.diagonal_preconditioner({"w": np.reshape(_A, shape)}, params, eps=0.0)
  spec = basin.RandomDirections(jax.random.key(6), 3000, norm="none", preconditioner=precond)
  weighted = basin.radii(f, params, spec, threshold=_TAU, rtol=1e-6, chunk_size=1000)
  m_plain = plain.gaussian_mass(_SIGMA, num_bootstrap=400, seed=2)
  m_is = weighted.gaussian_mass(_SIGMA, num_bootstrap=400, seed=3)
  for m in (m_plain, m_is):
    assert m.ci[0] <= want <= m.ci[1]
  ratio = m_is.effective_sample_size / m_plain.effective_sample_size
  # Measured (these seeds): ESS 930 (uniform) vs 2299 (preconditioned) of 3000, ratio 2.47;
  # the 95% intervals are 0.114 and 0.037 wide. (The volume's ESS: 278 vs 3000.)
  assert ratio > 2.0
  assert m_is.max_share < m_plain.max_share
  # The unweighted preconditioned rays are biased: the weight is doing the work.
  biased = gaussian.log_gaussian_mass(weighted.euclidean(), weighted.dim, _SIGMA, num_bootstrap=0)
  assert abs(biased.log_mass - want) > 0.2


# ------------------------------------------------------------ offset prior: noncentral chi-square


@pytest.mark.parametrize("radius,offset,sigma", [(1.0, 0.4, 1.0), (0.5, 2.0, 0.7),
                                                 (3.0, -1.3, 0.5), (0.2, 0.0, 1.0)])
def test_offset_prior_in_one_dimension_is_the_noncentral_chi_square(radius, offset, sigma):
  # n = 1: the sphere is {+1, -1}, so a two-sided row is the exact average. With b = +1·(μ - θ*):
  # M = Φ((R - m)/σ) - Φ((-R - m)/σ) = ncx2.cdf(R²/σ², 1, m²/σ²).
  est = gaussian.log_gaussian_mass([[radius, radius]], 1, sigma, projection=[offset],
                                   offset_norm=abs(offset), num_bootstrap=0)
  want_erf = math.log(stats.norm.cdf((radius - offset) / sigma)
                      - stats.norm.cdf((-radius - offset) / sigma))
  if offset == 0.0:
    want = _log_chi2_cdf((radius / sigma) ** 2, 1)
  else:
    want = _log_chi2_cdf((radius / sigma) ** 2, 1, (offset / sigma) ** 2)
  assert want == pytest.approx(want_erf, rel=1e-9)
  assert abs(est.log_mass - want) <= 1e-10 * abs(want)


@pytest.mark.parametrize("radius,offset,sigma", [(1.0, 0.5, 1.0), (2.0, 3.0, 0.8),
                                                 (0.3, 1.0, 0.4)])
def test_offset_prior_in_two_dimensions_is_the_noncentral_chi_square(radius, offset, sigma):
  # n = 2, K equally spaced angles: the mean over them is the trapezoid rule for a smooth periodic
  # function of the angle, exact to rounding for K = 256. Ball radius R around θ*, μ - θ* = (m, 0).
  k = 256
  phi = 2 * np.pi * np.arange(k) / k
  est = gaussian.log_gaussian_mass(np.full(k, radius), 2, sigma, projection=offset * np.cos(phi),
                                   offset_norm=offset, num_bootstrap=0)
  want = _log_chi2_cdf((radius / sigma) ** 2, 2, (offset / sigma) ** 2)
  assert abs(est.log_mass - want) <= 1e-10 * abs(want)


@pytest.mark.parametrize("n", [3, 1000, 10**6])
def test_offset_path_at_zero_offset_is_the_centred_one(n):
  # The quadrature of the offset path against the chi-square CDF (β = 0), from r² = 0.3n to 1.5n
  # (n = 10^6: the Poisson-tail sum, as chi2.cdf underflows at 0.3n).
  for ratio in (0.3, 0.9, 1.0, 1.1, 1.5):
    ri = math.sqrt(n * ratio)
    est = gaussian.log_gaussian_mass([ri], n, 1.0, projection=[0.0], offset_norm=0.0,
                                     num_bootstrap=0)
    want = _log_chi2_cdf(ri ** 2, n) if n < 10**6 else _poisson_tail_log_p(n // 2, ri ** 2 / 2)
    assert abs(est.log_mass - want) <= 1e-12 * abs(want) + 2e-16 * n * math.log(n)


def test_offset_prior_in_ten_dimensions_within_the_interval():
  # Random uniform directions, n = 10: the Monte Carlo estimate's interval holds ncx2.cdf.
  n, radius, offset, sigma = 10, 3.5, 1.5, 1.0
  u = _uniform_directions(np.random.default_rng(2), 20000, n)
  est = gaussian.log_gaussian_mass(np.full(len(u), radius), n, sigma, projection=u[:, 0] * offset,
                                   offset_norm=offset, num_bootstrap=400)
  want = _log_chi2_cdf((radius / sigma) ** 2, n, (offset / sigma) ** 2)
  assert est.ci[0] <= want <= est.ci[1]
  assert est.ci[1] - est.ci[0] < 0.05


# ----------------------------------------------------------------------- the engine, end to end


def test_engine_radii_gaussian_mass_is_the_chi_square_cdf():
  # ½|w|² < τ through basin.radii (bisection): radius r̂ in [r*, r*(1 + rtol)], r* = √(2τ), so
  # log M̂ - log M is in [0, n·log(1 + rtol)] (the mass of a ball grows at most like its volume),
  # plus float32 rounding of radius and ||d|| (~1e-7 relative each, n times): the tolerance below.
  shape, tau, sigma, rtol = (2, 5), 4.0, 1.2, 1e-6
  n = int(np.prod(shape))
  params = {"w": jnp.zeros(shape, jnp.float32)}
  res = basin.radii(lambda p: 0.5 * jnp.sum(jnp.square(p["w"])), params,
                    basin.RandomDirections(jax.random.key(4), 32, norm="none"), threshold=tau,
                    rtol=rtol, r_init=0.01)
  est = res.gaussian_mass(sigma, num_bootstrap=50)
  want = _log_chi2_cdf(2 * tau / sigma ** 2, n)
  slack = n * (math.log1p(rtol) + 4e-7)
  assert want - n * 4e-7 <= est.log_mass <= want + slack
  assert est.effective_sample_size > 31.9


def test_engine_offset_prior_at_zero_matches_the_noncentral_chi_square():
  # ½|w - w*|² < τ around θ* = w*, prior N(0, σ²I) (Scherlis & Belrose's origin-centred prior):
  # offset_projections regenerates the sweep's directions; M = ncx2.cdf(2τ/σ², n, |w*|²/σ²).
  shape, tau, sigma = (2, 3), 2.0, 1.0
  wstar = np.array([[0.3, -0.5, 0.2], [0.1, 0.4, -0.2]], np.float32)
  params = {"w": jnp.asarray(wstar)}
  loss = lambda p: 0.5 * jnp.sum(jnp.square(p["w"] - wstar))
  spec = basin.RandomDirections(jax.random.key(7), 3000, norm="none")
  res = basin.radii(loss, params, spec, threshold=tau, rtol=1e-6, chunk_size=1000)
  b, m = gaussian.offset_projections(spec, params, {"w": np.zeros(shape)}, chunk_size=700)
  assert m == pytest.approx(float(np.linalg.norm(wstar)), rel=1e-6)
  # The projections are those of the generated directions.
  d3 = np.asarray(directions_lib.random_direction(spec.key, params, 3, norm="none")["w"])
  assert b[3] == pytest.approx(float(np.sum(d3 * -wstar) / np.linalg.norm(d3)), rel=1e-5)
  est = res.gaussian_mass(sigma, projection=b, offset_norm=m, num_bootstrap=400)
  want = _log_chi2_cdf(2 * tau / sigma ** 2, 6, m ** 2 / sigma ** 2)
  assert est.ci[0] <= want <= est.ci[1]
  assert est.offset_norm == pytest.approx(m)


# ----------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kwargs,match", [
    (dict(sigma=0.0), "sigma=0.0"),
    (dict(sigma=float("inf")), "sigma=inf"),
    (dict(projection=[0.1, 0.2]), "projection and offset_norm go together"),
    (dict(projection=[0.1, 0.2], offset_norm=-1.0), "offset_norm=-1.0"),
    (dict(projection=[0.1, 2.0], offset_norm=1.0), "cannot exceed"),
    (dict(projection=[0.1], offset_norm=1.0), "projection has shape"),
    (dict(dim=0), "dim=0"),
])
def test_bad_input(kwargs, match):
  args = dict(radii=[1.0, 2.0], dim=3, sigma=1.0) | kwargs
  with pytest.raises(ValueError, match=match):
    gaussian.log_gaussian_mass(**args)


def test_gaussian_mass_needs_euclidean_radii():
  params = {"w": jnp.ones((2, 2), jnp.float32)}
  res = basin.radii(lambda p: jnp.sum(jnp.square(p["w"] - 1.0)), params,
                    basin.RandomDirections(jax.random.key(0), 4), threshold=5.0)
  assert res.measure == "filter-normalized"
  with pytest.raises(ValueError, match="needs Euclidean radii"):
    res.gaussian_mass(1.0)


# ------------------------------------------------------------------------------ the basin binary


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory):
  from genviz_jax import train
  from genviz_jax.configs import swissroll
  c = swissroll.get_config("quick")
  c.num_steps = 200
  c.log_every = c.eval_every = c.checkpoint_every = 100
  c.lr_boundaries = ()
  c.plot = False
  path = str(tmp_path_factory.mktemp("runs") / "good")
  train.train_and_evaluate(c, path)
  return path


def _basin_config(**overrides):
  from genviz_jax.configs import basin as basin_cfg
  c = basin_cfg.get_config("gaussian")
  c.num_directions, c.chunk_size, c.num_bootstrap, c.threshold = 64, 32, 50, 0.5
  for k, v in overrides.items():
    c[k] = v
  return c


@pytest.mark.parametrize("centre", ["minimum", pytest.param("zero", marks=pytest.mark.slow)])
def test_basin_job_reports_both_measures_with_adam_preconditioner(trained_workdir, tmp_path,
                                                                   centre):
  from genviz_jax.jobs import basin as basin_job
  outdir = str(tmp_path / "basin")
  summary = basin_job.run(_basin_config(prior_sigma=0.5, prior_centre=centre), trained_workdir,
                          outdir)
  with open(os.path.join(outdir, "basin.json")) as f:
    saved = json.load(f)
  assert saved["preconditioner"] == "adam" and saved["measure"] == "isotropic"
  prior = saved["gaussian_prior"]
  assert prior["measure"] == "gaussian-prior (σ=0.5)" and prior["centre"] == centre
  for block in (saved, prior):
    assert 1 <= block["effective_sample_size"] <= 64 and 0 < block["max_share"] <= 1
  assert math.isfinite(prior["log10_mass"])
  assert prior["log10_mass_ci"][0] <= prior["log10_mass_ci"][1]
  assert math.isfinite(saved["log10_volume"])
  if centre == "minimum":
    assert prior["log10_mass"] <= 0 and prior["offset_norm"] == 0
  else:
    assert prior["offset_norm"] > 0
  assert summary["gaussian_prior"]["log10_mass"] == pytest.approx(prior["log10_mass"])


@pytest.mark.parametrize("overrides,match", [
    (dict(norm="filter"), "preconditioner='adam' needs config.norm='none'"),
    (dict(preconditioner="", norm="filter"), "prior_sigma=1.0 needs config.norm='none'"),
    (dict(preconditioner="sgd"), "preconditioner='sgd'"),
    (dict(prior_sigma=-1.0), "prior_sigma=-1.0"),
    (dict(prior_centre="init"), "prior_centre='init'"),
    (dict(preconditioner_batch_size=-1), "preconditioner_batch_size=-1"),
])
def test_basin_config_combinations_are_one_line_errors(overrides, match):
  from genviz_jax.jobs import basin as basin_job
  with pytest.raises(ValueError, match=match) as e:
    basin_job.check_config(_basin_config(**overrides))
  assert "\n" not in str(e.value)
