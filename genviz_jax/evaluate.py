"""The batched evaluation engine: metrics at many parameter points θ + δ_k over a dataset.

Every landscape, basin, Hessian and sharpness feature is "evaluate metrics at K parameter points
over a dataset"; it lives here, once.

Layers, from the inside out:
  point_metrics      TRACEABLE core (usable inside jit, lax.while_loop, shard_map): points chunked
                     by lax.map in groups of `point_batch` (vmapped inside a group), data chunked in
                     pieces of `data_batch` with exact, size-weighted sums.
  *_delta_fn         builders of `delta_fn(idx) -> δ` for surfaces (shared basis, coefficient
                     table) and for basins (per-point random directions scaled by per-point radii).
  shard_points       runs ANY traceable per-point function `f(indices) -> dict of (K,)` sharded
                     over the point axis of a device mesh (one host or many).
  evaluate_points    the high-level evaluator: chunk sizes from a memory budget (plan_batches)
  (iter_...)         or a short calibration (calibrate_batches); K points stream through one
                     compiled chunk function (device memory for one chunk only, so K = 10^6 is
                     fine); results gathered to numpy on every process. stream_points does the
                     same for any per-point function.

Why lax.map over small vmapped groups (DESIGN §3): one jit(vmap) over all K points was 2-3x slower
than a Python loop and needed 5 GB at K=1024 on a small MLP; lax.map with 4-8 points per group was
the fastest and needs memory for one group only.

Metric functions (DESIGN §4): `metric_fn(params, batch)` returns a scalar batch mean (reported as
"loss") or a dict of scalar batch means; `metric_fn(params)` when data is None.

Several cores on a CPU: one XLA CPU device runs a small model on one core. Setting
XLA_FLAGS=--xla_force_host_platform_device_count=<cores> before jax is imported and passing
mesh=point_mesh() shards points over the cores (swiss-roll MLP, 2 cores: 1.2-1.8x).

Example (a 51x51 loss surface):

  fn = models.metric_fn(model)                        # (params, batch) -> {"loss", "accuracy"}
  basis = directions.random_directions(key, params, 2)  # leaves (2, *leaf.shape)
  g = np.linspace(-1, 1, 51)
  coeffs = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
  out = evaluate.evaluate_points(fn, params, evaluate.basis_delta_fn(basis, coeffs),
                                 len(coeffs), train)  # {"loss": (2601,), "accuracy": (2601,)}
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P

from genviz_jax import directions as directions_lib

PyTree = Any
MetricFn = Callable[..., Any]
DeltaFn = Callable[[jax.Array], PyTree]


# ------------------------------------------------------------------------------ validation


def _positive_int(name: str, value) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
    raise ValueError(f"{name}={value!r} must be a positive integer")
  return int(value)


def _optional_positive_int(name: str, value) -> int | None:
  return None if value is None else _positive_int(name, value)


def data_size(data: PyTree) -> int:
  """N, the common leading size of every leaf of `data` (a dict of (N, ...) arrays).

  Raises:
    ValueError: no leaves, a scalar leaf, unequal leading sizes or N = 0.
  """
  leaves = jax.tree_util.tree_flatten_with_path(data)[0]
  if not leaves:
    raise ValueError("data has no arrays; pass data=None for metric_fn(params)")
  sizes = {}
  for path, a in leaves:
    shape = np.shape(a)
    if not shape:
      raise ValueError(f"data leaf {jax.tree_util.keystr(path)} is a scalar; every leaf needs a "
                       "leading example axis (N, ...)")
    sizes[jax.tree_util.keystr(path)] = shape[0]
  if len(set(sizes.values())) != 1:
    raise ValueError(f"data leaves have different leading sizes {sizes}; all must share N")
  n = next(iter(sizes.values()))
  if n == 0:
    raise ValueError("data has N=0 examples; at least one is needed")
  return int(n)


def _as_metric_dict(out) -> dict[str, jax.Array]:
  """A metric_fn result as {name: float32 scalar}; a bare scalar is named "loss"."""
  if isinstance(out, Mapping):
    d = dict(out)
    if not d:
      raise ValueError("metric_fn returned an empty dict; it must return at least one metric")
  else:
    d = {"loss": out}
  res = {}
  for name, v in d.items():
    v = jnp.asarray(v)
    if v.shape != ():
      raise ValueError(f"metric_fn value {name!r} has shape {v.shape}; each metric must be a "
                       "scalar batch mean")
    res[str(name)] = v.astype(jnp.float32)
  return res


# ------------------------------------------------------------------------------ the core


def _metric_sums(metric_fn: MetricFn, points: PyTree, data: PyTree | None,
                 data_batch: int | None, weight_total: float) -> dict[str, jax.Array]:
  """Σ_chunks mean_c · n_c / weight_total for every point of `points` (leaves (B, ...)).

  With weight_total = N this is the exact mean over all N examples: each chunk's mean is
  weighted by its own size, so a ragged last chunk does not bias the result.
  Returns a dict of (B,) float32 arrays.
  """
  if data is None:
    return jax.vmap(lambda p: _as_metric_dict(metric_fn(p)))(points)

  n = data_size(data)
  db = n if data_batch is None else min(data_batch, n)
  n_full, rest = divmod(n, db)

  def ev(chunk):
    return jax.vmap(lambda p: _as_metric_dict(metric_fn(p, chunk)))(points)

  w_full = db / weight_total
  if n_full == 1:
    first = jax.tree.map(lambda a: a[:db], data)
    sums = jax.tree.map(lambda v: v * w_full, ev(first)) if w_full != 1.0 else ev(first)
  else:
    full = jax.tree.map(lambda a: jnp.reshape(a[:n_full * db], (n_full, db) + a.shape[1:]), data)
    shapes = jax.eval_shape(ev, jax.tree.map(lambda a: a[0], full))
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), shapes)

    def body(acc, chunk):
      return jax.tree.map(lambda a, v: a + v * w_full, acc, ev(chunk)), None

    sums, _ = lax.scan(body, zeros, full)
  if rest:
    tail = jax.tree.map(lambda a: a[n_full * db:], data)
    sums = jax.tree.map(lambda a, v: a + v * (rest / weight_total), sums, ev(tail))
  return sums


def point_metrics(metric_fn: MetricFn, params: PyTree, delta_fn: DeltaFn, indices,
                  data: PyTree | None = None, *, point_batch: int = 8,
                  data_batch: int | None = None, data_axis: str | None = None,
                  data_rest: PyTree | None = None) -> dict[str, jax.Array]:
  """Metrics at the K points params + delta_fn(indices[k]). TRACEABLE.

  Points are processed by lax.map in groups of `point_batch` (vmapped within a group; the last
  group is padded with copies of the first index and the padding is dropped). For every group the
  data is visited in chunks of `data_batch` examples; chunk means are weighted by chunk size, so
  the result is the exact mean over all N examples.

  Args:
    metric_fn: `metric_fn(params, batch)` (or `metric_fn(params)` when data is None) returning a
      scalar batch mean (named "loss") or a dict of scalar batch means.
    params: the centre θ, a pytree.
    delta_fn: maps int32 point ids (B,) to a pytree like params with leaves (B, *leaf.shape);
      point k is params + delta_fn(k). See basis_delta_fn / direction_delta_fn.
    indices: int (K,) point ids (may be traced; K static, K >= 1).
    data: None, or a pytree (dict) of (N, ...) arrays.
    point_batch: points per vmapped group (4-8 is best on CPU for small MLPs).
    data_batch: examples per data chunk; None = all N at once.
    data_axis: inside shard_map with data sharded over this mesh axis: `data` is the local
      shard, and the weighted sums are psum-reduced over the axis (exact).
    data_rest: with data_axis, the examples left over when N is not divisible by the axis size,
      replicated on every device and added once (not psum-reduced).

  Returns:
    dict name -> (K,) float32.

  Raises:
    ValueError (at trace time): K = 0, bad chunk sizes, delta trees unlike params, data leaves of
    unequal length, non-scalar metrics.
  """
  point_batch = _positive_int("point_batch", point_batch)
  data_batch = _optional_positive_int("data_batch", data_batch)
  indices = jnp.asarray(indices)
  if indices.ndim != 1 or indices.shape[0] == 0:
    raise ValueError(f"indices have shape {indices.shape}; need (K,) with K >= 1")
  if not jnp.issubdtype(indices.dtype, jnp.integer):
    raise ValueError(f"indices have dtype {indices.dtype}; need integers")
  indices = indices.astype(jnp.int32)
  if data is None and (data_axis is not None or data_rest is not None):
    raise ValueError("data_axis / data_rest need data")
  k = indices.shape[0]
  pb = min(point_batch, k)
  pad = (-k) % pb
  if pad:
    indices = jnp.concatenate([indices, jnp.broadcast_to(indices[:1], (pad,))])
  groups = indices.reshape(-1, pb)

  if data is None:
    total = 1.0
  else:
    n_local = data_size(data)
    n_shards = lax.axis_size(data_axis) if data_axis is not None else 1
    total = float(n_local * n_shards + (data_size(data_rest) if data_rest is not None else 0))

  def group(ids):
    delta = delta_fn(ids)
    directions_lib.check_same_tree(delta, params, leading=1, what="delta_fn output")
    for leaf in jax.tree.leaves(delta):
      if leaf.shape[0] != ids.shape[0]:
        raise ValueError(f"delta_fn returned leading size {leaf.shape[0]} for {ids.shape[0]} ids")
    points = jax.tree.map(lambda p, d: (jnp.asarray(p)[None] + d).astype(jnp.result_type(p)),
                          params, delta)
    sums = _metric_sums(metric_fn, points, data, data_batch, total)
    if data_axis is not None:
      sums = lax.psum(sums, data_axis)
    if data_rest is not None:
      extra = _metric_sums(metric_fn, points, data_rest, data_batch, total)
      sums = jax.tree.map(jnp.add, sums, extra)
    return sums

  out = lax.map(group, groups)
  return {name: v.reshape(-1)[:k] for name, v in out.items()}


# ------------------------------------------------------------------------------ delta builders
#
# The builders return small callable dataclasses registered as pytrees: their arrays are leaves,
# so the compiled chunk function takes them as arguments (a surface basis of a large net is not
# baked into the executable as a constant, and a new coefficient table does not recompile).


def _scale_rows(tree: PyTree, s: jax.Array) -> PyTree:
  return jax.tree.map(lambda x: x * s.astype(x.dtype).reshape((-1,) + (1,) * (x.ndim - 1)), tree)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class BasisDelta:
  """δ_k = Σ_i coeffs[k, i] · d_i. basis leaves (D, *leaf.shape); coeffs (K, D)."""
  basis: PyTree
  coeffs: jax.Array

  def __call__(self, idx):
    c = self.coeffs[idx]
    return jax.tree.map(lambda d: jnp.tensordot(c.astype(d.dtype), d, axes=1), self.basis)


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

  def __call__(self, idx):
    r = self.radii[idx] if self.radii.ndim == 1 else jnp.broadcast_to(self.radii, idx.shape)
    d = jax.vmap(lambda k: directions_lib.random_direction(
        self.key, self.params, k, norm=self.norm, ignore_1d=self.ignore_1d))(idx + self.offset)
    return _scale_rows(d, r)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class StackedDelta:
  """δ_k = scales[k] · stacked[k] (scales None: 1). stacked leaves (K, *leaf.shape)."""
  stacked: PyTree
  scales: jax.Array | None = None

  def __call__(self, idx):
    d = jax.tree.map(lambda x: x[idx], self.stacked)
    if self.scales is None:
      return d
    s = self.scales[idx] if self.scales.ndim == 1 else jnp.broadcast_to(self.scales, idx.shape)
    return _scale_rows(d, s)


def basis_delta_fn(basis: PyTree, coeffs) -> BasisDelta:
  """δ_k = Σ_i coeffs[k, i] · d_i: points on a surface spanned by shared directions.

  Args:
    basis: pytree like params with leaves (D, *leaf.shape): the D directions d_i
      (e.g. `directions.random_directions(key, params, 2)` for a 2-D surface, or θ_b - θ_a with a
      leading axis of 1 for an interpolation).
    coeffs: (K, D) coefficients α; point k is θ + Σ_i α[k, i] d_i.

  Returns:
    delta_fn(idx (B,)) -> leaves (B, *leaf.shape); ids index rows of coeffs. A pytree (its
    arrays are leaves), so it can be passed into jit.
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


