"""Hessian module against independent values: analytic quadratics, finite differences, dense Hessian."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from genviz_jax import data as gdata
from genviz_jax import hessian
from genviz_jax import models


def _rotated(eigs, seed=0):
  """A = Q diag(eigs) Q^T with a random orthogonal Q (float64 numpy)."""
  rng = np.random.RandomState(seed)
  q, _ = np.linalg.qr(rng.randn(len(eigs), len(eigs)))
  return (q * np.asarray(eigs, np.float64)) @ q.T


def _quadratic(a):
  """loss(params) = ½ θ^T A θ + 1^T θ with θ split into a two-leaf pytree (Hessian = A)."""
  n = a.shape[0]
  a = jnp.asarray(a)
  params = {"u": jnp.zeros((n // 2, 1), a.dtype), "w": jnp.zeros((n - n // 2,), a.dtype)}

  def loss(p):
    t = ravel_pytree(p)[0]
    return 0.5 * t @ a @ t + jnp.sum(t)

  return loss, params


def test_quadratic_top_eigenvalues_exact():
  eigs = np.concatenate([[9.0, 7.5, 5.0, 3.0, 2.5], np.linspace(-1.0, 2.0, 35)])
  with jax.enable_x64(True):
    loss, params = _quadratic(_rotated(eigs))
    op = hessian.HessianOperator(loss, params)
    res = hessian.top_eigenpairs(op, k=5, num_steps=40)
    np.testing.assert_allclose(res.eigenvalues, eigs[:5], rtol=1e-10)
    # Eigenvectors: H v = λ v.
    for lam, v in zip(res.eigenvalues, res.eigenvectors):
      np.testing.assert_allclose(op.matvec(v), lam * v, atol=1e-9)
    assert np.all(res.residuals < 1e-8)
    assert res.smallest == pytest.approx(-1.0, abs=1e-10)


def test_lanczos_breakdown_gives_no_spurious_ritz_values():
  # 3 distinct eigenvalues: the Krylov space is exhausted after 3 steps; the next 7 steps restart.
  eigs = np.repeat([6.0, 2.0, -1.0], [5, 10, 15])
  with jax.enable_x64(True):
    loss, params = _quadratic(_rotated(eigs, seed=3))
    op = hessian.HessianOperator(loss, params)
    res = hessian.top_eigenpairs(op, k=4, num_steps=10)
  assert res.num_restarts >= 1
  # Every Ritz value is a true eigenvalue (with multiplicity it shows up again after restarts).
  for lam in res.eigenvalues:
    assert np.min(np.abs(lam - np.array([6.0, 2.0, -1.0]))) < 1e-8
  assert res.eigenvalues[0] == pytest.approx(6.0, abs=1e-10)


def test_float32_quadratic_top_eigenvalues():
  eigs = np.concatenate([[50.0, 30.0, 20.0], np.linspace(0.0, 5.0, 97)])
  loss, params = _quadratic(_rotated(eigs, seed=1).astype(np.float32))
  res = hessian.top_eigenpairs(hessian.HessianOperator(loss, params), k=3, num_steps=60)
  np.testing.assert_allclose(res.eigenvalues, eigs[:3], rtol=1e-4)


def test_hutchinson_interval_covers_the_trace():
  eigs = np.linspace(-2.0, 10.0, 60)
  with jax.enable_x64(True):
    loss, params = _quadratic(_rotated(eigs, seed=2))
    op = hessian.HessianOperator(loss, params)
    est = hessian.hutchinson_trace(op, num_samples=30, key=jax.random.PRNGKey(0))
    assert est.ci[0] <= eigs.sum() <= est.ci[1]
    assert est.stderr > 0  # a rotated (non-diagonal) A: the estimator is not exact
    # Coverage over many seeds close to the nominal 95%.
    covered = [lo <= eigs.sum() <= hi for lo, hi in (
        hessian.hutchinson_trace(op, num_samples=30, key=jax.random.PRNGKey(s)).ci
        for s in range(1, 61))]
  assert 0.85 <= np.mean(covered) <= 1.0


def test_slq_puts_mass_at_the_eigenvalues():
  values, mult = np.array([1.0, 4.0, 10.0]), np.array([100, 60, 40])
  eigs = np.repeat(values, mult)
  with jax.enable_x64(True):
    loss, params = _quadratic(_rotated(eigs, seed=4))
    res = hessian.slq(hessian.HessianOperator(loss, params), num_runs=20, num_steps=8)
  # Nodes carrying weight are the eigenvalues; restart nodes carry none.
  dist = np.min(np.abs(res.nodes[..., None] - values), axis=-1)
  assert np.all(res.weights[dist > 1e-6] < 1e-12)
  np.testing.assert_allclose(res.weights.sum(axis=1), 1.0, atol=1e-10)
  frac = [res.weights[np.abs(res.nodes - v) < 1e-6].sum() / res.nodes.shape[0] for v in values]
  np.testing.assert_allclose(frac, mult / mult.sum(), atol=0.06)
  assert res.trace == pytest.approx(eigs.sum(), rel=0.1)
  grid, dens = hessian.spectral_density(res)
  assert np.trapezoid(dens, grid) == pytest.approx(1.0, abs=1e-6)
  for v, f in zip(values, mult / mult.sum()):
    window = np.abs(grid - v) < 0.2
    assert np.trapezoid(dens[window], grid[window]) == pytest.approx(f, abs=0.07)


def _swissroll_setup(widths, activation, dtype):
  ds = gdata.swiss_roll()
  model = models.MLP(widths, 2, activation=activation)
  params = model.init(jax.random.PRNGKey(0), ds.train["x"][:1])["params"]
  params = jax.tree_util.tree_map(lambda a: a.astype(dtype), params)
  data = {"x": jnp.asarray(ds.train["x"], dtype), "y": jnp.asarray(ds.train["y"])}
  return models.metric_fn(model), params, data


def test_hvp_matches_finite_differences_and_chunking_is_exact():
  with jax.enable_x64(True):
    loss_fn, params, data = _swissroll_setup([16, 16], "tanh", jnp.float64)
    flat, unravel = ravel_pytree(params)
    v = jax.random.normal(jax.random.PRNGKey(5), flat.shape, jnp.float64)
    grad = jax.jit(lambda t: ravel_pytree(hessian.loss_and_grad(loss_fn, unravel(t), data)[1])[0])
    h = 1e-5
    fd = (grad(flat + h * v) - grad(flat - h * v)) / (2 * h)
    hv = ravel_pytree(jax.jit(lambda p, u: hessian.hvp(loss_fn, p, u, data))(params, unravel(v)))[0]
    np.testing.assert_allclose(hv, fd, rtol=1e-6, atol=1e-8 * np.abs(fd).max())
    # 200 = 3·64 + 8: full chunks plus a ragged remainder, weighted exactly.
    op = hessian.HessianOperator(loss_fn, params, data, data_batch=64)
    np.testing.assert_allclose(op.matvec(v), hv, rtol=1e-10, atol=1e-12)
    loss_c, g_c = op.loss_and_grad()
    loss_full = loss_fn(params, data)["loss"]
    assert float(loss_c) == pytest.approx(float(loss_full), rel=1e-12)
    np.testing.assert_allclose(g_c, grad(flat), rtol=1e-10, atol=1e-13)


def _compare_with_dense(widths, k, num_steps, seed=0):
  with jax.enable_x64(True):
    loss_fn, params, data = _swissroll_setup(widths, "relu", jnp.float64)
    # Move off the initialization (a few full-batch gradient steps) so the Hessian is not the
    # low-rank one of a fresh net.
    step = jax.jit(lambda p: jax.tree_util.tree_map(
        lambda a, b: a - 0.5 * b, p, hessian.loss_and_grad(loss_fn, p, data)[1]))
    for _ in range(20):
      params = step(params)
    flat, unravel = ravel_pytree(params)
    op = hessian.HessianOperator(loss_fn, params, data, data_batch=128)
    res = hessian.top_eigenpairs(op, k=k, num_steps=num_steps, key=jax.random.PRNGKey(seed))
    dense = jax.jit(jax.hessian(lambda t: loss_fn(unravel(t), data)["loss"]))(flat)
    exact = np.linalg.eigvalsh(np.asarray(dense))[::-1][:k]
  np.testing.assert_allclose(res.eigenvalues, exact, rtol=1e-4)
  return flat.shape[0]


def test_small_mlp_top_eigenvalues_match_dense_hessian():
  n = _compare_with_dense([12, 10], k=3, num_steps=40)
  assert n == 2 * 12 + 12 + 12 * 10 + 10 + 10 * 2 + 2


@pytest.mark.slow
def test_swissroll_mlp_top_eigenvalues_match_dense_hessian():
  """The paper's 3646-parameter MLP: Lanczos vs eigvalsh of the dense jax.hessian (~1 min)."""
  n = _compare_with_dense([23, 16, 26, 32, 28, 31], k=5, num_steps=80)
  assert n == 3646


