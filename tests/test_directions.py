"""Directions: filter norms against the parameter filters, reproducibility, 1-D rules, errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genviz_jax import directions


class _ConvNet(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3))(x))
    x = nn.BatchNorm(use_running_average=True)(x)
    x = x.reshape((x.shape[0], -1))
    return nn.Dense(3)(x)


def _conv_params():
  v = _ConvNet().init(jax.random.key(0), jnp.ones((1, 5, 5, 2)))
  return v["params"]


def _filter_norms(a):
  a = np.asarray(a, np.float64)
  return np.sqrt(np.sum(a.reshape(-1, a.shape[-1]) ** 2, axis=0))


def test_filter_norm_matches_parameter_filters_dense_and_conv():
  params = _conv_params()
  d = directions.random_direction(jax.random.key(1), params, 3, norm="filter")
  conv, dense = d["Conv_0"]["kernel"], d["Dense_0"]["kernel"]
  assert conv.shape == (3, 3, 2, 4) and dense.shape == (100, 3)
  for name in ("Conv_0", "Dense_0"):
    want = _filter_norms(params[name]["kernel"])
    got = _filter_norms(d[name]["kernel"])
    np.testing.assert_allclose(got, want, rtol=1e-5)
    # The norm is per LAST-axis slice, not per first-axis slice (PyTorch layout).
    assert not np.allclose(np.linalg.norm(np.asarray(d[name]["kernel"]).reshape(
        np.shape(d[name]["kernel"])[0], -1), axis=1),
        np.linalg.norm(np.asarray(params[name]["kernel"]).reshape(
            np.shape(d[name]["kernel"])[0], -1), axis=1), rtol=1e-3)
  # 1-D parameters (biases, BatchNorm scale/bias) are ignored by default.
  for leaf in (d["Conv_0"]["bias"], d["Dense_0"]["bias"], d["BatchNorm_0"]["scale"]):
    assert not np.any(np.asarray(leaf))


def test_layer_norm_and_none():
  params = _conv_params()
  d = directions.random_direction(jax.random.key(2), params, 0, norm="layer")
  for name in ("Conv_0", "Dense_0"):
    np.testing.assert_allclose(np.linalg.norm(d[name]["kernel"]),
                               np.linalg.norm(params[name]["kernel"]), rtol=1e-5)
  raw = directions.random_direction(jax.random.key(2), params, 0, norm="none")
  # Same Gaussian draw underneath: layer = raw rescaled by one positive number.
  ratio = np.asarray(d["Dense_0"]["kernel"]) / np.asarray(raw["Dense_0"]["kernel"])
  np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-4)


def test_zero_norm_filter_gives_zero_direction():
  params = {"w": jnp.ones((3, 4)).at[:, 2].set(0.0), "c": jnp.zeros((2, 2, 1, 3))}
  for norm in ("filter", "layer"):
    d = directions.random_direction(jax.random.key(0), params, 7, norm=norm)
    assert np.all(np.isfinite(d["w"])) and np.all(np.isfinite(d["c"]))
    assert not np.any(np.asarray(d["c"]))
    if norm == "filter":
      assert not np.any(np.asarray(d["w"][:, 2]))
      np.testing.assert_allclose(_filter_norms(d["w"])[[0, 1, 3]], np.sqrt(3.0), rtol=1e-5)
  assert directions.num_perturbed(params, norm="filter") == 9
  assert directions.num_perturbed(params, norm="none") == 24


def test_one_d_rules():
  params = {"b": jnp.array([1.0, -2.0, 0.0]), "w": jnp.ones((2, 3))}
  keep = directions.random_direction(jax.random.key(0), params, 1, norm="filter", ignore_1d=False)
  np.testing.assert_array_equal(keep["b"], params["b"])  # Li et al.: copy the parameter
  raw = directions.random_direction(jax.random.key(0), params, 1, norm="none", ignore_1d=False)
  assert np.all(np.asarray(raw["b"]) != 0)
  assert directions.num_perturbed(params, ignore_1d=True) == 6
  assert directions.num_perturbed(params, ignore_1d=False) == 8  # the zero bias cannot move
  assert directions.num_perturbed(params, ignore_1d=False, norm="none") == 9


def test_direction_k_independent_of_chunking_and_jit():
  params = _conv_params()
  key = jax.random.key(5)
  whole = directions.random_directions(key, params, 10)
  part = directions.random_directions(key, params, 4, start=6)
  jitted = jax.jit(lambda k: directions.random_direction(key, params, k))(jnp.int32(8))
  single = directions.random_direction(key, params, 8)
  for a, b, c, e in zip(jax.tree.leaves(whole), jax.tree.leaves(part), jax.tree.leaves(jitted),
                        jax.tree.leaves(single)):
    np.testing.assert_array_equal(a[6:], b)
    np.testing.assert_allclose(a[8], c, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(e, c, rtol=1e-6, atol=1e-7)
  # Different k, different direction.
  assert not np.allclose(whole["Dense_0"]["kernel"][0], whole["Dense_0"]["kernel"][1])


def test_directions_are_gaussian_before_normalization():
  params = {"w": jnp.ones((200, 50))}
  d = np.asarray(directions.random_direction(jax.random.key(3), params, 0, norm="none")["w"])
  assert abs(d.mean()) < 0.02 and abs(d.std() - 1.0) < 0.02


def test_bad_input():
  params = {"a": {"kernel": jnp.ones((2, 3))}, "b": {"kernel": jnp.ones((3, 1))}}
  with pytest.raises(ValueError, match=r"\['b'\]\['bias'\]|\['b'\]"):
    directions.normalize_direction({"a": {"kernel": jnp.ones((2, 3))},
                                    "b": {"bias": jnp.ones((1,))}}, params, "filter", True)
  with pytest.raises(ValueError, match=r"\['a'\]\['kernel'\].*\(3, 2\)"):
    directions.normalize_direction({"a": {"kernel": jnp.ones((3, 2))},
                                    "b": {"kernel": jnp.ones((3, 1))}}, params, "filter", True)
  with pytest.raises(ValueError, match="norm='fliter'"):
    directions.random_direction(jax.random.key(0), params, 0, norm="fliter")
  with pytest.raises(ValueError, match="num=0"):
    directions.random_directions(jax.random.key(0), params, 0)
  with pytest.raises(ValueError, match="start=-1"):
    directions.random_directions(jax.random.key(0), params, 2, start=-1)


def _row_norms(a):
  """Li et al.'s per-output-channel norms, PyTorch layout (out, in, ...): one per first-axis row."""
  a = np.asarray(a, np.float64)
  return np.sqrt(np.sum(a.reshape(a.shape[0], -1) ** 2, axis=1))