def direction_delta_fn(key: jax.Array, params: PyTree, radii, *, norm: str = "filter",
                       ignore_1d: bool = True, offset=0) -> DirectionDelta:
  """δ_k = radii[k] · random_direction(key, params, offset + k): basin-style points.

  Directions are regenerated from (key, k) inside the compiled call, so K directions are never
  held in memory.

  Args:
    key, params, norm, ignore_1d: as for `directions.random_direction`.
    radii: a scalar or (K,) radii, indexed by point id (may be traced, e.g. a bisection's
      current radii inside lax.while_loop).
    offset: direction number of point id 0 (direction number = offset + id); may be traced.

  Returns:
    delta_fn(idx (B,)) -> leaves (B, *leaf.shape); a pytree.
  """
  directions_lib._check_norm(norm)
  radii = jnp.asarray(radii)
  if radii.ndim > 1:
    raise ValueError(f"radii have shape {radii.shape}; need a scalar or (K,)")
  return DirectionDelta(key, params, radii, jnp.asarray(offset, jnp.int32), norm, bool(ignore_1d))


def stacked_delta_fn(stacked: PyTree, scales=None) -> StackedDelta:
  """δ_k = scales[k] · stacked[k] for directions already in memory (leaves (K, *leaf.shape)).

  Cheaper than direction_delta_fn when the same directions are evaluated many times (every
  bisection step of a basin sweep chunk) and they fit in memory.
  """
  leaves = jax.tree.leaves(stacked)
  if not leaves or any(np.ndim(x) < 1 for x in leaves):
    raise ValueError("stacked directions need leaves (K, *leaf.shape)")
  scales = None if scales is None else jnp.asarray(scales)
  if scales is not None and scales.ndim > 1:
    raise ValueError(f"scales have shape {scales.shape}; need a scalar or (K,)")
  return StackedDelta(stacked, scales)