def test_bad_input_is_a_clear_error():
  loss, params = _quadratic(_rotated(np.arange(1.0, 7.0)).astype(np.float32))
  op = hessian.HessianOperator(loss, params)
  with pytest.raises(ValueError, match="k=7 must be an integer between 1 and the parameter count 6"):
    hessian.top_eigenpairs(op, k=7)
  with pytest.raises(ValueError, match="k=0"):
    hessian.top_eigenpairs(op, k=0)
  with pytest.raises(ValueError, match="num_samples=1"):
    hessian.hutchinson_trace(op, num_samples=1)
  with pytest.raises(ValueError, match="num_runs=0 must be an integer >= 1"):
    hessian.slq(op, num_runs=0)
  with pytest.raises(ValueError, match="num_steps=7 must be an integer between 1 and the "
                     "parameter count 6"):
    hessian.slq(op, num_runs=1, num_steps=7)
  with pytest.raises(ValueError, match="data_batch=0"):
    hessian.HessianOperator(lambda p, b: jnp.sum(p * b["x"].mean()), jnp.ones(3),
                            {"x": jnp.ones((4, 3))}, data_batch=0)
  nan_op = hessian.HessianOperator(lambda p: jnp.sum(jnp.log(p) ** 2), -jnp.ones(4))
  with pytest.raises(ValueError, match="non-finite Hessian-vector product"):
    hessian.top_eigenpairs(nan_op, k=1)
  with pytest.raises(ValueError, match="needs a 'loss' entry"):
    hessian.HessianOperator(lambda p: {"accuracy": jnp.sum(p)}, jnp.ones(2)).matvec(jnp.ones(2))
