"""Models: shapes, hand-counted parameters, BatchNorm train/eval semantics, registry errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genviz_jax import models, objectives, trees


def _shapes(model, input_shape):
  return jax.eval_shape(lambda k: models.init_variables(model, k, input_shape), jax.random.key(0))


def _dense(i, o):
  return i * o + o


def _conv(k, i, o, bias=False):
  return k * k * i * o + (o if bias else 0)


def _bn(c):
  return 2 * c  # scale and bias (running mean/var are batch_stats, not params)


def _numpy_variables(model, input_shape, seed=0):
  """Variables with model.init's structure, filled by numpy (He-scaled kernels, BN identity).

  model.init compiles one threefry sampler per parameter, which takes tens of seconds on a busy
  2-core CPU; these tests are about the forward pass, not the initializers.
  """
  rng = np.random.RandomState(seed)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path[-1:])
    if "kernel" in name:
      fan_in = int(np.prod(leaf.shape[:-1]))
      return jnp.asarray(rng.randn(*leaf.shape) * np.sqrt(2.0 / fan_in), leaf.dtype)
    if "scale" in name or "var" in name:
      return jnp.ones(leaf.shape, leaf.dtype)
    return jnp.zeros(leaf.shape, leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, _shapes(model, input_shape))


# ---------------------------------------------------------------- parameter counts

def test_swiss_roll_mlp_has_3646_parameters():
  m = models.create_model("mlp", 2, widths=(23, 16, 26, 32, 28, 31))
  widths = [2, 23, 16, 26, 32, 28, 31, 2]
  assert sum(_dense(a, b) for a, b in zip(widths, widths[1:])) == 3646
  assert trees.num_params(_shapes(m, (2,))["params"]) == 3646


def _resnet_count(stages, widths, c_in, classes, shortcut):
  n = _conv(3, c_in, widths[0]) + _bn(widths[0])
  prev = widths[0]
  for i, (blocks, w) in enumerate(zip(stages, widths)):
    for j in range(blocks):
      n += _conv(3, prev, w) + _bn(w) + _conv(3, w, w) + _bn(w)
      if shortcut == "conv" and (prev != w or (i > 0 and j == 0)):
        n += _conv(1, prev, w) + _bn(w)
      prev = w
  return n + _dense(prev, classes)


def test_resnet_parameter_counts():
  r20 = _resnet_count((3, 3, 3), (16, 32, 64), 3, 10, "pad")
  r18 = _resnet_count((2, 2, 2, 2), (64, 128, 256, 512), 3, 10, "conv")
  assert 0.26e6 < r20 < 0.28e6  # He et al. 2016, Table 6: 0.27M
  assert 11.1e6 < r18 < 11.2e6  # the usual CIFAR ResNet-18: 11.17M
  count = lambda name, **kw: trees.num_params(
      _shapes(models.create_model(name, 10, **kw), (32, 32, 3))["params"])
  assert count("resnet20") == r20
  assert count("resnet18") == r18
  half = _resnet_count((2, 2, 2, 2), (32, 64, 128, 256), 3, 10, "conv")
  assert count("resnet18", width=0.5) == half


@pytest.mark.parametrize("depth", [11, 13, 16])
def test_vgg_parameter_counts(depth):
  cfg = {11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
         13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
         16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512,
              "M"]}[depth]
  n, prev = 0, 3
  for v in cfg:
    if v != "M":
      n += _conv(3, prev, v) + _bn(v)
      prev = v
  n += _dense(512, 10)
  variables = _shapes(models.create_model(f"vgg{depth}", 10), (32, 32, 3))
  assert trees.num_params(variables["params"]) == n
  # Running mean and variance for every BN channel.
  assert trees.num_params(variables["batch_stats"]) == 2 * sum(v for v in cfg if v != "M")


def test_small_cnn_parameter_count():
  m = models.create_model("small_cnn", 10, features=(8, 16), dense=32)
  expect = _conv(3, 1, 8, True) + _conv(3, 8, 16, True) + _dense(2 * 2 * 16, 32) + _dense(32, 10)
  assert trees.num_params(_shapes(m, (8, 8, 1))["params"]) == expect


# ---------------------------------------------------------------- output shapes

@pytest.mark.parametrize("name,kwargs,shape", [
    ("mlp", {"widths": (8, 8)}, (2,)),
    ("small_cnn", {"features": (4, 8), "dense": 16}, (8, 8, 1)),
    ("vgg11", {"width": 0.0625}, (32, 32, 3)),
    ("resnet18", {"width": 0.0625}, (32, 32, 3)),
])
def test_output_shapes(name, kwargs, shape):
  m = models.create_model(name, 7, **kwargs)
  x = jax.random.normal(jax.random.key(2), (2, *shape))

  v = _numpy_variables(m, shape)

  @jax.jit  # one compile for both modes
  def run(v, x):
    out_eval = m.apply(v, x, train=False)
    if "batch_stats" not in v:
      return out_eval, out_eval, v
    out_train, upd = m.apply(v, x, train=True, mutable=["batch_stats"])
    return out_eval, out_train, upd

  out_eval, out_train, upd = run(v, x)
  for out in (out_eval, out_train):
    assert out.shape == (2, 7) and out.dtype == jnp.float32 and np.all(np.isfinite(out))
  if "batch_stats" in v:
    assert jax.tree_util.tree_structure(upd["batch_stats"]) == \
        jax.tree_util.tree_structure(v["batch_stats"])


# ---------------------------------------------------------------- BatchNorm semantics

@pytest.fixture(scope="module")
def tiny_resnet():
  """A width-1/4 ResNet-20 on 8x8 inputs with jitted eval/train applies shared by the tests."""
  m = models.create_model("resnet20", 3, width=0.25)
  v = _numpy_variables(m, (8, 8, 3), seed=3)
  # Non-trivial BN state, so "eval uses running stats" is not the identity map.
  v["batch_stats"] = jax.tree_util.tree_map(lambda a: a + 0.3, v["batch_stats"])
  x = jax.random.normal(jax.random.key(4), (4, 8, 8, 3)) * 2.0 + 0.5
  ev = jax.jit(lambda p, bs, x: m.apply({"params": p, "batch_stats": bs}, x, train=False))
  tr = jax.jit(lambda p, bs, x: m.apply({"params": p, "batch_stats": bs}, x, train=True,
                                        mutable=["batch_stats"]))
  return m, v, x, ev, tr


def test_batchnorm_eval_is_per_example_and_train_uses_the_batch(tiny_resnet):
  m, v, x, ev, tr = tiny_resnet
  p, bs = v["params"], v["batch_stats"]
  other = x.at[1:].set(jax.random.normal(jax.random.key(5), x[1:].shape) * 5.0)
  # Inference mode: example 0's output does not depend on the rest of the batch ...
  np.testing.assert_allclose(ev(p, bs, x)[0], ev(p, bs, other)[0], rtol=1e-5, atol=1e-6)
  # ... while in training mode it does (batch statistics).
  assert np.max(np.abs(tr(p, bs, x)[0][0] - tr(p, bs, other)[0][0])) > 1e-3


def test_batchnorm_running_stats_move_toward_batch_stats(tiny_resnet):
  m, v, x, ev, tr = tiny_resnet
  p = v["params"]
  _, upd = tr(p, v["batch_stats"], x)
  # The first BN normalizes the stem conv's output; compute that conv independently.
  kernel = v["params"]["Conv_0"]["kernel"]
  h = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  h = np.asarray(h, np.float64)
  bmean, bvar = h.mean((0, 1, 2)), h.var((0, 1, 2))
  old = v["batch_stats"]["BatchNorm_0"]
  new = upd["batch_stats"]["BatchNorm_0"]
  np.testing.assert_allclose(new["mean"], 0.9 * old["mean"] + 0.1 * bmean, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(new["var"], 0.9 * old["var"] + 0.1 * bvar, rtol=1e-4, atol=1e-5)

  # Repeated updates on one batch converge to its statistics at every layer, after which
  # inference mode reproduces training mode on that batch.
  bs = v["batch_stats"]
  for _ in range(150):  # 0.9**150 ~ 1e-7
    out_train, upd = tr(p, bs, x)
    bs = upd["batch_stats"]
  np.testing.assert_allclose(ev(p, bs, x), out_train, rtol=1e-3, atol=1e-3)
  assert np.max(np.abs(ev(p, v["batch_stats"], x) - out_train)) > 1e-2  # it had to move


def test_metric_fn_uses_running_stats_of_bn_models(tiny_resnet):
  m, v, x, ev, _ = tiny_resnet
  y = jnp.array([0, 1, 2, 1])
  fn = jax.jit(models.metric_fn(m, {"batch_stats": v["batch_stats"]}))
  got = fn(v["params"], {"x": x, "y": y})
  logits = ev(v["params"], v["batch_stats"], x)
  np.testing.assert_allclose(got["loss"], jnp.mean(objectives.cross_entropy(logits, y)), rtol=1e-5)
  np.testing.assert_allclose(got["accuracy"], jnp.mean(objectives.accuracy(logits, y)))


# ---------------------------------------------------------------- registry errors

@pytest.mark.parametrize("name,kwargs,match", [
    ("resnet50", {}, r"unknown model 'resnet50'; allowed: .*resnet20"),
    ("vgg13", {"width": 0}, r"width=0 must be a positive"),
    ("resnet18", {"width": -0.5}, r"width=-0.5 must be a positive"),
    ("mlp", {"widths": (8, 0)}, r"widths entry 0"),
    ("mlp", {"widths": ()}, r"widths=\(\)"),
    ("mlp", {"activation": "relu6"}, r"activation='relu6' is unknown; allowed: .*tanh"),
    ("small_cnn", {"dense": -1}, r"dense=-1"),
    ("vgg16", {"depth": 19}, r"unknown option\(s\) depth for model 'vgg16'; allowed: width"),
])
def test_create_model_rejects_bad_input(name, kwargs, match):
  with pytest.raises(ValueError, match=match):
    models.create_model(name, 10, **kwargs)


def test_create_model_rejects_bad_num_classes():
  with pytest.raises(ValueError, match="num_classes=0"):
    models.create_model("mlp", 0)


def test_init_variables_matches_shapes():
  m = models.create_model("mlp", 3, widths=(5,))
  v = models.init_variables(m, jax.random.key(0), (4,))
  assert list(v) == ["params"]
  assert jax.tree_util.tree_map(jnp.shape, v) == jax.tree_util.tree_map(lambda s: s.shape,
                                                                        _shapes(m, (4,)))
  assert trees.num_params(v) == _dense(4, 5) + _dense(5, 3)


# ---------------------------------------------------------------- skip connections (Li et al. §5)

def test_resnet56_and_noskip_parameter_counts():
  r56 = _resnet_count((9, 9, 9), (16, 32, 64), 3, 10, "pad")
  assert 0.84e6 < r56 < 0.86e6  # He et al. 2016, Table 6: 0.85M
  count = lambda name, **kw: trees.num_params(
      _shapes(models.create_model(name, 10, **kw), (32, 32, 3))["params"])
  assert count("resnet56") == r56
  # The "pad" shortcut has no parameters: removing it changes nothing in the count ...
  assert count("resnet56", skip=False) == r56
  assert count("resnet20", skip=False, width=0.25) == count("resnet20", width=0.25)
  # ... the "conv" projection has: ResNet-18-noshort is ResNet-18 minus its 3 projections.
  no_proj = _resnet_count((2, 2, 2, 2), (64, 128, 256, 512), 3, 10, "pad")
  assert count("resnet18", skip=False) == no_proj < count("resnet18")


@pytest.mark.parametrize("skip", [0, 1, "False", None])
def test_create_model_rejects_non_bool_skip(skip):
  with pytest.raises(ValueError, match=r"skip=.* must be a bool"):
    models.create_model("resnet56", 10, skip=skip)


def test_noskip_is_only_for_resnets():
  with pytest.raises(ValueError, match=r"unknown option\(s\) skip for model 'vgg13'"):
    models.create_model("vgg13", 10, skip=False)
