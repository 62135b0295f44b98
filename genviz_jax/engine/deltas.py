"""Builders of `delta_fn(ids) -> δ` for the engine: which parameter points to evaluate.

Each builder returns a small callable dataclass registered as a pytree: its arrays are leaves,
so the compiled chunk function takes them as arguments (a surface basis of a large net is not
baked into the executable as a constant, and a new coefficient table does not recompile).

  basis_delta      δ_k = Σ_i coeffs[k, i] · d_i      surfaces, lines, interpolations
  direction_delta  δ_k = radii[k] · direction(key, k)  basin points; directions made on the fly
  stacked_delta    δ_k = scales[k] · stacked[k]      directions, models or frames held in memory
                   (stacked_points: R models around a zero centre; centre_delta: δ = 0)
  noise_delta      δ_k = std ⊙ z_k, z_k ~ N(0, I)     PAC-Bayes weight noise (Jiang et al. 2019)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from genviz_jax import directions as directions_lib

PyTree = Any


def scale_rows(tree: PyTree, s: jax.Array) -> PyTree:
  """Leaf x (B, ...) times s (B,) row by row."""
  return jax.tree.map(lambda x: x * s.astype(x.dtype).reshape((-1,) + (1,) * (x.ndim - 1)), tree)


def _per_point(values: jax.Array, idx: jax.Array) -> jax.Array:
  return values[idx] if values.ndim == 1 else jnp.broadcast_to(values, idx.shape)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class BasisDelta:
  """δ_k = Σ_i coeffs[k, i] · d_i. basis leaves (D, *leaf.shape); coeffs (K, D)."""
  basis: PyTree
  coeffs: jax.Array

  def __call__(self, idx):
    c = self.coeffs[idx]
    return jax.tree.map(lambda d: combine(c.astype(d.dtype), d), self.basis)


# Up to this many directions, Σ_i c_i·d_i is an unrolled elementwise sum (a fused loop);
# beyond, a tensordot. Measured on the swiss-roll MLP (2-core CPU): the tensordot (one small
# dot per leaf and point group) cost 40% of a surface's time (13.7k vs 23.7k points/s).
_UNROLL = 16


def combine(c: jax.Array, d: jax.Array) -> jax.Array:
  """Σ_i c[..., i] · d[i]: c (B, D), d (D, *shape) -> (B, *shape)."""
  if d.shape[0] > _UNROLL:
    return jnp.tensordot(c, d, axes=1)
  lead = (c.shape[0],) + (1,) * (d.ndim - 1)
  out = c[:, 0].reshape(lead) * d[0]
  for i in range(1, d.shape[0]):
    out = out + c[:, i].reshape(lead) * d[i]
  return out


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class DirectionDelta:
  """δ_k = radii[k] · random_direction(key, params, offset + k)."""
  key: jax.Array
  params: PyTree
  radii: jax.Array
  offset: jax.Array
  norm: str = dataclasses.field(default="filter", metadata={"static": True})
  ignore_1d: bool = dataclasses.field(default=True, metadata={"static": True})
  filter_axis: tuple = dataclasses.field(default=-1, metadata={"static": True})

  def __call__(self, idx):
    r = _per_point(self.radii, idx)
    d = jax.vmap(lambda k: directions_lib.random_direction(
        self.key, self.params, k, norm=self.norm, ignore_1d=self.ignore_1d,
        filter_axis=self.filter_axis))(idx + self.offset)
    return scale_rows(d, r)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class StackedDelta:
  """δ_k = scales[k] · stacked[k] (scales None: 1). stacked leaves (K, *leaf.shape)."""
  stacked: PyTree
  scales: jax.Array | None = None

  def __call__(self, idx):
    d = jax.tree.map(lambda x: x[idx], self.stacked)
    return d if self.scales is None else scale_rows(d, _per_point(self.scales, idx))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class NoiseDelta:
  """δ_k = std ⊙ z_k with z_k ~ N(0, I) drawn from fold_in(fold_in(key, k), leaf number)."""
  key: jax.Array
  std: PyTree

  def __call__(self, idx):
    leaves, treedef = jax.tree_util.tree_flatten(self.std)

    def one(k):
      kk = jax.random.fold_in(self.key, k)
      return [s * jax.random.normal(jax.random.fold_in(kk, i), s.shape, s.dtype)
              for i, s in enumerate(leaves)]

    return jax.tree_util.tree_unflatten(treedef, jax.vmap(one)(idx))


def basis_delta(basis: PyTree, coeffs) -> BasisDelta:
  """δ_k = Σ_i coeffs[k, i] · d_i: points on a surface spanned by shared directions.

  Args:
    basis: pytree like params with leaves (D, *leaf.shape): the D directions d_i.
    coeffs: (K, D) coefficients α; point k is θ + Σ_i α[k, i] d_i.
  """
  coeffs = jnp.asarray(coeffs)
  if coeffs.ndim != 2:
    raise ValueError(f"coeffs have shape {coeffs.shape}; need (K, D)")
  num_dirs = coeffs.shape[1]
  for path, leaf in jax.tree_util.tree_flatten_with_path(basis)[0]:
    if np.ndim(leaf) < 1 or np.shape(leaf)[0] != num_dirs:
      raise ValueError(f"basis leaf {jax.tree_util.keystr(path)} has shape {np.shape(leaf)}; "
                       f"need a leading axis of D={num_dirs} (coeffs are {coeffs.shape})")
  return BasisDelta(basis, coeffs)


def direction_delta(key: jax.Array, params: PyTree, radii, *, norm: str = "filter",
                    ignore_1d: bool = True, offset=0, filter_axis=-1) -> DirectionDelta:
  """δ_k = radii[k] · random_direction(key, params, offset + k): basin-style points.

  Directions are regenerated from (key, k) inside the compiled call, so K directions are never
  held in memory. radii: a scalar or (K,), indexed by point id (may be traced); offset: the
  direction number of point id 0 (may be traced); filter_axis: as for directions.filter_axes.
  """
  directions_lib._check_norm(norm)
  radii = jnp.asarray(radii)
  if radii.ndim > 1:
    raise ValueError(f"radii have shape {radii.shape}; need a scalar or (K,)")
  return DirectionDelta(key, params, radii, jnp.asarray(offset, jnp.int32), norm, bool(ignore_1d),
                        directions_lib.filter_axes(params, filter_axis))


def stacked_delta(stacked: PyTree, scales=None) -> StackedDelta:
  """δ_k = scales[k] · stacked[k] for directions (or model offsets) already in memory."""
  leaves = jax.tree.leaves(stacked)
  if not leaves or any(np.ndim(x) < 1 for x in leaves):
    raise ValueError("stacked directions need leaves (K, *leaf.shape)")
  if len({np.shape(x)[0] for x in leaves}) != 1:
    raise ValueError(f"stacked leaves have different leading sizes "
                     f"{sorted({np.shape(x)[0] for x in leaves})}; need one K")
  scales = None if scales is None else jnp.asarray(scales)
  if scales is not None and scales.ndim > 1:
    raise ValueError(f"scales have shape {scales.shape}; need a scalar or (K,)")
  return StackedDelta(stacked, scales)


def stacked_points(stacked: PyTree) -> tuple[PyTree, StackedDelta, int]:
  """(centre, delta_fn, R): R parameter sets (leaves (R, ...), e.g. an ensemble's runs) as engine
  points around a zero centre, so point r is 0 + stacked[r] = stacked[r] bit for bit."""
  leaves = jax.tree.leaves(stacked)
  if not leaves or any(np.ndim(a) < 1 for a in leaves):
    raise ValueError("stacked params need leaves with a leading axis (R, ...)")
  centre = jax.tree.map(lambda a: jnp.zeros(np.shape(a)[1:], jnp.result_type(a)), stacked)
  return centre, stacked_delta(stacked), int(np.shape(leaves[0])[0])


def centre_delta(params: PyTree) -> StackedDelta:
  """δ_0 = 0: one point, params itself."""
  return stacked_delta(jax.tree.map(lambda p: jnp.zeros((1,) + np.shape(p), jnp.result_type(p)),
                                    params))


def noise_delta(key: jax.Array, std: PyTree) -> NoiseDelta:
  """δ_k = std ⊙ z_k, z_k ~ N(0, I): noise k is a pure function of (key, k), so every scale of
  `std` sees the same z_k (common random numbers)."""
  return NoiseDelta(key, std)
