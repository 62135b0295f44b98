"""Mode connectivity (genviz_jax.connectivity) against independent references: De Casteljau's
construction of the curves, an analytic valley whose minimum-loss curve is known, slow Python
loops (BatchNorm statistics recomputed by hand) and 1 vs 4 simulated devices."""

import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from genviz_jax import connectivity
from genviz_jax import data as data_lib
from genviz_jax import engine
from genviz_jax import models

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TESTS = os.path.join(_ROOT, "tests")


def _lerp(a, b, t):
  f64 = lambda x: np.asarray(x, np.float64)
  return jax.tree.map(lambda x, y: (1 - t) * f64(x) + t * f64(y), a, b)


def _reference_point(kind, start, bend, end, t):
  """φ(t) built independently, in float64: De Casteljau for the Bézier curve (a lerp of lerps),
  two straight segments through the bend for the polygonal chain."""
  if kind == "bezier":
    return _lerp(_lerp(start, bend, t), _lerp(bend, end, t), t)
  return _lerp(start, bend, 2 * t) if t <= 0.5 else _lerp(bend, end, 2 * t - 1)


def _random_tree(seed):
  k1, k2 = jax.random.split(jax.random.key(seed))
  return {"a": jax.random.normal(k1, (3, 4)), "b": {"c": jax.random.normal(k2, (5,))}}


# ------------------------------------------------------------------------------- the curve itself


@pytest.mark.parametrize("kind", connectivity.CURVE_KINDS)
def test_curve_point_matches_de_casteljau_and_keeps_endpoints_exact(kind):
  start, bend, end = _random_tree(0), _random_tree(1), _random_tree(2)
  for t in (0.0, 1.0):
    got = connectivity.curve_point(kind, start, bend, end, t)
    want = start if t == 0 else end
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      assert g.dtype == w.dtype and np.array_equal(g, w)
  for t in (0.1, 0.3, 0.5, 0.77, 0.95):
    got = jax.jit(lambda t: connectivity.curve_point(kind, start, bend, end, t))(t)  # traced t
    want = _reference_point(kind, start, bend, end, t)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
  # The polygonal chain passes through the bend at t = 1/2; the Bézier curve only near it.
  mid = connectivity.curve_point(kind, start, bend, end, 0.5)
  assert np.array_equal(mid["a"], bend["a"]) == (kind == "polychain")


def test_midpoint_bend_is_the_straight_line():
  start, end = _random_tree(0), _random_tree(2)
  bend = connectivity.init_bend(start, end)
  for kind in connectivity.CURVE_KINDS:
    for t in (0.2, 0.5, 0.9):
      got = connectivity.curve_point(kind, start, bend, end, t)
      for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(_lerp(start, end, t))):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_coefficients_are_a_partition_of_unity_with_exact_ends():
  ts = np.linspace(0, 1, 17)
  for kind in connectivity.CURVE_KINDS:
    c = connectivity.curve_coefficients(kind, ts)
    assert c.shape == (17, 3) and np.all(c >= 0)
    np.testing.assert_allclose(c.sum(1), 1.0, atol=1e-15)
    assert np.array_equal(c[0], [1, 0, 0]) and np.array_equal(c[-1], [0, 0, 1])


