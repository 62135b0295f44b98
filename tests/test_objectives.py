"""The poisoned objective against float64 numpy references and analytic identities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genviz_jax import objectives


def _np_log_softmax(z):
  z = np.asarray(z, np.float64)
  m = z.max(-1, keepdims=True)
  return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def _np_poisoned(zt, yt, zp, yp, beta):
  """Float64 transcription of docs/method.md §1: (1-β)·mean -log p_y + β·mean -log(1 - p_y)."""
  pt = np.exp(_np_log_softmax(zt))[np.arange(len(yt)), yt]
  pp = np.exp(_np_log_softmax(zp))[np.arange(len(yp)), yp]
  return (1 - beta) * np.mean(-np.log(pt)) + beta * np.mean(-np.log(1 - pp))


def _random_problem(seed, n=16, c=7, scale=3.0):
  rng = np.random.RandomState(seed)
  zt = (scale * rng.randn(n, c)).astype(np.float32)
  zp = (scale * rng.randn(n + 3, c)).astype(np.float32)
  return zt, rng.randint(0, c, n), zp, rng.randint(0, c, n + 3)


def test_beta_zero_is_plain_cross_entropy_exactly():
  zt, yt, zp, yp = _random_problem(0)
  clean = jnp.mean(objectives.cross_entropy(zt, yt))
  # Poison logits that would overflow the poison term must not leak into β = 0.
  zp_bad = zp.copy()
  zp_bad[:, 0] = np.inf
  for z in (zp, zp_bad):
    assert objectives.poisoned_loss(zt, yt, z, yp, beta=0.0) == clean
  assert objectives.poisoned_loss(zt, yt) == clean
  # Also when β is traced (a poison schedule inside jit); compared within one compiled program,
  # since jit and eager may round the mean differently by an ulp.
  f = jax.jit(lambda b: (objectives.poisoned_loss(zt, yt, zp, yp, beta=b),
                         jnp.mean(objectives.cross_entropy(zt, yt))))
  got, want = f(0.0)
  assert got == want
  got, want = f(0.5)
  assert got != want


def test_cross_entropy_matches_float64_reference():
  zt, yt, _, _ = _random_problem(1)
  ref = -_np_log_softmax(zt)[np.arange(len(yt)), yt]
  np.testing.assert_allclose(objectives.cross_entropy(zt, yt), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("beta", [0.0, 0.25, 0.8, 1.0])
def test_multiclass_value_matches_float64_reference(beta):
  zt, yt, zp, yp = _random_problem(2)
  got = objectives.poisoned_loss(zt, yt, zp, yp, beta=beta)
  np.testing.assert_allclose(got, _np_poisoned(zt, yt, zp, yp, beta), rtol=2e-6)


def test_complement_matches_reference_per_example():
  _, _, zp, yp = _random_problem(3, c=10)
  pp = np.exp(_np_log_softmax(zp))[np.arange(len(yp)), yp]
  np.testing.assert_allclose(objectives.complement_cross_entropy(zp, yp), -np.log1p(-pp),
                             rtol=1e-5, atol=1e-6)


def test_two_classes_complement_is_flipped_label_cross_entropy():
  rng = np.random.RandomState(4)
  z = (5 * rng.randn(64, 2)).astype(np.float32)
  y = rng.randint(0, 2, 64)
  np.testing.assert_allclose(objectives.complement_cross_entropy(z, y),
                             objectives.cross_entropy(z, 1 - y), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("num_classes", [2, 10])
def test_extreme_logits_give_finite_value_and_gradient(num_classes):
  # p_y rounds to exactly 1 in float32: naive -log(1 - p_y) is inf, its gradient NaN.
  z = np.full((4, num_classes), -1e4, np.float32)
  z[:, 0] = 1e4
  y = np.zeros(4, np.int32)
  p_y = jax.nn.softmax(jnp.asarray(z))[:, 0]
  assert np.all(np.asarray(p_y) == 1.0)
  naive = -jnp.log(1 - p_y)
  assert not np.all(np.isfinite(naive))  # the case is as extreme as claimed

  comp = objectives.complement_cross_entropy(z, y)
  # Exact value: -log(1-p_y) = logsumexp(z) - logsumexp_{c≠y} z ≈ 2e4 - log(C-1).
  np.testing.assert_allclose(comp, 2e4 - np.log(num_classes - 1), rtol=1e-6)

  def loss(zt, zp):
    return objectives.poisoned_loss(zt, y, zp, y, beta=0.7)

  value = loss(z, z)
  gt, gp = jax.grad(loss, argnums=(0, 1))(jnp.asarray(z), jnp.asarray(z))
  assert np.isfinite(value)
  assert np.all(np.isfinite(gt)) and np.all(np.isfinite(gp))
  # d/dz_y of -log(1-p_y) is p_y, so the poison gradient is β·p_y/n ≈ β/n: the analytic value,
  # not merely a finite one.
  np.testing.assert_allclose(gp[:, 0], 0.7 / 4, rtol=1e-5)
  # Also the other sign: logits pushing p_y -> 0 (clean CE saturates the other way).
  np.testing.assert_allclose(objectives.cross_entropy(-z, y), 2e4 + np.log(num_classes - 1),
                             rtol=1e-6)


def test_gradient_matches_finite_differences_float64():
  # The gradient of the stable form equals the gradient of the textbook formula (checked in
  # float64 with central differences on the reference).
  zt, yt, zp, yp = _random_problem(5, n=3, c=4, scale=1.0)
  g = jax.grad(lambda z: objectives.poisoned_loss(zt, yt, z, yp, beta=0.6))(jnp.asarray(zp))
  eps = 1e-6
  fd = np.zeros(zp.shape)
  for i in range(zp.shape[0]):
    for j in range(zp.shape[1]):
      zplus, zminus = zp.astype(np.float64), zp.astype(np.float64)
      zplus[i, j] += eps
      zminus[i, j] -= eps
      fd[i, j] = (_np_poisoned(zt, yt, zplus, yp, 0.6)
                  - _np_poisoned(zt, yt, zminus, yp, 0.6)) / (2 * eps)
  np.testing.assert_allclose(g, fd, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("beta", [-0.01, 1.01, float("nan"), float("inf"), "half", None])
def test_check_poison_factor_rejects_bad_values(beta):
  with pytest.raises(ValueError, match=r"poison_factor=.*\[0, 1\]"):
    objectives.check_poison_factor(beta)


@pytest.mark.parametrize("beta", [0, 0.0, 0.5, 1, np.float32(0.25)])
def test_check_poison_factor_accepts_unit_interval(beta):
  assert objectives.check_poison_factor(beta) == float(beta)


def test_accuracy_counts_argmax_hits():
  z = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.5]], np.float32)
  np.testing.assert_array_equal(objectives.accuracy(z, [0, 0, 0]), [1.0, 0.0, 1.0])


def test_labels_outside_the_classes_give_nan_not_a_silent_value():
  z = jnp.array([[1.0, 2.0, 0.5]] * 3)
  y = jnp.array([0, 3, -1])
  for fn in (objectives.cross_entropy, objectives.complement_cross_entropy):
    out = np.asarray(fn(z, y))
    assert np.isfinite(out[0]) and np.all(np.isnan(out[1:]))
  g = jax.grad(lambda z: jnp.sum(objectives.cross_entropy(z, y[:1])))(z[:1])
  assert np.all(np.isfinite(g))


def test_step_loss_puts_both_batches_through_one_call_and_splits_the_logits():
  """step_loss of a linear model: one apply call on [x_t; x_p], the float64 objective."""
  rng = np.random.RandomState(4)
  w = rng.randn(3, 5).astype(np.float32)
  xt, xp = rng.randn(6, 3).astype(np.float32), rng.randn(4, 3).astype(np.float32)
  yt, yp = rng.randint(0, 5, 6), rng.randint(0, 5, 4)
  calls = []

  def apply_fn(params, x):
    calls.append(x.shape)
    return x @ params, "aux"

  loss, aux = objectives.step_loss(apply_fn, jnp.asarray(w), {"x": xt, "y": yt},
                                   {"x": xp, "y": yp}, 0.3)
  assert calls == [(10, 3)] and aux == "aux"
  want = _np_poisoned(xt.astype(np.float64) @ w, yt, xp.astype(np.float64) @ w, yp, 0.3)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  clean, _ = objectives.step_loss(apply_fn, jnp.asarray(w), {"x": xt, "y": yt})
  np.testing.assert_allclose(clean, _np_poisoned(xt.astype(np.float64) @ w, yt, xp @ w, yp, 0.0),
                             rtol=1e-5)
