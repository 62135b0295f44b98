"""Basin radii: analytic quadratic radii, crossing rules, censoring, chunk invariance, bad input."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genviz_jax import basin, data, directions, models


def _unit_rows(rng, k, n):
  u = rng.normal(size=(k, n))
  return u / np.linalg.norm(u, axis=1, keepdims=True)


def _split(u):
  """(K, 6) rows -> a two-leaf pytree {"a": (K, 2, 2), "b": (K, 2)} (exercises trees)."""
  return {"a": jnp.asarray(u[:, :4].reshape(-1, 2, 2), jnp.float32),
          "b": jnp.asarray(u[:, 4:], jnp.float32)}


def _flat(p):
  return jnp.concatenate([p["a"].reshape(-1), p["b"].reshape(-1)])


@pytest.mark.parametrize("rtol", [1e-5, 1e-3])
def test_quadratic_radius_is_exact(rtol):
  rng = np.random.default_rng(0)
  n = 6
  a = rng.normal(size=(n, n))
  h = a @ a.T + 0.1 * np.eye(n)
  hj = jnp.asarray(h, jnp.float32)
  tau = 0.7
  u = _unit_rows(rng, 40, n)
  params = {"a": jnp.zeros((2, 2)), "b": jnp.zeros((2,))}
  res = basin.radii(lambda p: 0.5 * _flat(p) @ hj @ _flat(p), params, _split(u), threshold=tau,
                    rtol=rtol, chunk_size=16)
  exact = np.sqrt(2 * tau / np.einsum("ki,ij,kj->k", u, h, u))
  rel = res.radius / exact - 1
  # The radius returned was evaluated past the threshold: r* <= radius <= r*(1 + rtol).
  assert np.all(rel >= -1e-6)
  assert np.max(rel) <= rtol / (1 - rtol) + 1e-6
  if rtol <= 1e-5:
    assert np.max(np.abs(rel)) <= 1e-4
  assert res.converged.all() and res.num_censored == 0
  assert np.all(res.value > tau)
  np.testing.assert_allclose(res.direction_norm, 1.0, rtol=1e-6)


def test_two_sided_radii_on_a_tilted_quadratic():
  # f(w) = ½|w|² + b·w: along ±u, ½r² ± (b·u) r = τ.
  rng = np.random.default_rng(1)
  b = jnp.asarray([0.3, -0.2, 0.1, 0.4, 0.0, -0.1], jnp.float32)
  tau = 1.0
  u = _unit_rows(rng, 12, 6)
  params = {"a": jnp.zeros((2, 2)), "b": jnp.zeros((2,))}
  f = lambda p: 0.5 * jnp.sum(_flat(p) ** 2) + b @ _flat(p)
  res = basin.radii(f, params, _split(u), threshold=tau, rtol=1e-6, two_sided=True)
  bu = u @ np.asarray(b, np.float64)
  want = np.stack([-bu + np.sqrt(bu ** 2 + 2 * tau), bu + np.sqrt(bu ** 2 + 2 * tau)], axis=1)
  assert res.radius.shape == (12, 2)
  np.testing.assert_allclose(res.radius, want, rtol=1e-5)


def test_flat_directions_are_censored_not_dropped():
  # h = 0 along the first coordinate: that direction never leaves the basin.
  h = jnp.asarray([0.0, 2.0, 2.0, 2.0, 2.0, 2.0], jnp.float32)
  u = np.eye(6)[:3]
  params = {"a": jnp.zeros((2, 2)), "b": jnp.zeros((2,))}
  res = basin.radii(lambda p: 0.5 * jnp.sum(h * _flat(p) ** 2), params, _split(u),
                    threshold=1.0, r_max=10.0)
  assert res.censored.tolist() == [True, False, False]
  assert res.num_censored == 1 and res.radius[0] == 10.0
  np.testing.assert_allclose(res.radius[1:], 1.0, rtol=1e-4)
  est = res.volume(num_bootstrap=10)
  assert est.num_censored == 1 and est.to_json()["lower_bound"]


def test_accuracy_below_threshold_and_relative_threshold():
  # Accuracy 1 inside the ball |w| < 0.3, 0.5 outside: radius 0.3 along every unit direction.
  def fn(p):
    w = _flat(p)
    return {"loss": jnp.sum(w ** 2), "accuracy": jnp.where(jnp.linalg.norm(w) < 0.3, 1.0, 0.5)}
  u = _unit_rows(np.random.default_rng(2), 5, 6)
  params = {"a": jnp.zeros((2, 2)), "b": jnp.zeros((2,))}
  absolute = basin.radii(fn, params, _split(u), threshold=0.9, metric="accuracy", rtol=1e-5)
  relative = basin.radii(fn, params, _split(u), threshold=0.1, metric="accuracy", rtol=1e-5,
                         relative=True)
  assert absolute.crossing == "below" and relative.threshold == pytest.approx(0.9)
  for res in (absolute, relative):
    assert np.all(res.radius >= 0.3 * (1 - 1e-6)) and np.all(res.radius <= 0.3 * (1 + 2e-5))
    assert np.all(res.value == 0.5)


_SETUP = []


def _mlp_setup():
  """One small MLP for every test of the module (compiled executables are reused)."""
  if not _SETUP:
    ds = data.swiss_roll(num_train=48, num_test=8, num_poison=2)
    model = models.MLP(widths=(12, 10), num_classes=2)
    params = model.init(jax.random.key(0), ds.train["x"][:1])["params"]
    batch = {k: jnp.asarray(v) for k, v in ds.train.items()}
    _SETUP.append((models.metric_fn(model), params, batch))
  return _SETUP[0]


def test_chunking_and_caching_do_not_change_radii_and_match_a_slow_loop():
  fn, params, batch = _mlp_setup()
  spec = basin.RandomDirections(jax.random.key(7), 23, norm="filter")
  kw = dict(threshold=0.5, relative=True, data=batch, rtol=1e-4)
  a = basin.radii(fn, params, spec, chunk_size=4, **kw)
  b = basin.radii(fn, params, spec, chunk_size=5, point_batch=3, cache_directions=False, **kw)
  np.testing.assert_array_equal(a.radius, b.radius)
  np.testing.assert_array_equal(a.censored, b.censored)
  # Stacked directions (held in memory) give the same radii as the generated ones.
  stack = directions.random_directions(jax.random.key(7), params, 23)
  c = basin.radii(fn, params, stack, chunk_size=8, data_batch=20, **kw)
  np.testing.assert_allclose(c.radius, a.radius, rtol=2e-4)
  assert a.measure == "filter-normalized"
  assert a.dim == directions.num_perturbed(params, True)
  # Slow reference: one jitted evaluation per point, direction by direction.
  one = jax.jit(lambda p: fn(p, batch)["loss"])
  for k in (0, 11, 22):
    d = directions.random_direction(jax.random.key(7), params, k)
    at = lambda r: float(one(jax.tree.map(lambda p, x: p + r * x, params, d)))
    assert at(float(a.radius[k])) > a.threshold
    assert at(float(a.radius[k])) == pytest.approx(float(a.value[k]), rel=1e-5)
    assert at(float(a.radius[k]) * (1 - 3e-4)) <= a.threshold or a.num_evals[k] > 0


def test_store_resumes_and_refuses_a_different_sweep(tmp_path):
  fn, params, batch = _mlp_setup()
  spec = basin.RandomDirections(jax.random.key(1), 12)
  kw = dict(threshold=0.5, relative=True, data=batch, chunk_size=4)
  full = basin.radii(fn, params, spec, **kw)
  store = basin.ChunkStore(str(tmp_path / "s"))
  seen = []
  basin.radii(fn, params, spec, store=store, on_chunk=lambda d, k, a: seen.append(d), **kw)
  assert seen == [4, 8, 12] and store.num_chunks() == 3
  # Drop the middle chunk (as if killed): the rerun computes only that one, identically.
  os.remove(os.path.join(store.path, "chunk_000000000004.npz"))
  again = basin.radii(fn, params, spec, store=basin.ChunkStore(store.path), **kw)
  np.testing.assert_array_equal(again.radius, full.radius)
  before = sorted(os.listdir(store.path))
  with pytest.raises(ValueError, match="different sweep .*threshold"):
    basin.radii(fn, params, spec, store=basin.ChunkStore(store.path),
                **{**kw, "threshold": 0.3})
  assert sorted(os.listdir(store.path)) == before


def test_bad_input_is_one_line_and_writes_nothing(tmp_path):
  f = lambda p: 0.5 * jnp.sum(p["w"] ** 2)
  params = {"w": jnp.zeros((2, 3))}
  good = {"w": jnp.ones((4, 2, 3))}
  store_dir = str(tmp_path / "store")
  cases = [
      (dict(directions={"v": jnp.ones((4, 2, 3))}, threshold=1.0), "structure"),
      (dict(directions={"w": jnp.ones((4, 3, 2))}, threshold=1.0), r"expected \(K,\)"),
      (dict(directions=good, threshold=-1.0), "already crossed at the centre"),
      (dict(directions=good, threshold=1.0, r_max=0.0), "r_max=0.0"),
      (dict(directions=good, threshold=1.0, r_max=-2), "r_max=-2"),
      (dict(directions={"w": jnp.ones((0, 2, 3))}, threshold=1.0), "K"),
      (dict(directions=basin.RandomDirections(jax.random.key(0), 0), threshold=1.0), "K"),
      (dict(directions=good, threshold=1.0, metric="accuracy"), "metric='accuracy'"),
      (dict(directions=good, threshold=float("nan")), "threshold=nan"),
  ]
  for kw, match in cases:
    with pytest.raises(ValueError, match=match) as e:
      basin.radii(f, params, store=basin.ChunkStore(store_dir), **kw)
    assert "\n" not in str(e.value)
  nan_centre = lambda p: jnp.sum(p["w"]) + jnp.nan
  with pytest.raises(ValueError, match="non-finite metric at the centre"):
    basin.radii(nan_centre, params, good, threshold=1.0, store=basin.ChunkStore(store_dir))
  assert not os.path.exists(store_dir)


_SHARDED = r"""
import json, sys
import jax, jax.numpy as jnp, numpy as np
from genviz_jax import basin, data, evaluate, models
assert jax.device_count() == 4, jax.devices()
ds = data.swiss_roll(num_train=40, num_test=8, num_poison=2)
model = models.MLP(widths=(12, 10), num_classes=2)
params = model.init(jax.random.key(0), ds.train["x"][:1])["params"]
fn = models.metric_fn(model)
spec = basin.RandomDirections(jax.random.key(5), 18)
kw = dict(threshold=0.5, relative=True, data=ds.train, two_sided=True)
one = basin.radii(fn, params, spec, chunk_size=8, **kw)
mesh = evaluate.point_mesh()
four = basin.radii(fn, params, spec, chunk_size=2, mesh=mesh, **kw)
nocache = basin.radii(fn, params, spec, chunk_size=2, mesh=mesh, cache_directions=False, **kw)
print(json.dumps({k: np.asarray(v).tolist() for k, v in
                  dict(one=one.radius, four=four.radius, nocache=nocache.radius,
                       n1=one.direction_norm, n4=four.direction_norm).items()}))
"""


def test_sharded_over_four_devices_equals_one_device():
  import json
  import subprocess
  import sys
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
  p = subprocess.run([sys.executable, "-c", _SHARDED], env=env, capture_output=True, text=True,
                     timeout=600, cwd=root)
  assert p.returncode == 0, p.stderr[-2000:]
  out = json.loads(p.stdout.strip().splitlines()[-1])
  one, four = np.asarray(out["one"]), np.asarray(out["four"])
  assert one.shape == (18, 2)
  # Relative difference <= 1e-6 (issue 3); in practice the same floats.
  np.testing.assert_allclose(four, one, rtol=1e-6)
  np.testing.assert_allclose(out["nocache"], one, rtol=1e-6)
  np.testing.assert_allclose(out["n4"], out["n1"], rtol=1e-6)