@pytest.mark.parametrize("kind", connectivity.CURVE_KINDS)
def test_evaluate_curve_endpoints_are_the_models_themselves(kind):
  start, bend, end = _random_tree(0), _random_tree(1), _random_tree(2)
  # A data-free "metric" returning the point's parameters: the engine's point, bit for bit.
  out = connectivity.evaluate_curve(lambda p: {"a": p["a"], "c": p["b"]["c"]}, start, bend, end,
                                    [0.0, 0.4, 1.0], kind=kind, point_batch=2)
  for i, want in ((0, start), (2, end)):
    assert np.array_equal(out["a"][i], want["a"]) and np.array_equal(out["c"][i], want["b"]["c"])
  ref = _reference_point(kind, start, bend, end, 0.4)
  np.testing.assert_allclose(out["a"][1], ref["a"], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------- analytic valley


def _valley(params):
  """(y - (1 - x²))²: zero on the parabola y = 1 - x², minima (1, 0) and (-1, 0) among others.

  On the segment y = 0 between them it is (x² - 1)², 1 at x = 0: the straight line's barrier is
  1. The Bézier curve with bend (0, 2) is x = 1 - 2t, y = 4t(1 - t) = 1 - x²: barrier 0.
  """
  x, y = params["w"][0], params["w"][1]
  return (y - (1 - x ** 2)) ** 2


_A, _B = {"w": jnp.array([1.0, 0.0])}, {"w": jnp.array([-1.0, 0.0])}
_TS = np.linspace(0, 1, 101)


def test_valley_straight_line_barrier_is_one():
  line = connectivity.evaluate_curve(_valley, _A, connectivity.init_bend(_A, _B), _B, _TS)["loss"]
  assert connectivity.barrier(line) == pytest.approx(1.0, abs=1e-6)
  on_parabola = connectivity.evaluate_curve(_valley, _A, {"w": jnp.array([0.0, 2.0])}, _B,
                                            _TS)["loss"]
  assert connectivity.barrier(on_parabola) < 1e-10


def test_trained_bezier_finds_the_parabola():
  fit = connectivity.train_curve(_valley, _A, _B, kind="bezier", optimizer=optax.adam(0.05),
                                 num_steps=300, key=jax.random.key(0), steps_per_call=128)
  assert fit.losses.shape == (300,) and fit.losses[-20:].max() < 1e-6 < fit.losses[:20].max()
  np.testing.assert_allclose(fit.bend["w"], [0.0, 2.0], atol=1e-3)
  loss = connectivity.evaluate_curve(_valley, _A, fit.bend, _B, _TS)["loss"]
  assert connectivity.barrier(loss) < 1e-3


def test_trained_polychain_reaches_its_analytic_optimum():
  """A chain (1,0) -> (0, b) -> (-1,0) cannot follow the parabola. On its first segment,
  x = 1 - s, y = b·s, the loss is s²(b - 2 + s)², so E_s loss is least at b = 2 - 3/4 = 1.25, and
  the highest point is then the bend: (b - 1)² = 1/16."""
  n = 300
  fit = connectivity.train_curve(_valley, _A, _B, kind="polychain", num_steps=n,
                                 optimizer=optax.adam(optax.cosine_decay_schedule(0.05, n)),
                                 key=jax.random.key(0), ts_per_step=16)
  np.testing.assert_allclose(fit.bend["w"], [0.0, 1.25], atol=0.02)
  loss = connectivity.evaluate_curve(_valley, _A, fit.bend, _B, _TS, kind="polychain")["loss"]
  assert connectivity.barrier(loss) == pytest.approx(1 / 16, abs=0.01)


def test_training_is_a_pure_function_of_key_and_step():
  """Splitting the steps into compiled calls differently changes nothing; a minibatch of all N
  examples (a permutation of them) and the full batch in ragged chunks of 5 give the full-batch
  run."""
  data = {"c": jnp.linspace(0.5, 1.5, 12)}
  loss = lambda p, batch: {"loss": jnp.mean(batch["c"]) * _valley(p), "unused": 0.0}
  kw = dict(optimizer=optax.adam(0.05), num_steps=30, key=jax.random.key(3))
  a = connectivity.train_curve(loss, _A, _B, data, steps_per_call=30, **kw)
  b = connectivity.train_curve(loss, _A, _B, data, steps_per_call=7, **kw)
  c = connectivity.train_curve(loss, _A, _B, data, steps_per_call=30, batch_size=12, **kw)
  d = connectivity.train_curve(loss, _A, _B, data, steps_per_call=30, data_batch=5, **kw)
  np.testing.assert_allclose(b.losses, a.losses, rtol=1e-6)
  np.testing.assert_allclose(b.bend["w"], a.bend["w"], rtol=1e-6)
  for other in (c, d):
    np.testing.assert_allclose(other.losses, a.losses, rtol=1e-5)
    np.testing.assert_allclose(other.bend["w"], a.bend["w"], rtol=1e-5, atol=1e-6)


def test_minibatches_visit_every_example_once_per_epoch():
  """loss = the mean example id of the batch (no dependence on the bend): 12 ids in batches of 4,
  so every 3 steps the batch sums add up to 0 + 1 + ... + 11 = 66."""
  data = {"i": jnp.arange(12.0)}
  fit = connectivity.train_curve(lambda p, batch: jnp.mean(batch["i"]) + 0 * p["w"][0], _A, _B,
                                 data, optimizer=optax.sgd(0.1), num_steps=9, batch_size=4,
                                 key=jax.random.key(1))
  sums = 4 * fit.losses.reshape(3, 3).sum(1)
  np.testing.assert_allclose(sums, 66.0)
  assert len(set(np.round(fit.losses, 4))) > 3  # batches differ from epoch to epoch


# ---------------------------------------------------------------------------------- flax models


@pytest.fixture(scope="module")
def mlp():
  train = {k: jnp.asarray(v) for k, v in data_lib.swiss_roll(num_train=203).train.items()}
  model = models.MLP(widths=(8, 8), num_classes=2)
  init = lambda s: model.init(jax.random.key(s), jnp.ones((1, 2)))["params"]
  return models.metric_fn(model), init(0), init(1), init(2), train


@pytest.mark.parametrize("kind", connectivity.CURVE_KINDS)
def test_evaluate_curve_matches_reference_loop(mlp, kind):
  fn, start, bend, end, train = mlp
  ts = np.linspace(0, 1, 11)
  got = connectivity.evaluate_curve(fn, start, bend, end, ts, train, kind=kind, point_batch=3,
                                    data_batch=50, chunk_size=6)
  one = jax.jit(lambda p: fn(p, train))
  for i, t in enumerate(ts):
    p = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32),
                     _reference_point(kind, start, bend, end, t))
    want = one(p)
    for name in ("loss", "accuracy"):
      np.testing.assert_allclose(got[name][i], want[name], rtol=2e-5, atol=1e-6, err_msg=name)
  assert np.ptp(got["loss"]) > 0.1  # the curve is not flat


