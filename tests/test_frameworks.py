"""Any JAX model: landscape, basin radii, top Hessian eigenvalue and PAC-Bayes σ' on flax.nnx,
equinox and haiku models, each checked against a reference computed here without the library.

  plane           values equal a direct loss evaluation at θ + x·d1 + y·d2
  radii           equal a slow Python bisection (same bracketing rule) along the same directions
  top eigenvalue  equals the largest eigenvalue of the dense Hessian (jax.hessian, raveled θ)
  σ'              every Monte Carlo mean change in the search equals a direct evaluation, and the
                  final bracket straddles the target
  equinox layout  filter_axis="first": each (out, in, ...) row of a direction has the norm of the
                  same row of the weight (Li et al.'s per-output-channel rule, in numpy)

The losses include unhashable callables: an equinox Module with array fields and a dataclass
holding an array (neither can be a dict key or an lru_cache argument).
"""

import dataclasses
import functools
from typing import Any, Callable

import equinox as eqx
import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.flatten_util import ravel_pytree

from genviz_jax import basin, directions, hessian, landscape, sharpness

_RNG = np.random.default_rng(0)
_X = jnp.asarray(_RNG.normal(size=(24, 2)), jnp.float32)
_Y = jnp.asarray(_RNG.integers(0, 3, size=24), jnp.int32)
_DATA = {"x": _X, "y": _Y}


def _metrics(logits, y):
  """Batch means: softmax cross-entropy (nats) and accuracy."""
  logp = jax.nn.log_softmax(logits)
  return {"loss": -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1)),
          "accuracy": jnp.mean((jnp.argmax(logits, -1) == y).astype(jnp.float32))}


class _EqxLoss(eqx.Module):
  """loss(params): the equinox MLP on arrays held as fields (unhashable: hash of its arrays)."""
  static: Any
  x: jax.Array
  y: jax.Array

  def __call__(self, params):
    model = eqx.combine(params, self.static)
    return _metrics(jax.vmap(model)(self.x), self.y)


@dataclasses.dataclass
class _HaikuLoss:
  """loss(params, batch) with a per-class weight array (a dataclass with eq: __hash__ is None)."""
  apply: Callable
  logit_scale: jax.Array

  def __call__(self, params, batch):
    return _metrics(self.apply(params, batch["x"]) * self.logit_scale, batch["y"])


@dataclasses.dataclass(frozen=True)
class _Case:
  params: Any
  loss_fn: Callable         # called as loss_fn(params, data) when data is not None
  data: Any
  filter_axis: Any
  hashable_loss: bool

  def __call__(self, params):
    return self.loss_fn(params) if self.data is None else self.loss_fn(params, self.data)

  @functools.cached_property
  def reference_loss(self) -> Callable:
    """θ -> the loss, compiled directly from the user's loss (no library code)."""
    return jax.jit(lambda p: self(p)["loss"])


def _nnx_case() -> _Case:
  model = nnx.Sequential(nnx.Linear(2, 8, rngs=nnx.Rngs(0)), nnx.relu,
                         nnx.Linear(8, 3, rngs=nnx.Rngs(1)))
  graphdef, params = nnx.split(model, nnx.Param)   # kernels (in, out): filter_axis "last"

  def loss_fn(p, batch):
    return _metrics(nnx.merge(graphdef, p)(batch["x"]), batch["y"])
  return _Case(params, loss_fn, _DATA, "last", True)


def _equinox_case() -> _Case:
  model = eqx.nn.MLP(2, 3, 8, 1, key=jax.random.key(0))   # weights (out, in): "first"
  params, static = eqx.partition(model, eqx.is_array)
  return _Case(params, _EqxLoss(static, _X, _Y), None, "first", False)