# ------------------------------------------------------------------------------ sharding


def point_mesh(devices=None, *, data_shards: int = 1, point_axis: str = "points",
               data_axis: str = "data") -> Mesh:
  """A (points, data) device mesh with Auto axis types over `devices` (default: all, all hosts).

  Args:
    devices: a sequence of devices; default jax.devices() (every process's devices).
    data_shards: devices along the data axis (1: data replicated, points sharded over all).

  Raises:
    ValueError: data_shards does not divide the device count.
  """
  devs = list(jax.devices() if devices is None else devices)
  data_shards = _positive_int("data_shards", data_shards)
  if len(devs) % data_shards:
    raise ValueError(f"data_shards={data_shards} does not divide the {len(devs)} devices")
  arr = np.array(devs, dtype=object).reshape(len(devs) // data_shards, data_shards)
  auto = jax.sharding.AxisType.Auto
  return Mesh(arr, (point_axis, data_axis), axis_types=(auto, auto))


def _axis_size(mesh: Mesh | None, axis: str | None) -> int:
  if mesh is None or axis is None:
    return 1
  if axis not in mesh.shape:
    raise ValueError(f"mesh has no axis {axis!r}; its axes are {tuple(mesh.shape)}")
  return int(mesh.shape[axis])


def _pad_indices(indices: jax.Array, multiple: int) -> jax.Array:
  pad = (-indices.shape[0]) % multiple
  if not pad:
    return indices
  return jnp.concatenate([indices, jnp.broadcast_to(indices[:1], (pad,))])


def shard_points(f: Callable[[jax.Array], dict], mesh: Mesh | None, *,
                 point_axis: str = "points") -> Callable[[jax.Array], dict]:
  """Runs a per-point traceable `f(indices (K,)) -> dict of (K,)` sharded over the point axis.

  Each device gets K / n consecutive indices (K is padded with copies of indices[0] to a
  multiple of n, and the padding dropped). Other mesh axes (e.g. "data") see replicated indices;
  f may reduce over them with lax.psum. Whatever f closes over is replicated. Use inside jit;
  with several processes (jax.distributed) the mesh spans all hosts and every process runs
  the same program on its own devices' shares.

  mesh None (or a single device) returns f unchanged.
  """
  n = _axis_size(mesh, point_axis)
  if mesh is None or mesh.size == 1:
    return f

  def g(indices):
    indices = jnp.asarray(indices)
    k = indices.shape[0]
    out = jax.shard_map(f, mesh=mesh, in_specs=P(point_axis), out_specs=P(point_axis),
                        check_vma=False)(_pad_indices(indices, n))
    return jax.tree.map(lambda v: v[:k], out)

  return g


def sharded_point_metrics(metric_fn: MetricFn, params: PyTree, delta_fn: DeltaFn, indices,
                          data: PyTree | None = None, *, mesh: Mesh | None,
                          point_axis: str = "points", data_axis: str | None = None,
                          point_batch: int = 8,
                          data_batch: int | None = None) -> dict[str, jax.Array]:
  """point_metrics with points sharded over `point_axis` and, optionally, data over `data_axis`.

  With data_axis of size D: the first N - N % D examples are split into D equal shards whose
  weighted sums are psum-reduced; the N % D left over are replicated and added once, so the
  mean is exact for any N. TRACEABLE (use inside jit). Same numbers as point_metrics up to
  float32 summation order.
  """
  n_data = _axis_size(mesh, data_axis)
  if data is None or n_data == 1:
    return shard_points(
        lambda idx: point_metrics(metric_fn, params, delta_fn, idx, data,
                                  point_batch=point_batch, data_batch=data_batch),
        mesh, point_axis=point_axis)(indices)
  n_pts = _axis_size(mesh, point_axis)
  n = data_size(data)
  main = n - n % n_data
  if main == 0:
    raise ValueError(f"data has N={n} examples, fewer than the {n_data} data shards")
  head = jax.tree.map(lambda a: a[:main], data)
  rest = jax.tree.map(lambda a: a[main:], data) if main < n else None
  local_batch = None if data_batch is None else min(data_batch, main // n_data)

  def f(idx, head, rest):
    return point_metrics(metric_fn, params, delta_fn, idx, head, point_batch=point_batch,
                         data_batch=local_batch, data_axis=data_axis, data_rest=rest)

  indices = jnp.asarray(indices)
  k = indices.shape[0]
  spec_head = jax.tree.map(lambda _: P(data_axis), head)
  spec_rest = jax.tree.map(lambda _: P(), rest)
  out = jax.shard_map(f, mesh=mesh, in_specs=(P(point_axis), spec_head, spec_rest),
                      out_specs=P(point_axis), check_vma=False)(
                          _pad_indices(indices, n_pts), head, rest)
  return jax.tree.map(lambda v: v[:k], out)


# ------------------------------------------------------------------------------ planning


def default_memory_budget(device=None) -> int:
  """Bytes the engine may use for intermediates: half an accelerator's memory limit, or a
  quarter of the host's physical memory on CPU."""
  device = device or jax.devices()[0]
  try:
    stats = device.memory_stats() or {}
  except Exception:  # noqa: BLE001 - some backends do not implement memory_stats
    stats = {}
  if stats.get("bytes_limit"):
    return int(stats["bytes_limit"] * 0.5)
  try:
    phys = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  except (ValueError, OSError, AttributeError):
    phys = 8 << 30
  return int(phys * 0.25)


def _tree_bytes(tree: PyTree) -> int:
  return sum(int(np.prod(np.shape(x))) * jnp.result_type(x).itemsize for x in jax.tree.leaves(tree))


@dataclasses.dataclass(frozen=True)
class Cost:
  """One evaluation of metric_fn at one point, from XLA's compiled analyses: intermediate bytes
  and FLOPs, per example and fixed (data=None: all fixed)."""
  bytes_per_example: float
  bytes_fixed: float
  flops_per_example: float
  flops_fixed: float


def probe_cost(metric_fn: MetricFn, params: PyTree, data: PyTree | None = None) -> Cost:
  """Cost of one evaluation, from jit(metric_fn) compiled on a probe chunk of <= 256 examples
  (memory_analysis and cost_analysis; crude fallbacks where a backend lacks them)."""
  param_flops = 2.0 * sum(int(np.prod(np.shape(x))) for x in jax.tree.leaves(params))
  if data is None:
    args, m = (params,), 1
    in_bytes = 0.0
  else:
    n = data_size(data)
    m = min(n, 256)
    probe = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct((m,) + np.shape(a)[1:], jnp.result_type(a)), data)
    args = (params, probe)
    in_bytes = float(_tree_bytes(jax.tree.map(lambda a: a[:1], data)))
  try:
    c = jax.jit(metric_fn).lower(*args).compile()
    temp = float(c.memory_analysis().temp_size_in_bytes)
  except Exception:  # noqa: BLE001 - the analyses are best effort
    c, temp = None, 16.0 * (in_bytes * m + _tree_bytes(params))
  try:
    ca = c.cost_analysis() if c is not None else None
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    flops = float(ca["flops"])
  except Exception:  # noqa: BLE001
    flops = param_flops * m
  if data is None:
    return Cost(0.0, temp, 0.0, flops)
  return Cost(temp / m + in_bytes, 0.0, flops / m, 0.0)


# Work per vmapped group (FLOPs) below which more points go into a group, and the number of
# points at most. Measured on a 2-core CPU: the paper's MLP on 200 points (1.4 MFLOP per point)
# is fastest with 4-64 points per group and 13x a Python loop at 8; a 2->512->512->2 MLP on
# 10k points (5 GFLOP per point) is fastest with 1 point and 1-2k examples per data chunk
# (larger groups spill the CPU caches and lose up to 25%). Accelerators want far larger groups.
_CPU_GROUP_FLOPS, _CPU_MAX_POINT_BATCH = 2e7, 8
_ACCEL_GROUP_FLOPS, _ACCEL_MAX_POINT_BATCH = 2e10, 256
# CPU only: intermediates of one group beyond this size fall out of cache.
_CPU_GROUP_BYTES = 8 << 20
_MIN_DATA_BATCH = 512


def _pow2_floor(x: float) -> int:
  return 1 if x < 2 else 1 << int(math.floor(math.log2(x)))


@dataclasses.dataclass(frozen=True)
class Plan:
  """Chunk sizes for the engine. point_batch: points per vmapped group; data_batch: examples per
  data chunk (None: all); bytes_per_group: estimated intermediate memory of one group;
  flops_per_point: model FLOPs of one point over all the data (None: unknown);
  points_per_s: measured by calibrate_batches (None: not measured)."""
  point_batch: int
  data_batch: int | None
  bytes_per_group: float
  flops_per_point: float | None = None
  points_per_s: float | None = None


def plan_batches(metric_fn: MetricFn, params: PyTree, data: PyTree | None = None, *,
                 memory_budget: int | None = None, point_batch: int | None = None,
                 data_batch: int | None = None, platform: str | None = None,
                 cost: Cost | None = None) -> Plan:
  """Chunk sizes from the model's cost and a memory budget (bytes; default_memory_budget()).

  From XLA's analyses of one evaluation (probe_cost): the data chunk is all N examples, or on
  CPU as many as keep one group's intermediates within 8 MiB (not below 512); the point batch
  is the power of two that brings a group's work to ~2e7 FLOPs on CPU (at most 8) or ~2e10 on
  an accelerator (at most 256). Then both shrink, data first, until one group's memory,
  point_batch · (3 |θ| + data_batch · bytes/example), fits the budget. Sizes given are kept
  (and checked against the budget).

  Raises:
    ValueError: the budget is too small for one point on one example, or bad sizes.
  """
  point_batch = _optional_positive_int("point_batch", point_batch)
  data_batch = _optional_positive_int("data_batch", data_batch)
  budget = default_memory_budget() if memory_budget is None else memory_budget
  if isinstance(budget, bool) or not isinstance(budget, (int, float, np.integer, np.floating)) \
     or not budget > 0:
    raise ValueError(f"memory_budget={memory_budget!r} must be a positive number of bytes")
  platform = platform or jax.devices()[0].platform
  cpu = platform == "cpu"
  n = None if data is None else data_size(data)
  cost = cost if cost is not None else probe_cost(metric_fn, params, data)
  per_point = 3.0 * _tree_bytes(params) + cost.bytes_fixed
  per_ex = cost.bytes_per_example

  def group_bytes(pb, db):
    return pb * (per_point + (db or 0) * per_ex)

  def cache_db(pb):
    if not cpu or per_ex <= 0:
      return n
    return min(n, max(_MIN_DATA_BATCH, int(_CPU_GROUP_BYTES / (pb * per_ex))))

  db = None if n is None else (min(data_batch, n) if data_batch else cache_db(1))
  pb = point_batch
  if pb is None:
    work = cost.flops_fixed + (db or 0) * cost.flops_per_example
    target, cap = ((_CPU_GROUP_FLOPS, _CPU_MAX_POINT_BATCH) if cpu
                   else (_ACCEL_GROUP_FLOPS, _ACCEL_MAX_POINT_BATCH))
    pb = min(cap, _pow2_floor(target / work)) if work > 0 else cap
  if data_batch is None and n is not None:
    db = cache_db(pb)
  # Fit the budget: the data chunk shrinks first (not below 1024 while the point batch can
  # shrink instead: a few points over long chunks beat many points over tiny chunks).
  while group_bytes(pb, db) > budget:
    if data_batch is None and n is not None and per_ex > 0:
      fit = int((budget / pb - per_point) // per_ex) if budget / pb > per_point else 0
      floor = 1 if (pb == 1 or point_batch is not None) else min(n, 1024)
      if fit >= floor:
        db = min(db, fit)
        break
    if point_batch is None and pb > 1:
      pb //= 2
      if data_batch is None and n is not None:
        db = cache_db(pb)
      continue
    raise ValueError(f"memory_budget={budget!r} bytes is too small: {pb} point(s) x "
                     f"{db} example(s) need about {int(group_bytes(pb, db))} bytes")
  flops = cost.flops_fixed + (n or 0) * cost.flops_per_example
  return Plan(pb, None if (n is None or db == n) else db, group_bytes(pb, db), flops or None)


# ------------------------------------------------------------------------------ streaming


def _is_array_leaf(x) -> bool:
  return isinstance(x, (jax.Array, np.ndarray, np.generic, int, float, bool))


def _split_dynamic(fn) -> tuple[list, tuple]:
  """(arguments, static): a callable registered as a pytree of arrays (BasisDelta, ...) travels
  into jit as arguments (static = its treedef); any other callable is static itself."""
  leaves, treedef = jax.tree.flatten(fn)
  if leaves and all(_is_array_leaf(x) for x in leaves) and treedef != jax.tree.structure(0):
    return leaves, ("tree", treedef)
  return [], ("fn", fn)


def _rebuild(dyn: list, static: tuple):
  kind, what = static
  return jax.tree.unflatten(what, dyn) if kind == "tree" else what


def to_host(x: PyTree) -> PyTree:
  """Device arrays -> numpy on every process (all-gathered across hosts when there are several)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    return jax.tree.map(lambda a: np.asarray(multihost_utils.process_allgather(a, tiled=True)), x)
  return jax.tree.map(np.asarray, x)


def _chunk_points(num_points: int, unit: int, chunk_size: int | None, target: int) -> int:
  """Points per compiled call: a multiple of `unit`, close to `target`, with little padding."""
  want = chunk_size if chunk_size is not None else target
  want = max(unit, min(want, -(-num_points // unit) * unit))
  num_chunks = -(-num_points // want)
  per = -(-num_points // num_chunks)
  return -(-per // unit) * unit


@functools.partial(jax.jit, static_argnames=("f", "chunk", "mesh", "point_axis"))
def _run_chunk(a, lo, last, *, f, chunk, mesh, point_axis):
  # Module level, so a second sweep with the same f (hashable), shapes and chunk reuses the
  # compiled executable.
  idx = jnp.minimum(lo + jnp.arange(chunk, dtype=jnp.int32), last)
  return shard_points(lambda i: f(i, a), mesh, point_axis=point_axis)(idx)


def stream_points(f: Callable[[jax.Array, PyTree], dict], num_points: int, args: PyTree = None,
                  *, start: int = 0, chunk_size: int | None = None, unit: int = 1,
                  mesh: Mesh | None = None, point_axis: str = "points",
                  progress: Callable[[int, int], None] | None = None):
  """Yields (lo, hi, {name: np.ndarray (hi-lo,)}) for points start .. start+num_points-1.

  Runs the traceable `f(indices (C,), args) -> dict of (C,)` in compiled chunks of C points
  (sharded over the mesh's point axis when a mesh is given), so memory is needed for one chunk
  only: K = 10^6 points stream through the same executable. The next chunk is dispatched
  before the current one is copied to the host. `args` (a pytree of arrays) is passed into the
  compiled call as arguments, not baked in as constants. The last chunk repeats the last point
  id as padding; padded results are dropped. Every process of a multi-host run gets all
  results (all-gathered), so process 0 can write them.

  Args:
    f: per-point function of (indices, args).
    num_points: K >= 1.
    args: pytree of arrays for f.
    start: id of the first point (>= 0): resumed sweeps continue from here.
    chunk_size: points per compiled call (rounded up to a multiple of unit x devices).
    unit: chunk sizes are multiples of unit x (devices on the point axis), e.g. point_batch.
    progress: called as progress(points_done, num_points) after each chunk.
  """
  num_points = _positive_int("num_points", num_points)
  if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start < 0:
    raise ValueError(f"start={start!r} must be an integer >= 0")
  chunk_size = _optional_positive_int("chunk_size", chunk_size)
  n_dev = _axis_size(mesh, point_axis) if mesh is not None else 1
  step = _positive_int("unit", unit) * n_dev
  chunk = _chunk_points(num_points, step, chunk_size, target=64 * step)

  run = functools.partial(_run_chunk, f=f, chunk=chunk, mesh=mesh, point_axis=point_axis)
  last = jnp.int32(start + num_points - 1)
  los = list(range(start, start + num_points, chunk))
  pending = run(args, jnp.int32(los[0]), last)
  for j, lo in enumerate(los):
    current = pending
    if j + 1 < len(los):
      pending = run(args, jnp.int32(los[j + 1]), last)
    hi = min(lo + chunk, start + num_points)
    out = {k: v[:hi - lo] for k, v in to_host(current).items()}
    if progress is not None:
      progress(hi - start, num_points)
    yield lo, hi, out


@dataclasses.dataclass(frozen=True)
class _MetricsChunk:
  """f(indices, (params, data, delta arrays)) -> metrics; hashable, so compiled chunks are cached."""
  metric_fn: Any
  delta_static: tuple
  point_batch: int
  data_batch: int | None
  mesh: Mesh | None
  point_axis: str
  data_axis: str | None

  def __call__(self, idx, a):
    params, data, dyn = a
    delta_fn = _rebuild(dyn, self.delta_static)
    if self.mesh is None:
      return point_metrics(self.metric_fn, params, delta_fn, idx, data,
                           point_batch=self.point_batch, data_batch=self.data_batch)
    return sharded_point_metrics(self.metric_fn, params, delta_fn, idx, data, mesh=self.mesh,
                                 point_axis=self.point_axis, data_axis=self.data_axis,
                                 point_batch=self.point_batch, data_batch=self.data_batch)


class _ById:
  """An unhashable callable made usable as a static jit argument (hashed by identity)."""

  def __init__(self, fn):
    self.fn = fn

  def __call__(self, *a, **k):
    return self.fn(*a, **k)

  def __hash__(self):
    return id(self.fn)

  def __eq__(self, other):
    return isinstance(other, _ById) and other.fn is self.fn


def _hashable(fn):
  try:
    hash(fn)
    return fn
  except TypeError:
    return _ById(fn)


def _metrics_runner(metric_fn, params, delta_fn, data, plan: Plan, mesh, point_axis, data_axis):
  """(f(indices, args), args) evaluating point_metrics, for stream_points."""
  dyn, (kind, what) = _split_dynamic(delta_fn)
  static = (kind, what if kind == "tree" else _hashable(what))
  f = _MetricsChunk(_hashable(metric_fn), static, plan.point_batch, plan.data_batch, mesh,
                    point_axis, data_axis)
  args = (params, data, dyn)
  # numpy inputs go to the device once, not with every chunk. Uncommitted: jit may still place
  # them on a mesh (a mesh-sharded input would clash with shard_map's manual axes).
  return f, jax.device_put(args)


def calibrate_batches(metric_fn: MetricFn, params: PyTree, delta_fn: DeltaFn,
                      data: PyTree | None = None, *, memory_budget: int | None = None,
                      candidates=(1, 4, 16, 64), groups: int = 8, min_seconds: float = 0.3,
                      mesh: Mesh | None = None, point_axis: str = "points",
                      data_axis: str | None = None, data_batch: int | None = None) -> Plan:
  """Times point_metrics for growing point batches (`candidates` and plan_batches' choice) and
  returns the fastest plan that fits the memory budget (points/s measured on up to `groups`
  groups per device, fewer for big models, after compiling).

  Each candidate is timed as the best of at least 3 runs spanning >= min_seconds; a larger
  batch replaces the best only if >10% faster. Stops at the first candidate more than 20%
  slower than the best so far. Costs one compile and ~min_seconds
  per candidate tried: worth it for sweeps, not for a handful of points.
  """
  groups = _positive_int("groups", groups)
  n_dev = _axis_size(mesh, point_axis) if mesh is not None else 1
  best = None
  cost = probe_cost(metric_fn, params, data)
  guess = plan_batches(metric_fn, params, data, memory_budget=memory_budget,
                       data_batch=data_batch, cost=cost).point_batch
  for pb in sorted(set(candidates) | {guess}):
    try:
      plan = plan_batches(metric_fn, params, data, memory_budget=memory_budget, point_batch=pb,
                          data_batch=data_batch, cost=cost)
    except ValueError:
      break
    f, args = _metrics_runner(metric_fn, params, delta_fn, data, plan, mesh, point_axis,
                              data_axis)
    # Timed runs of ~2e8 FLOPs (at least one group): big models need not run `groups` groups.
    g = groups if not plan.flops_per_point else max(
        1, min(groups, math.ceil(2e8 / (pb * plan.flops_per_point))))
    k = pb * g * n_dev
    run = functools.partial(_run_chunk, args, jnp.int32(0), jnp.int32(k - 1), f=f, chunk=k,
                            mesh=None, point_axis=point_axis)
    jax.block_until_ready(run())
    # Best of several runs over >= min_seconds: robust to neighbours sharing the machine.
    times, spent = [], 0.0
    while len(times) < 3 or (spent < min_seconds and len(times) < 20):
      t0 = time.perf_counter()
      jax.block_until_ready(run())
      times.append(time.perf_counter() - t0)
      spent += times[-1]
    rate = k / min(times)
    plan = dataclasses.replace(plan, points_per_s=rate)
    # A larger batch must win clearly (10%): timings on a shared machine are noisy, and the
    # smaller batch needs less memory and spills less cache.
    if best is None or rate > 1.1 * best.points_per_s:
      best = plan
    elif rate < 0.8 * best.points_per_s:
      break
  if best is None:
    raise ValueError(f"memory_budget={memory_budget!r} is too small for any point batch")
  return best


def iter_evaluate_points(metric_fn: MetricFn, params: PyTree, delta_fn: DeltaFn,
                         num_points: int, data: PyTree | None = None, *, start: int = 0,
                         point_batch: int | None = None, data_batch: int | None = None,
                         memory_budget: int | None = None, calibrate: bool = False,
                         chunk_size: int | None = None, mesh: Mesh | None = None,
                         point_axis: str = "points", data_axis: str | None = None,
                         progress: Callable[[int, int], None] | None = None):
  """Generator form of evaluate_points: yields (lo, hi, {name: np.ndarray (hi-lo,)}) per chunk
  (write each chunk to disk for a resumable sweep; rerun with start=<first missing id>).

  Args:
    metric_fn, params, delta_fn, data: as for point_metrics; point k is
      params + delta_fn(k) for k = start .. start+num_points-1 (global ids, so a resumed or
      re-chunked sweep sees the same points).
    num_points: K >= 1.
    start: first point id (>= 0).
    point_batch, data_batch: fixed chunk sizes; None = chosen by plan_batches (or by
      calibrate_batches when calibrate=True and point_batch is None).
    memory_budget: bytes for one group's intermediates (default: default_memory_budget()).
    calibrate: time a few point batches first (costs a compile and ~0.3 s per candidate).
    chunk_size: points per compiled call (default: 64 groups, or ~2 s of work if calibrated).
    mesh, point_axis, data_axis: shard points (and data) over a device mesh (point_mesh());
      with several processes every process must make the same call.
    progress: progress(points_done, num_points) after each chunk.

  Raises:
    ValueError: num_points < 1, negative start, bad sizes or budget, trees unlike params.
  """
  num_points = _positive_int("num_points", num_points)
  if calibrate and point_batch is None:
    plan = calibrate_batches(metric_fn, params, delta_fn, data, memory_budget=memory_budget,
                             mesh=mesh, point_axis=point_axis, data_axis=data_axis,
                             data_batch=data_batch)
  else:
    plan = plan_batches(metric_fn, params, data, memory_budget=memory_budget,
                        point_batch=point_batch, data_batch=data_batch)
  if jax.process_count() > 1:
    plan = _sync_plan(plan)
  if chunk_size is None and plan.points_per_s:
    chunk_size = max(1, int(plan.points_per_s * 2.0))  # about 2 s of work per compiled call
  f, args = _metrics_runner(metric_fn, params, delta_fn, data, plan, mesh, point_axis, data_axis)
  # f shards internally (sharded_point_metrics), so chunks only need to be multiples of
  # point_batch x devices on the point axis.
  unit = plan.point_batch * (_axis_size(mesh, point_axis) if mesh is not None else 1)
  yield from stream_points(f, num_points, args, start=start, chunk_size=chunk_size, unit=unit,
                           progress=progress)


def _sync_plan(plan: Plan) -> Plan:
  """Process 0's plan on every process: timings and host memory differ between hosts, and
  every process must compile the same program or the collectives would not match."""
  from jax.experimental import multihost_utils
  v = np.array([plan.point_batch, plan.data_batch or 0, plan.points_per_s or 0.0], np.float64)
  v = np.asarray(multihost_utils.broadcast_one_to_all(v))
  return dataclasses.replace(plan, point_batch=int(v[0]), data_batch=int(v[1]) or None,
                             points_per_s=float(v[2]) or None)


def evaluate_points(metric_fn: MetricFn, params: PyTree, delta_fn: DeltaFn, num_points: int,
                    data: PyTree | None = None, **kwargs) -> dict[str, np.ndarray]:
  """Metrics at the points params + delta_fn(k), k = start .. start+num_points-1, as numpy.

  The high-level engine: chunk sizes come from a memory budget (plan_batches) or, with
  calibrate=True, from timing a few point batches (calibrate_batches); points stream through
  one compiled chunk function (device memory for one chunk only), sharded over `mesh` when
  given (data too, over `data_axis`). Keyword arguments: see iter_evaluate_points.

  Returns:
    dict name -> float32 (num_points,).
  """
  parts: dict[str, list[np.ndarray]] = {}
  for _, _, out in iter_evaluate_points(metric_fn, params, delta_fn, num_points, data, **kwargs):
    for k, v in out.items():
      parts.setdefault(k, []).append(v)
  return {k: np.concatenate(v) for k, v in parts.items()}
