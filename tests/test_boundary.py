"""Decision boundaries through the engine against a slow per-point loop of model.apply."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genviz_jax import boundary
from genviz_jax import data
from genviz_jax import directions
from genviz_jax import ensemble
from genviz_jax import models

EXTENT = (-2.0, 1.5, -1.0, 2.5)
RES = 7


@pytest.fixture(scope="module")
def setup():
  model = models.MLP((8, 8), 3)  # three classes: argmax and "last class" are not trivial
  params = ensemble.init_many(model, [0, 1, 2], (2,))  # leaves (3, ...)
  return model, params


def slow_logits(model, params, extent, res):
  """(G, G, C): model.apply one grid point at a time, rows along y, columns along x."""
  x0, x1, y0, y1 = extent
  xs, ys = np.linspace(x0, x1, res), np.linspace(y0, y1, res)
  out = np.zeros((res, res, 3), np.float32)
  for i, y in enumerate(ys):
    for j, x in enumerate(xs):
      pt = jnp.asarray([[x, y]], jnp.float32)
      out[i, j] = np.asarray(model.apply({"params": params}, pt, train=False))[0]
  return out


def test_one_model_class_grid_is_the_per_point_argmax(setup):
  model, stacked = setup
  p = jax.tree.map(lambda a: a[1], stacked)
  grid = boundary.predictions(boundary.flax_logits(model), p, EXTENT, RES)
  want = np.argmax(slow_logits(model, p, EXTENT, RES), -1)
  assert grid.shape == (RES, RES) and grid.dtype == np.int32
  np.testing.assert_array_equal(grid, want)
  assert len(np.unique(grid)) > 1  # the grid crosses a boundary: the comparison has teeth


def test_many_models_give_each_model_its_own_probabilities(setup):
  model, stacked = setup
  probs = boundary.predictions(boundary.flax_logits(model), stacked, EXTENT, RES,
                               kind="probability", stacked=True, point_batch=2)
  assert probs.shape == (3, RES, RES)
  for r in range(3):
    p = jax.tree.map(lambda a: a[r], stacked)
    z = slow_logits(model, p, EXTENT, RES).astype(np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    np.testing.assert_allclose(probs[r], (e / e.sum(-1, keepdims=True))[..., -1], rtol=1e-5,
                               atol=1e-6)


def test_frames_move_the_parameters_along_each_direction(setup):
  model, stacked = setup
  p = jax.tree.map(lambda a: a[0], stacked)
  dirs = directions.random_directions(jax.random.key(3), p, 2)
  named = {"a": jax.tree.map(lambda d: d[0], dirs), "b": jax.tree.map(lambda d: d[1], dirs)}
  alphas = np.array([-1.0, 0.0, 0.5])
  got = boundary.frames(boundary.flax_logits(model), p, named, alphas, EXTENT, RES,
                        kind="class")
  for label, d in named.items():
    assert got[label].shape == (3, RES, RES)
    for i, a in enumerate(alphas):
      moved = jax.tree.map(lambda x, y: x + np.float32(a) * y, p, d)
      np.testing.assert_array_equal(got[label][i],
                                    np.argmax(slow_logits(model, moved, EXTENT, RES), -1))
  assert not np.array_equal(got["a"][0], got["a"][1])  # the step changes the boundary


def test_extent_covers_every_split_with_the_margin():
  ds = data.swiss_roll(num_train=20, num_test=10, num_poison=6)
  x = np.concatenate([ds.train["x"], ds.test["x"], ds.poison["x"]])
  x0, x1, y0, y1 = boundary.data_extent(ds, margin=0.1)
  w, h = np.ptp(x[:, 0]), np.ptp(x[:, 1])
  np.testing.assert_allclose([x0, x1, y0, y1], [x[:, 0].min() - 0.1 * w, x[:, 0].max() + 0.1 * w,
                                                x[:, 1].min() - 0.1 * h, x[:, 1].max() + 0.1 * h],
                             rtol=1e-6)


@pytest.mark.parametrize("call,match", [
    (lambda: boundary.grid_points(EXTENT, 1), "resolution=1 must be an integer >= 2"),
    (lambda: boundary.grid_points((0, 1, 2), 4), r"extent=\(0, 1, 2\) must be four"),
    (lambda: boundary.grid_metric(None, EXTENT, 4, kind="logit"), "kind='logit' is not one of"),
    (lambda: boundary.data_extent([np.zeros((3, 5))]), "inputs have 5 features"),
])
def test_bad_input_is_a_one_line_value_error(call, match):
  with pytest.raises(ValueError, match=match) as e:
    call()
  assert "\n" not in str(e.value)