def _haiku_case() -> _Case:
  f = hk.without_apply_rng(hk.transform(lambda x: hk.nets.MLP([8, 3])(x)))
  params = f.init(jax.random.key(0), _X[:1])   # w (in, out): filter_axis "last"
  return _Case(params, _HaikuLoss(f.apply, jnp.asarray([1.0, 1.5, 0.8])), _DATA, "last", False)


CASES = {"nnx": _nnx_case, "equinox": _equinox_case, "haiku": _haiku_case}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request) -> _Case:
  return CASES[request.param]()


def _at(params, *terms):
  """θ + Σ c·d for (c, d) in terms, leaf by leaf."""
  return jax.tree.map(lambda p, *ds: p + sum(c * d for c, d in zip((t[0] for t in terms), ds)),
                      params, *(t[1] for t in terms))


def _directions(case: _Case, seed: int, num: int):
  """Directions 0..num-1 (stacked), compiled: eager generation compiles op by op."""
  return jax.jit(lambda p: directions.random_directions(jax.random.key(seed), p, num,
                                                        filter_axis=case.filter_axis))(case.params)


def _loss(case: _Case, params) -> float:
  return float(case.reference_loss(params))


def test_equinox_and_haiku_losses_are_unhashable(case):
  if case.hashable_loss:
    hash(case.loss_fn)
  else:
    with pytest.raises(TypeError):
      hash(case.loss_fn)


def test_plane_equals_direct_evaluation(case):
  d = _directions(case, 1, 2)
  d1, d2 = (jax.tree.map(lambda x, i=i: x[i], d) for i in range(2))
  axis, grids = landscape.plane(case.loss_fn, case.params, d, num=3, lo=-0.5, hi=1.0,
                                data=case.data)
  np.testing.assert_allclose(axis, [-0.5, 0.25, 1.0])
  want = np.array([[_loss(case, _at(case.params, (x, d1), (y, d2))) for y in axis] for x in axis])
  np.testing.assert_allclose(grids["loss"], want, rtol=1e-5, atol=1e-6)


def _slow_radius(case: _Case, direction, tau: float, r_init: float, r_max: float,
                 rtol: float) -> float:
  """The bracketing rule of Li-style basin radii, one direction, in plain Python: r_init, 2·r_init,
  ... up to r_max until loss > tau, then bisection of [lo, hi] until hi - lo <= rtol·hi."""
  crossed = lambda r: not _loss(case, _at(case.params, (r, direction))) <= tau
  lo, r = 0.0, r_init
  while not crossed(r):
    if r >= r_max:
      return r_max
    lo, r = r, min(2 * r, r_max)
  hi = r
  while hi - lo > rtol * hi:
    mid = 0.5 * (lo + hi)
    lo, hi = (lo, mid) if crossed(mid) else (mid, hi)
  return hi


def test_radii_equal_slow_bisection(case):
  k = 3
  d = _directions(case, 2, k)
  rtol = 1e-3
  res = basin.radii(case.loss_fn, case.params, d, threshold=0.25, relative=True, data=case.data,
                    r_init=0.125, r_max=16.0, rtol=rtol, chunk_size=4)
  tau = _loss(case, case.params) + 0.25
  np.testing.assert_allclose(res.threshold, tau, rtol=1e-6)
  want = [_slow_radius(case, jax.tree.map(lambda x, i=i: x[i], d), tau, 0.125, 16.0, rtol)
          for i in range(k)]
  assert not np.any(res.censored)
  np.testing.assert_allclose(res.radius, want, rtol=3 * rtol)


def test_top_eigenvalue_equals_dense_hessian(case):
  flat, unravel = ravel_pytree(case.params)
  dense = jax.jit(jax.hessian(lambda f: case(unravel(f))["loss"]))(flat)
  want = np.linalg.eigvalsh(np.asarray(dense, np.float64))[-1]
  op = hessian.HessianOperator(case.loss_fn, case.params, case.data)
  got = hessian.top_eigenpairs(op, 1, key=jax.random.key(3))
  np.testing.assert_allclose(got.eigenvalues[0], want, rtol=1e-3)


