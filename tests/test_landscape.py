"""Landscapes against slow reference loops and closed forms; grid orientation; bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genviz_jax import data, directions, landscape, models

_SETUP = []


def _mlp():
  if not _SETUP:
    ds = data.swiss_roll(num_train=40, num_test=24, num_poison=2)
    model = models.MLP(widths=(10, 8), num_classes=2)
    params = model.init(jax.random.key(1), ds.train["x"][:1])["params"]
    _SETUP.append((models.metric_fn(model), params, ds))
  return _SETUP[0]


def _slow(fn, params, batch, delta):
  """Reference: one un-batched evaluation (float64 comparison tolerance 1e-6)."""
  p = jax.tree.map(lambda a, d: a + d, params, delta)
  return {k: float(v) for k, v in jax.jit(fn)(p, batch).items()}


def test_line_matches_a_slow_loop():
  fn, params, ds = _mlp()
  d = directions.random_direction(jax.random.key(0), params, 0)
  alphas = np.linspace(-1, 1, 13)
  out = landscape.line(fn, params, d, alphas, data=ds.train, chunk_size=5, point_batch=2)
  assert set(out) == {"loss", "accuracy"} and out["loss"].shape == (13,)
  for i, a in enumerate(alphas):
    ref = _slow(fn, params, ds.train, jax.tree.map(lambda x: a * x, d))
    assert out["loss"][i] == pytest.approx(ref["loss"], rel=1e-6, abs=1e-7)
    assert out["accuracy"][i] == pytest.approx(ref["accuracy"], abs=1e-6)


def test_plane_orientation_and_values():
  fn, params, ds = _mlp()
  basis = landscape.random_basis(jax.random.key(2), params, 2)
  ref_basis = directions.random_directions(jax.random.key(2), params, 2)
  for a, b in zip(jax.tree.leaves(basis), jax.tree.leaves(ref_basis)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)  # jit vs eager: last-ulp fusion
  axis, grids = landscape.plane(fn, params, basis, num=5, lo=-0.5, hi=1.0, data=ds.test,
                                data_batch=7)
  assert grids["loss"].shape == (5, 5)
  for i, j in [(0, 4), (4, 0), (2, 3)]:
    delta = jax.tree.map(lambda x: axis[i] * x[0] + axis[j] * x[1], basis)
    assert grids["loss"][i, j] == pytest.approx(_slow(fn, params, ds.test, delta)["loss"],
                                                rel=1e-5)
  # Centre of an odd grid containing 0: the metric at θ itself.
  axis0, g0 = landscape.plane(fn, params, basis, num=3, data=ds.test)
  assert g0["loss"][1, 1] == pytest.approx(_slow(fn, params, ds.test,
                                                 jax.tree.map(jnp.zeros_like, params))["loss"],
                                           rel=1e-6)


def test_surface_of_a_quadratic_without_data():
  # ½|w|² along two orthonormal directions: ½(x² + y²) exactly.
  params = {"w": jnp.zeros((3, 2))}
  e1 = {"w": jnp.zeros((3, 2)).at[0, 0].set(1.0)}
  e2 = {"w": jnp.zeros((3, 2)).at[2, 1].set(1.0)}
  coords = np.array([[0.0, 0.0], [1.0, 2.0], [-3.0, 0.5]])
  out = landscape.surface(lambda p: 0.5 * jnp.sum(p["w"] ** 2), params, [e1, e2], coords)
  np.testing.assert_allclose(out["loss"], 0.5 * np.sum(coords ** 2, axis=1), rtol=1e-6)


def test_interpolation_endpoints_are_the_two_minima():
  fn, params_a, ds = _mlp()
  params_b = jax.tree.map(lambda x: x + 0.3 * jnp.sign(x) + 0.05, params_a)  # biases move too
  alphas, out = landscape.interpolation(fn, params_a, params_b, np.array([0.0, 0.5, 1.0]),
                                        data=ds.train)
  assert out["loss"][0] == pytest.approx(_slow(fn, params_a, ds.train,
                                               jax.tree.map(jnp.zeros_like, params_a))["loss"],
                                         rel=1e-6)
  diff = jax.tree.map(lambda a, b: b - a, params_a, params_b)
  assert out["loss"][2] == pytest.approx(_slow(fn, params_a, ds.train, diff)["loss"], rel=1e-5)
  alphas, default = landscape.interpolation(fn, params_a, params_b, data=ds.train)
  assert alphas[0] == -0.5 and alphas[-1] == 1.5 and 0.0 in alphas and 1.0 in alphas


def test_on_splits_names_keys():
  fn, params, ds = _mlp()
  d = directions.random_direction(jax.random.key(0), params, 0)
  alphas = np.array([0.0, 0.7])
  import functools
  out = landscape.on_splits(functools.partial(landscape.line, fn, params, d, alphas),
                            {"train": ds.train, "test": ds.test})
  assert set(out) == {"train/loss", "train/accuracy", "test/loss", "test/accuracy"}
  # Each prefixed key holds that split's values: the slow reference on the same split.
  for split, batch in [("train", ds.train), ("test", ds.test)]:
    for i, a in enumerate(alphas):
      ref = _slow(fn, params, batch, jax.tree.map(lambda x: a * x, d))
      assert out[f"{split}/loss"][i] == pytest.approx(ref["loss"], rel=1e-6, abs=1e-7)
      assert out[f"{split}/accuracy"][i] == pytest.approx(ref["accuracy"], abs=1e-6)
  # The splits differ here, so a swap of the two would be caught above.
  assert not np.allclose(out["train/loss"], out["test/loss"], rtol=1e-3)


def test_bad_input():
  params = {"w": jnp.zeros((3, 2))}
  f = lambda p: jnp.sum(p["w"])
  with pytest.raises(ValueError, match="directions"):
    landscape.surface(f, params, [{"v": jnp.zeros((3, 2))}], np.zeros((2, 1)))
  with pytest.raises(ValueError, match=r"need \(K, 2\)"):
    landscape.surface(f, params, [params, params], np.zeros((4, 3)))
  with pytest.raises(ValueError, match="K=0"):
    landscape.surface(f, params, [params], np.zeros((0, 1)))
  with pytest.raises(ValueError, match="non-finite"):
    landscape.surface(f, params, [params], np.array([[np.nan]]))
  with pytest.raises(ValueError, match="num=1"):
    landscape.grid(1)
  with pytest.raises(ValueError, match="params_b"):
    landscape.interpolation(f, params, {"w": jnp.zeros((2, 3))})
