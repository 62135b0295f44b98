"""ResNets with and without skip connections (Li et al. 2018 §5): the block, the configs."""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genviz_jax import models, train, trees

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_config(path, variant):
  spec = importlib.util.spec_from_file_location("cfg", os.path.join(ROOT, path))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(variant)


# ---------------------------------------------------------------- the block, by hand

def _block_variables(block, x, seed):
  """BasicBlock variables with numpy values: random kernels, non-trivial BN state."""
  shapes = jax.eval_shape(lambda k: block.init(k, x, False), jax.random.key(0))
  rng = np.random.RandomState(seed)

  def fill(path, s):
    name = jax.tree_util.keystr(path[-1:])
    if "var" in name:
      return jnp.asarray(rng.uniform(0.5, 2.0, s.shape), jnp.float32)
    scale = 0.5 if "kernel" in name else 1.0
    return jnp.asarray(rng.randn(*s.shape) * scale, jnp.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def _conv_bn(h, kernel, bn, stats, strides):
  h = jax.lax.conv_general_dilated(h, kernel, (strides, strides), "SAME",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return (h - stats["mean"]) / jnp.sqrt(stats["var"] + 1e-5) * bn["scale"] + bn["bias"]


@pytest.mark.parametrize("strides,c_in,c_out", [(1, 4, 4), (2, 3, 6)])
def test_noskip_block_differs_from_the_skip_block_by_exactly_the_shortcut(strides, c_in, c_out):
  x = jax.random.normal(jax.random.key(1), (2, 6, 6, c_in))
  with_skip = models.BasicBlock(c_out, strides=strides, shortcut="pad")
  without = models.BasicBlock(c_out, strides=strides, shortcut="pad", skip=False)
  v = _block_variables(with_skip, x, seed=strides)
  assert jax.tree.map(jnp.shape, v) == jax.tree.map(
      jnp.shape, jax.eval_shape(lambda k: without.init(k, x, False), jax.random.key(0)))
  p, s = v["params"], v["batch_stats"]
  # F(x) = BN(conv(ReLU(BN(conv(x))))) computed by hand in inference mode.
  h = jax.nn.relu(_conv_bn(x, p["Conv_0"]["kernel"], p["BatchNorm_0"], s["BatchNorm_0"], strides))
  y = _conv_bn(h, p["Conv_1"]["kernel"], p["BatchNorm_1"], s["BatchNorm_1"], 1)
  # He's option A shortcut: subsample by the stride, zero-pad the new channels.
  short = jnp.pad(x[:, ::strides, ::strides], ((0, 0), (0, 0), (0, 0), (0, c_out - c_in)))
  out_skip = with_skip.apply(v, x, False)
  out_noskip = without.apply(v, x, False)
  np.testing.assert_allclose(out_noskip, jax.nn.relu(y), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(out_skip, jax.nn.relu(y + short), rtol=1e-4, atol=1e-4)
  assert np.max(np.abs(out_skip - out_noskip)) > 0.1

  # With the last BN's scale at 0, F(x) is its bias b: noshort gives ReLU(b) whatever x is,
  # the residual block ReLU(b + shortcut(x)).
  p0 = jax.tree.map(lambda a: a, p)
  p0["BatchNorm_1"] = {"scale": jnp.zeros(c_out), "bias": jnp.linspace(-1.0, 1.0, c_out)}
  v0 = {"params": p0, "batch_stats": s}
  b = p0["BatchNorm_1"]["bias"]
  np.testing.assert_allclose(without.apply(v0, x, False),
                             jnp.broadcast_to(jax.nn.relu(b), out_noskip.shape), atol=1e-6)
  np.testing.assert_allclose(with_skip.apply(v0, x, False), jax.nn.relu(b + short), atol=1e-6)


# ---------------------------------------------------------------- the configs

def _num_params(c, input_shape):
  model = models.create_model(c.model, 10, **c.model_kwargs)
  shapes = jax.eval_shape(lambda k: models.init_variables(model, k, input_shape),
                          jax.random.key(0))
  return trees.num_params(shapes["params"])


@pytest.mark.parametrize("path,pairs,shape", [
    ("experiments/configs/cifar10_resnet.py",
     [("resnet20", "resnet20_noskip"), ("resnet56", "resnet56_noskip"), ("", "resnet56_noskip"),
      ("resnet56_quick", "resnet56_noskip_quick")], (32, 32, 3)),
    ("experiments/configs/digits_resnet.py",
     [("", "noskip"), ("skip", "noskip"), ("quick", "noskip_quick")], (8, 8, 1)),
])
def test_noskip_variants_differ_only_in_the_switch(path, pairs, shape):
  for a, b in pairs:
    ca, cb = _load_config(path, a), _load_config(path, b)
    assert ca.model_kwargs.skip is True and cb.model_kwargs.skip is False
    cb.model_kwargs.skip = True
    assert ca.to_dict() == cb.to_dict(), (a, b)
    cb.model_kwargs.skip = False
    # The "pad" shortcut has no parameters: the same parameter count with and without skips.
    assert _num_params(ca, shape) == _num_params(cb, shape)


def test_config_variants_and_recipe():
  c = _load_config("experiments/configs/cifar10_resnet.py", "resnet56_noskip")
  assert (c.model, c.batch_size, c.learning_rate, c.momentum, c.weight_decay) == \
      ("resnet56", 128, 0.1, 0.9, 5e-4)
  assert c.num_steps == 300 * 390 and c.lr_boundaries == (150 * 390, 225 * 390, 275 * 390)
  assert _load_config("experiments/configs/cifar10_resnet.py", "resnet20").model == "resnet20"
  for path in ("experiments/configs/cifar10_resnet.py", "experiments/configs/digits_resnet.py"):
    with pytest.raises(ValueError, match=r"config variant 'resnet110' is not one of: .*noskip"):
      _load_config(path, "resnet110")
    train.validate_config(_load_config(path, ""))


@pytest.mark.parametrize("variant", [
    pytest.param("resnet20_noskip_quick", marks=pytest.mark.slow),
    pytest.param("resnet20_quick", marks=pytest.mark.slow),
    pytest.param("resnet56_quick", marks=pytest.mark.slow),
    pytest.param("resnet56_noskip_quick", marks=pytest.mark.slow),
])
def test_cifar10_resnet_quick_trains_on_mock_tfds(tmp_path, variant):
  tfds = pytest.importorskip("tensorflow_datasets")
  c = _load_config("experiments/configs/cifar10_resnet.py", variant)
  c.data_dir = str(tmp_path / "data")
  os.makedirs(c.data_dir)
  with tfds.testing.mock_data(num_examples=64, policy=tfds.testing.MockPolicy.USE_CODE):
    s = train.train_and_evaluate(c, str(tmp_path / "run"))
  assert s["steps"] == 2 and np.isfinite(s["train_loss"]) and 0 <= s["test_accuracy"] <= 1
  assert s["num_params"] == _num_params(c, (32, 32, 3))


@pytest.mark.parametrize("variant", [
    pytest.param("noskip_quick", marks=pytest.mark.slow),
    pytest.param("quick", marks=pytest.mark.slow)])
def test_digits_resnet_quick_trains(tmp_path, variant):
  from genviz_jax import workdir
  c = _load_config("experiments/configs/digits_resnet.py", variant)
  s = train.train_and_evaluate(c, str(tmp_path))
  assert s["steps"] == c.num_steps and np.isfinite(s["train_loss"])
  assert s["model"] == "resnet20" and 0 <= s["test_accuracy"] <= 1
  steps, _ = workdir.snapshots(str(tmp_path))  # the trajectory PCA has its iterates
  assert len(steps) >= 2
