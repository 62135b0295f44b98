"""The evaluation engine against slow reference loops: curves, ragged chunks, metrics, BatchNorm,
the compile cache (unhashable callables, nothing kept alive)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genviz_jax import data as data_lib
from genviz_jax import directions
from genviz_jax import engine
from genviz_jax import models


@pytest.fixture(scope="module")
def swiss():
  ds = data_lib.swiss_roll()
  model = models.MLP(widths=(23, 16, 26, 32, 28, 31), num_classes=2)
  params = model.init(jax.random.key(0), jnp.ones((1, 2)))["params"]
  return model, params, {k: jnp.asarray(v) for k, v in ds.train.items()}


def _reference(fn, params, deltas, data):
  """Slow reference: a Python loop of one jitted evaluation per point over all the data."""
  one = jax.jit(lambda p: fn(p, data))
  out = []
  for delta in deltas:
    p = jax.tree.map(lambda a, d: a + d, params, delta)
    out.append({k: float(v) for k, v in one(p).items()})
  return {k: np.array([o[k] for o in out]) for k in out[0]}


def test_1d_curve_matches_reference_loop(swiss):
  model, params, train = swiss
  fn = models.metric_fn(model)
  basis = directions.random_directions(jax.random.key(1), params, 1)
  alphas = np.linspace(-1.0, 1.0, 11, dtype=np.float32)
  delta_fn = engine.basis_delta(basis, alphas[:, None])
  got = jax.jit(lambda idx: engine.point_metrics(fn, params, delta_fn, idx, train,
                                                   point_batch=4))(jnp.arange(11))
  d0 = jax.tree.map(lambda x: x[0], basis)
  want = _reference(fn, params, [jax.tree.map(lambda x: a * x, d0) for a in alphas], train)
  assert set(got) == {"loss", "accuracy"}
  for k in want:
    assert got[k].shape == (11,) and got[k].dtype == jnp.float32
    np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-7)
  assert got["loss"][0] != got["loss"][5]  # the curve is not flat


@pytest.fixture(scope="module")
def ragged_reference(swiss):
  """Per-example cross-entropies at 6 basin points, averaged in float64 (independent of chunks)."""
  model, params, train = swiss
  radii = np.linspace(0, 0.5, 6)
  logits_fn = jax.jit(lambda p: model.apply({"params": p}, train["x"]))
  want = []
  for k, r in enumerate(radii):
    d = directions.random_direction(jax.random.key(2), params, k)
    logits = np.asarray(logits_fn(jax.tree.map(lambda a, b: a + r * b, params, d)), np.float64)
    logp = logits - np.log(np.sum(np.exp(logits - logits.max(1, keepdims=True)), 1,
                                  keepdims=True)) - logits.max(1, keepdims=True)
    want.append(-np.mean(logp[np.arange(len(logp)), np.asarray(train["y"])]))
  return radii, np.array(want)


@pytest.mark.parametrize("data_batch,point_batch", [(64, 3), (7, 1), (1000, 5)])
def test_ragged_data_chunks_are_exact(swiss, ragged_reference, data_batch, point_batch):
  model, params, train = swiss
  radii, want = ragged_reference
  delta_fn = engine.direction_delta(jax.random.key(2), params, radii)
  got = engine.point_metrics(models.metric_fn(model), params, delta_fn, jnp.arange(6), train,
                               point_batch=point_batch, data_batch=data_batch)
  np.testing.assert_allclose(got["loss"], want, rtol=2e-6)


def test_streaming_matches_one_call(swiss, ragged_reference):
  model, params, train = swiss
  fn = models.metric_fn(model)
  radii = jnp.linspace(0.0, 1.0, 23)
  delta_fn = engine.direction_delta(jax.random.key(2), params, radii)
  whole = engine.point_metrics(fn, params, delta_fn, jnp.arange(23), train, point_batch=4)
  seen, done = [], []
  chunks = list(engine.iter_evaluate_points(fn, params, delta_fn, 20, train, start=3,
                                              point_batch=2, chunk_size=6,
                                              progress=lambda d, t: done.append((d, t))))
  for lo, hi, out in chunks:
    seen.append((lo, hi))
    np.testing.assert_allclose(out["loss"], whole["loss"][lo:hi], rtol=1e-6)
    np.testing.assert_allclose(out["accuracy"], whole["accuracy"][lo:hi], atol=1e-7)
  assert seen[0][0] == 3 and seen[-1][1] == 23 and len(seen) == 4
  assert all(a[1] == b[0] for a, b in zip(seen, seen[1:]))
  assert done[-1] == (20, 20)
  # Point 0 has radius 0: the centre, also the ragged reference's point 0.
  _, want = ragged_reference
  np.testing.assert_allclose(whole["loss"][0], want[0], rtol=2e-6)


def test_scalar_metric_and_no_data():
  params = {"w": jnp.arange(6.0).reshape(2, 3)}
  basis = {"w": jnp.ones((1, 2, 3))}
  coeffs = jnp.array([[0.0], [1.0], [-2.0]])
  out = engine.point_metrics(lambda p: jnp.sum(p["w"] ** 2), params,
                               engine.basis_delta(basis, coeffs), jnp.arange(3))
  want = [np.sum((np.arange(6.0) + c) ** 2) for c in (0.0, 1.0, -2.0)]
  assert list(out) == ["loss"]
  np.testing.assert_allclose(out["loss"], want, rtol=1e-6)

  def fn(p, batch):
    pred = batch["x"] @ p["w"]
    return {"mse": jnp.mean((pred - batch["y"]) ** 2), "maxabs": jnp.max(jnp.abs(pred))}

  x = jax.random.normal(jax.random.key(0), (13, 2))
  y = jax.random.normal(jax.random.key(1), (13, 3))
  out = engine.point_metrics(fn, params, engine.basis_delta(basis, coeffs), jnp.arange(3),
                               {"x": x, "y": y}, data_batch=13)
  for i, c in enumerate((0.0, 1.0, -2.0)):
    pred = np.asarray(x) @ (np.arange(6.0).reshape(2, 3) + c)
    np.testing.assert_allclose(out["mse"][i], np.mean((pred - np.asarray(y)) ** 2), rtol=1e-5)


class _BNNet(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Dense(8)(x)
    x = nn.BatchNorm(use_running_average=not train)(x)
    return nn.Dense(2)(nn.relu(x))


def test_batchnorm_model_in_inference_mode(swiss):
  _, _, train = swiss
  model = _BNNet()
  variables = model.init(jax.random.key(0), train["x"][:4])
  # Non-trivial running statistics, so train-mode and inference-mode numbers would differ.
  stats = jax.tree.map(lambda a: a + 0.3, variables["batch_stats"])
  fn = models.metric_fn(model, {"batch_stats": stats})
  params = variables["params"]
  basis = directions.random_directions(jax.random.key(4), params, 2)
  coeffs = jnp.array([[0.0, 0.0], [0.5, -0.25], [1.0, 1.0]])
  got = engine.point_metrics(fn, params, engine.basis_delta(basis, coeffs), jnp.arange(3),
                               train, data_batch=33)
  for i in range(3):
    p = jax.tree.map(lambda a, d: a + coeffs[i, 0] * d[0] + coeffs[i, 1] * d[1], params, basis)
    logits = model.apply({"params": p, "batch_stats": stats}, train["x"], train=False)
    want = float(jnp.mean(jnp.argmax(logits, -1) == train["y"]))
    np.testing.assert_allclose(got["accuracy"][i], want, atol=1e-6)
  assert jnp.all(jnp.isfinite(got["loss"]))


def test_traceable_inside_while_loop(swiss):
  model, params, train = swiss
  fn = models.metric_fn(model)

  @jax.jit
  def double_until(r0):
    # Doubling per point until its loss rises by 0.1: the basin helper's pattern.
    base = engine.point_metrics(fn, params, engine.direction_delta(
        jax.random.key(0), params, 0.0), jnp.arange(1), train)["loss"][0]

    def cond(r):
      loss = engine.point_metrics(fn, params, engine.direction_delta(
          jax.random.key(0), params, r), jnp.arange(4), train, point_batch=2)["loss"]
      return jnp.any(loss < base + 0.1) & jnp.all(r < 1e3)

    return jax.lax.while_loop(cond, lambda r: r * 2.0, r0)

  r = double_until(jnp.full((4,), 1e-3))
  assert r.shape == (4,) and np.all(np.asarray(r) > 1e-3)


def test_bad_input(swiss):
  model, params, train = swiss
  fn = models.metric_fn(model)
  dfn = engine.direction_delta(jax.random.key(0), params, 0.1)
  with pytest.raises(ValueError, match="indices have shape"):
    engine.point_metrics(fn, params, dfn, jnp.arange(0), train)
  with pytest.raises(ValueError, match="point_batch=0"):
    engine.point_metrics(fn, params, dfn, jnp.arange(3), train, point_batch=0)
  with pytest.raises(ValueError, match="different leading sizes"):
    engine.point_metrics(fn, params, dfn, jnp.arange(3), {"x": train["x"], "y": train["y"][:5]})
  bad = engine.basis_delta({"Dense_0": {"kernel": jnp.ones((1, 2, 23))}}, jnp.ones((3, 1)))
  with pytest.raises(ValueError, match="delta_fn output tree differs"):
    engine.point_metrics(fn, params, bad, jnp.arange(3), train)
  with pytest.raises(ValueError, match="dtype"):
    engine.point_metrics(lambda p, b: {"v": jax.random.key(0)}, params, dfn, jnp.arange(3),
                         train)


def test_evaluate_points_accepts_plain_and_unhashable_callables():
  params = {"w": np.ones((4, 3), np.float32)}
  x = np.random.RandomState(0).randn(50, 4).astype(np.float32)
  coeffs = np.linspace(0, 1, 9)

  class Loss:  # an unhashable callable object
    __hash__ = None

    def __call__(self, p, b):
      return jnp.mean((b["x"] @ p["w"]) ** 2)

  def delta_fn(idx):  # a plain closure over numpy, not a registered pytree
    return {"w": jnp.asarray(coeffs)[idx][:, None, None] * jnp.ones((1, 4, 3))}

  out = engine.evaluate_points(Loss(), params, delta_fn, 9, {"x": x}, chunk_size=4)
  want = [np.mean((x.astype(np.float64) @ (np.ones((4, 3)) * (1 + c))) ** 2) for c in coeffs]
  np.testing.assert_allclose(out["loss"], want, rtol=1e-5)
  with pytest.raises(ValueError, match="num_points=0"):
    engine.evaluate_points(Loss(), params, delta_fn, 0, {"x": x})


def test_array_metrics_are_averaged_elementwise():
  """A metric may be a fixed-shape array (e.g. predictions on a grid): exact chunked means."""
  params = {"w": np.arange(6.0, dtype=np.float32).reshape(2, 3)}
  x = np.random.RandomState(1).randn(11, 2).astype(np.float32)
  coeffs = np.array([[0.0], [0.5], [2.0]], np.float32)
  basis = {"w": np.ones((1, 2, 3), np.float32)}
  fn = lambda p, b: {"col_mean": jnp.mean(b["x"] @ p["w"], axis=0)}
  out = engine.evaluate_points(fn, params, engine.basis_delta(basis, coeffs), 3, {"x": x},
                               data_batch=4, point_batch=2)
  assert out["col_mean"].shape == (3, 3)
  for i, c in enumerate(coeffs[:, 0]):
    want = np.mean(x.astype(np.float64) @ (np.arange(6.0).reshape(2, 3) + c), axis=0)
    np.testing.assert_allclose(out["col_mean"][i], want, rtol=1e-5)


def test_compile_cache_keeps_no_user_callable_alive():
  import gc
  import weakref
  from genviz_jax.engine import cache
  params = {"w": np.ones((4, 3), np.float32)}
  x = np.random.RandomState(0).randn(20, 4).astype(np.float32)
  basis = {"w": np.ones((1, 4, 3), np.float32)}
  before = cache.num_entries()

  class Loss:  # unhashable, holds an array (like an equinox module)
    __hash__ = None

    def __init__(self):
      self.scale = jnp.float32(2.0)

    def __call__(self, p, b):
      return self.scale * jnp.mean((b["x"] @ p["w"]) ** 2)

  loss = Loss()
  ref = weakref.ref(loss)
  for c in (np.zeros((3, 1)), np.ones((3, 1))):  # the second call reuses the compiled chunk
    engine.evaluate_points(loss, params, engine.basis_delta(basis, c), 3, {"x": x})
  assert cache.num_entries() == before + 1
  del loss
  gc.collect()
  assert ref() is None, "the engine kept the user's loss alive"
  assert cache.num_entries() == before


def test_bound_methods_share_one_compiled_function():
  from genviz_jax.engine import cache

  class Model:
    def __init__(self):
      self.calls = 0

    def loss(self, p, b):
      self.calls += 1  # counts traces: Python runs only while tracing
      return jnp.mean((b["x"] @ p["w"]) ** 2)

  m = Model()
  params = {"w": np.ones((4, 3), np.float32)}
  x = np.ones((5, 4), np.float32)
  basis = {"w": np.ones((1, 4, 3), np.float32)}
  for c in (np.zeros((2, 1)), np.ones((2, 1))):
    engine.evaluate_points(m.loss, params, engine.basis_delta(basis, c), 2, {"x": x})
  assert m.calls == 1
  assert cache.num_entries() >= 1


def test_flat_public_api():
  import genviz_jax as gv
  for name in ("basin.radii", "basin.log_volume", "landscape.plane", "landscape.surface",
               "hessian.top_eigenpairs", "sharpness.flatness_sigma", "engine.evaluate_points",
               "directions.random_directions"):
    mod, fn = name.split(".")
    assert callable(getattr(getattr(gv, mod), fn)), name
  with pytest.raises(AttributeError, match="no_such"):
    gv.no_such  # noqa: B018