class _BNNet(nn.Module):
  """Dense(8) -> BatchNorm -> ReLU -> Dense(2). momentum 0: after a train-mode apply the
  "running" statistics are the batch's own mean and (biased) variance."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Dense(8)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.0)(x)
    return nn.Dense(2)(nn.relu(x))


def _bn_problem():
  train = {k: jnp.asarray(v) for k, v in data_lib.swiss_roll(num_train=203).train.items()}
  model = _BNNet()
  init = lambda s: model.init(jax.random.key(s), train["x"][:4])
  variables = init(0)
  params = [init(s)["params"] for s in (0, 1, 2)]
  blank = variables["batch_stats"]

  def stats_fn(p, batch):
    _, upd = model.apply({"params": p, "batch_stats": blank}, batch["x"], train=True,
                         mutable=["batch_stats"])
    return upd["batch_stats"]

  def metric_fn(p, state, batch):
    logits = model.apply({"params": p, "batch_stats": state}, batch["x"], train=False)
    return {"loss": jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"])),
            "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["y"])}

  return model, metric_fn, stats_fn, params, train


@pytest.fixture(scope="module")
def bn():
  return _bn_problem()


def _numpy_precise_stats(params, x, batch):
  """update_bn by hand: per batch the mean and biased variance of Dense_0's output, averaged with
  weights n_c / N (the last batch is ragged)."""
  h = np.asarray(x, np.float64) @ np.asarray(params["Dense_0"]["kernel"], np.float64) + \
      np.asarray(params["Dense_0"]["bias"], np.float64)
  mean, var = np.zeros(h.shape[1]), np.zeros(h.shape[1])
  for lo in range(0, len(h), batch):
    c = h[lo:lo + batch]
    mean += c.mean(0) * len(c) / len(h)
    var += c.var(0) * len(c) / len(h)
  return {"BatchNorm_0": {"mean": jnp.asarray(mean, jnp.float32),
                          "var": jnp.asarray(var, jnp.float32)}}


@pytest.mark.parametrize("kind", connectivity.CURVE_KINDS)
def test_evaluate_curve_bn_matches_reference_loop(bn, kind):
  model, metric_fn, stats_fn, (start, bend, end), train = bn
  ts = np.array([0.0, 0.25, 0.5, 0.8, 1.0])
  test = {k: v[:150] for k, v in train.items()}
  got = connectivity.evaluate_curve_bn(metric_fn, stats_fn, start, bend, end, ts, test, train,
                                       kind=kind, point_batch=2, data_batch=40, stats_batch=50)
  stats_one = jax.jit(stats_fn)
  metric_one = jax.jit(lambda p, s: metric_fn(p, s, test))
  for i, t in enumerate(ts):
    p = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32),
                     _reference_point(kind, start, bend, end, t))
    state, n = None, len(train["x"])
    for lo in range(0, n, 50):
      s = stats_one(p, {k: v[lo:lo + 50] for k, v in train.items()})
      w = min(50, n - lo) / n
      s = jax.tree.map(lambda a: np.asarray(a, np.float64) * w, s)
      state = s if state is None else jax.tree.map(np.add, state, s)
    want = metric_one(p, jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), state))
    for name in ("loss", "accuracy"):
      np.testing.assert_allclose(got[name][i], want[name], rtol=2e-5, atol=1e-6, err_msg=name)


def test_bn_endpoints_equal_the_models_with_their_own_precise_stats(bn):
  """At t = 0 and 1 the recomputed statistics are the endpoint's own (numpy, by hand), and the
  metrics are the endpoint model's; in the middle the start's statistics would be wrong."""
  model, metric_fn, stats_fn, (start, bend, end), train = bn
  got = connectivity.evaluate_curve_bn(metric_fn, stats_fn, start, bend, end, [0.0, 0.5, 1.0],
                                       train, train, stats_batch=64)
  for i, p in ((0, start), (2, end)):
    want = metric_fn(p, _numpy_precise_stats(p, train["x"], 64), train)
    np.testing.assert_allclose(got["loss"][i], want["loss"], rtol=1e-5)
    np.testing.assert_allclose(got["accuracy"][i], want["accuracy"], atol=1e-6)
  mid = connectivity.curve_point("bezier", start, bend, end, 0.5)
  stale = metric_fn(mid, _numpy_precise_stats(start, train["x"], 64), train)["loss"]
  fresh = metric_fn(mid, _numpy_precise_stats(mid, train["x"], 64), train)["loss"]
  np.testing.assert_allclose(got["loss"][1], fresh, rtol=1e-5)
  assert abs(float(stale) - float(fresh)) > 0.05


# --------------------------------------------------------------------------- 1 vs 4 devices


def _sharded_results(mesh_fn):
  """evaluate_curve (points sharded; points and data sharded) and evaluate_curve_bn on a mesh."""
  fn_model = models.MLP(widths=(8, 8), num_classes=2)
  train = {k: jnp.asarray(v) for k, v in data_lib.swiss_roll(num_train=203).train.items()}
  ps = [fn_model.init(jax.random.key(s), jnp.ones((1, 2)))["params"] for s in (0, 1, 2)]
  ts = np.linspace(0, 1, 13)
  fn = models.metric_fn(fn_model)
  out = {}
  for name, mesh in (("points", mesh_fn(1)), ("data", mesh_fn(2))):
    res = connectivity.evaluate_curve(fn, *ps, ts, train, kind="polychain", mesh=mesh,
                                      point_batch=2, data_batch=40, chunk_size=8)
    out[name] = res["loss"]
  _, metric_fn, stats_fn, (start, bend, end), bn_train = _bn_problem()
  out["bn"] = connectivity.evaluate_curve_bn(metric_fn, stats_fn, start, bend, end, ts, bn_train,
                                             bn_train, mesh=mesh_fn(1), point_batch=2,
                                             stats_batch=64, chunk_size=8)["loss"]
  return out


def _worker(path):
  """Entry point of the 4-device subprocess."""
  assert jax.device_count() == 4
  res = _sharded_results(lambda shards: engine.point_mesh(data_shards=shards))
  np.savez(path, **res)


def test_four_simulated_devices_match_one(tmp_path):
  want = _sharded_results(lambda shards: None)
  out = tmp_path / "four.npz"
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_PLATFORMS="cpu")
  code = (f"import sys; sys.path.insert(0, {_TESTS!r}); import test_connectivity as t; "
          "t._worker(sys.argv[1])")
  proc = subprocess.run([sys.executable, "-c", code, str(out)], env=env, cwd=_ROOT,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  got = np.load(out)
  for name, w in want.items():
    assert np.ptp(w) > 0, name
    np.testing.assert_allclose(got[name], w, rtol=1e-6, atol=1e-6, err_msg=name)


# ------------------------------------------------------------------------------------ bad input


def test_bad_input_raises_one_line_errors():
  start, bend, end = _random_tree(0), _random_tree(1), _random_tree(2)
  fn = lambda p: jnp.sum(p["a"])
  cases = [
      (lambda: connectivity.curve_coefficients("spline", [0.5]), "allowed: bezier, polychain"),
      (lambda: connectivity.curve_point("line", start, bend, end, 0.5), "kind='line'"),
      (lambda: connectivity.curve_coefficients("bezier", [0.0, 1.5]), "t=1.5, outside"),
      (lambda: connectivity.curve_coefficients("bezier", [-0.1]), "t=-0.1, outside"),
      (lambda: connectivity.curve_coefficients("bezier", [0.2, np.nan]), "non-finite"),
      (lambda: connectivity.curve_coefficients("bezier", []), "empty"),
      (lambda: connectivity.curve_coefficients("bezier", [[0.5]]), r"shape \(1, 1\)"),
      (lambda: connectivity.evaluate_curve(fn, start, {"a": bend["a"]}, end, [0.5]),
       r"bend tree differs from start: bend lacks leaf \['b'\]\['c'\]"),
      (lambda: connectivity.evaluate_curve(fn, start, bend, {**end, "a": jnp.ones((4, 3))}, [0.5]),
       r"end leaf \['a'\] has shape \(4, 3\); start has \(3, 4\)"),
      (lambda: connectivity.evaluate_curve(fn, start, bend, end, [0.5], chunk_size=0),
       "chunk_size=0"),
      (lambda: connectivity.init_bend(start, {**end, "x": end["a"]}), r"has extra leaf \['x'\]"),
      (lambda: connectivity.train_curve(_valley, _A, _B, optimizer=optax.sgd(0.1), num_steps=0,
                                        key=jax.random.key(0)), "num_steps=0"),
      (lambda: connectivity.train_curve(_valley, _A, _B, optimizer="adam", num_steps=1,
                                        key=jax.random.key(0)), "GradientTransformation"),
      (lambda: connectivity.train_curve(_valley, _A, _B, optimizer=optax.sgd(0.1), num_steps=1,
                                        key=jax.random.key(0), batch_size=4), "needs data"),
      (lambda: connectivity.train_curve(lambda p, b: _valley(p), _A, _B, {"x": jnp.ones(3)},
                                        optimizer=optax.sgd(0.1), num_steps=1,
                                        key=jax.random.key(0), batch_size=4), "exceeds the N=3"),
      (lambda: connectivity.evaluate_curve_bn(fn, fn, start, bend, end, [0.5], None, None),
       "data is None"),
      (lambda: connectivity.barrier([1.0]), "K >= 2"),
      (lambda: connectivity.barrier([1.0, np.inf, 0.0]), "non-finite"),
  ]
  for call, match in cases:
    with pytest.raises(ValueError, match=match) as info:
      call()
    assert "\n" not in str(info.value), str(info.value)


def test_diverging_training_names_the_step():
  # 1e3·log(x + 2): one SGD step with rate 10 throws the bend's x far below -2 (log: nan).
  loss = lambda p: jnp.log(p["w"][0] + 2.0) * 1e3
  with pytest.raises(ValueError, match=r"curve training loss is nan at step \d+"):
    connectivity.train_curve(loss, _A, _B, optimizer=optax.sgd(10.0), num_steps=20,
                             key=jax.random.key(0), steps_per_call=8)


def test_barrier_is_relative_to_the_endpoint_mean():
  assert connectivity.barrier([1.0, 3.0, 0.0]) == pytest.approx(2.5)
  assert connectivity.barrier([0.0, -1.0, 0.0]) == 0.0
  assert connectivity.barrier([0.0, 0.5, 1.0]) == pytest.approx(0.5)  # monotone: half the rise