def test_sigma_prime_search_equals_direct_noise_evaluation(case):
  key, num, target = jax.random.key(4), 6, 0.05
  res = sharpness.flatness_sigma(case.loss_fn, case.params, case.data, metric="loss",
                                 target=target, sigma_min=1e-3, sigma_max=1.0, num_bisection=3,
                                 num_samples=num, key=key)
  base = _loss(case, case.params)
  np.testing.assert_allclose(res.base, base, rtol=1e-5)

  noise_at = jax.jit(lambda s: sharpness.gaussian_noise_delta(key, case.params, s)(
      jnp.arange(num)))

  def direct_change(s):
    noise = noise_at(s)
    return np.mean([_loss(case, _at(case.params, (1.0, jax.tree.map(lambda z, i=i: z[i], noise))))
                    for i in range(num)]) - base

  assert len(res.history) == 2 + 3
  direct = {s: direct_change(s) for s, _, _ in res.history}
  for s, mean_change, _ in res.history:
    np.testing.assert_allclose(mean_change, direct[s], rtol=1e-4, atol=1e-5)
  assert res.censored == ""
  lo, hi = res.bracket   # both evaluated in the search
  assert direct[lo] <= target < direct[hi]
  assert lo < res.sigma < hi


def _row_norms(a):
  """Li et al. per output channel, layout (out, in, ...): the norm of each first-axis row."""
  a = np.asarray(a, np.float64)
  return np.sqrt(np.sum(a.reshape(a.shape[0], -1) ** 2, axis=1))


def test_equinox_filter_normalization_is_per_output_channel():
  keys = jax.random.split(jax.random.key(5), 2)
  model = [eqx.nn.Conv2d(2, 4, 3, key=keys[0]), eqx.nn.Linear(36, 3, key=keys[1])]
  params, _ = eqx.partition(model, eqx.is_array)
  conv_w, lin_w = params[0].weight, params[1].weight
  assert conv_w.shape == (4, 2, 3, 3) and lin_w.shape == (3, 36)
  assert params[0].bias.shape == (4, 1, 1)   # a per-unit vector with unit axes
  # The README recipe: weights "first", biases None (the 1-D rules: ignored by default).
  axes = jax.tree_util.tree_map_with_path(
      lambda path, p: None if path[-1].name == "bias" else "first", params)
  d = jax.jit(lambda p: directions.random_direction(jax.random.key(6), p, 0, filter_axis=axes))(
      params)
  np.testing.assert_allclose(_row_norms(d[0].weight), _row_norms(conv_w), rtol=1e-5)
  np.testing.assert_allclose(_row_norms(d[1].weight), _row_norms(lin_w), rtol=1e-5)
  assert not np.any(np.asarray(d[0].bias)) and not np.any(np.asarray(d[1].bias))
  assert directions.num_perturbed(params, filter_axis=axes) == conv_w.size + lin_w.size
  # The Flax default normalizes the last axis instead: wrong rows for this layout.
  flax_rule = jax.jit(lambda p: directions.random_direction(jax.random.key(6), p, 0))(params)
  assert not np.allclose(_row_norms(flax_rule[1].weight), _row_norms(lin_w), rtol=1e-2)


def test_random_directions_in_radii_take_filter_axis():
  case = _equinox_case()
  spec = basin.RandomDirections(jax.random.key(7), 2, filter_axis=case.filter_axis)
  stacked = _directions(case, 7, 2)
  kwargs = dict(threshold=0.25, relative=True, rtol=1e-3, chunk_size=2)
  got = basin.radii(case.loss_fn, case.params, spec, **kwargs)
  want = basin.radii(case.loss_fn, case.params, stacked, **kwargs)
  np.testing.assert_allclose(got.radius, want.radius, rtol=1e-6)
  assert got.dim == directions.num_perturbed(case.params, filter_axis="first")