def test_filter_axis_first_normalizes_rows_of_torch_layout():
  rng = np.random.default_rng(0)
  params = {"lin": jnp.asarray(rng.normal(size=(4, 6)), jnp.float32),  # (out, in)
            "conv": jnp.asarray(rng.normal(size=(3, 2, 3, 3)), jnp.float32),  # (out, in, kh, kw)
            "bias": jnp.ones((4,))}
  for axis in ("first", 0):
    d = directions.random_direction(jax.random.key(4), params, 2, filter_axis=axis)
    for name in ("lin", "conv"):
      np.testing.assert_allclose(_row_norms(d[name]), _row_norms(params[name]), rtol=1e-5)
      # And not the Flax rule (last-axis slices), which this layout would get by default.
      assert not np.allclose(_filter_norms(d[name]), _filter_norms(params[name]), rtol=1e-3)
    assert not np.any(np.asarray(d["bias"]))
  # The default (last axis) gives the Flax rule on the same arrays, from the same draw.
  d_last = directions.random_direction(jax.random.key(4), params, 2)
  np.testing.assert_allclose(_filter_norms(d_last["lin"]), _filter_norms(params["lin"]), rtol=1e-5)
  raw = directions.random_direction(jax.random.key(4), params, 2, norm="none")
  ratio = np.asarray(d["lin"]) / np.asarray(raw["lin"])  # one positive scale per row
  np.testing.assert_allclose(ratio, np.repeat(ratio[:, :1], 6, axis=1), rtol=1e-4)
  assert np.all(ratio > 0)


def test_filter_axis_named_equals_int_and_default_is_last():
  params = _conv_params()
  key = jax.random.key(6)
  base = directions.random_directions(key, params, 3)
  for same in ("last", -1, directions.filter_axes(params, -1)):
    other = directions.random_directions(key, params, 3, filter_axis=same)
    for a, b in zip(jax.tree.leaves(base), jax.tree.leaves(other)):
      np.testing.assert_array_equal(a, b)
  assert directions.filter_axes(params, "first") == tuple(
      None if np.ndim(p) <= 1 else 0 for p in jax.tree.leaves(params))


def test_filter_axis_per_leaf_pytree_for_mixed_layouts():
  rng = np.random.default_rng(1)
  params = {"flax": jnp.asarray(rng.normal(size=(6, 4)), jnp.float32),   # (in, out)
            "torch": jnp.asarray(rng.normal(size=(4, 6)), jnp.float32),  # (out, in)
            "b": jnp.zeros((4,))}
  axes = {"flax": "last", "torch": 0, "b": None}
  d = directions.random_direction(jax.random.key(2), params, 5, filter_axis=axes)
  np.testing.assert_allclose(_filter_norms(d["flax"]), _filter_norms(params["flax"]), rtol=1e-5)
  np.testing.assert_allclose(_row_norms(d["torch"]), _row_norms(params["torch"]), rtol=1e-5)
  # Under jit, vmapped over k, and via normalize_direction: the same direction.
  stack = directions.random_directions(jax.random.key(2), params, 6, filter_axis=axes)
  raw = directions.random_direction(jax.random.key(2), params, 5, norm="none", ignore_1d=False)
  again = directions.normalize_direction(raw, params, "filter", True, filter_axis=axes)
  for a, b, c in zip(jax.tree.leaves(d), jax.tree.leaves(stack), jax.tree.leaves(again)):
    np.testing.assert_allclose(b[5], a, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(c, a, rtol=1e-6, atol=1e-7)
  assert directions.filter_axes(params, axes) == (None, 1, 0)  # tree order: b, flax, torch


def test_num_perturbed_counts_filters_along_filter_axis():
  w = np.ones((3, 4), np.float32)
  w[1, :] = 0.0   # a dead output row in (out, in) layout
  params = {"w": jnp.asarray(w)}
  assert directions.num_perturbed(params, filter_axis="first") == 8   # 2 live rows of 4
  assert directions.num_perturbed(params) == 12    # last-axis filters: every column has a 1
  d = directions.random_direction(jax.random.key(0), params, 0, filter_axis=0)
  assert int(np.count_nonzero(np.asarray(d["w"]))) == 8
  assert not np.any(np.asarray(d["w"][1]))


def test_filter_axis_bad_input():
  params = {"w": jnp.ones((2, 3)), "b": jnp.ones((3,))}
  key = jax.random.key(0)
  with pytest.raises(ValueError, match=r"filter_axis=2 .*\['w'\].*\[-2, 1\]"):
    directions.random_direction(key, params, 0, filter_axis=2)
  with pytest.raises(ValueError, match="filter_axis='middle'"):
    directions.random_directions(key, params, 2, filter_axis="middle")
  with pytest.raises(ValueError, match="filter_axis=True"):
    directions.num_perturbed(params, filter_axis=True)
  with pytest.raises(ValueError, match=r"filter_axis=\{'w': 0\}"):
    directions.normalize_direction(params, params, filter_axis={"w": 0})
  with pytest.raises(ValueError, match="filter_axis=None"):
    directions.random_direction(key, params, 0, filter_axis=None)
  with pytest.raises(ValueError, match=r"filter_axis=1.5 .*\['w'\]"):
    directions.random_direction(key, params, 0, filter_axis={"w": 1.5, "b": 0})


def test_filter_axis_none_marks_a_per_unit_vector():
  # An equinox Conv bias is (out, 1, 1): one value per output unit, like a PyTorch bias (out,).
  bias = jnp.asarray([[[0.5]], [[-2.0]], [[0.0]]])
  params = {"bias": bias, "w": jnp.ones((3, 2, 3, 3))}
  axes = {"bias": None, "w": "first"}
  d = directions.random_direction(jax.random.key(1), params, 0, filter_axis=axes)
  assert d["bias"].shape == (3, 1, 1) and not np.any(np.asarray(d["bias"]))
  keep = directions.random_direction(jax.random.key(1), params, 0, filter_axis=axes,
                                     ignore_1d=False)
  np.testing.assert_array_equal(keep["bias"], bias)   # Li et al.'s 1-D rule: copy the parameter
  assert directions.num_perturbed(params, filter_axis=axes) == 54
  assert directions.num_perturbed(params, ignore_1d=False, filter_axis=axes) == 56
  # Given an axis instead, the (3, 1, 1) leaf is a kernel of three one-weight filters.
  as_kernel = directions.random_direction(jax.random.key(1), params, 0, filter_axis=0)
  np.testing.assert_allclose(np.abs(np.asarray(as_kernel["bias"])), np.abs(np.asarray(bias)),
                             rtol=1e-6)
