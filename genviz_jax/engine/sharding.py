"""Device meshes: points sharded over devices and hosts, data optionally too.

A mesh has a "points" axis (each device evaluates its own share of the points) and a "data"
axis (each device sums its own share of the examples; the sums are psum-reduced, so the mean is
exact). With several processes (jax.distributed) the mesh spans every host; every process runs
the same program on its own devices and receives all results.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P

from genviz_jax import trees
from genviz_jax.engine import core
from genviz_jax.engine import metrics

PyTree = Any
POINT_AXIS = "points"
DATA_AXIS = "data"


def point_mesh(devices=None, *, data_shards: int = 1) -> Mesh:
  """A ("points", "data") mesh with Auto axis types over `devices` (default: all, all hosts).

  data_shards: devices along the data axis (1: data replicated, points sharded over all).
  """
  devs = list(jax.devices() if devices is None else devices)
  data_shards = metrics.positive_int("data_shards", data_shards)
  if len(devs) % data_shards:
    raise ValueError(f"data_shards={data_shards} does not divide the {len(devs)} devices")
  arr = np.array(devs, dtype=object).reshape(len(devs) // data_shards, data_shards)
  auto = jax.sharding.AxisType.Auto
  return Mesh(arr, (POINT_AXIS, DATA_AXIS), axis_types=(auto, auto))


def check_mesh(mesh: Mesh | None) -> None:
  """ValueError unless mesh is None or a Mesh with a "points" axis (point_mesh builds one)."""
  if mesh is None:
    return
  if not isinstance(mesh, Mesh):
    raise ValueError(f"mesh={mesh!r} is not a jax.sharding.Mesh; build one with "
                     "engine.point_mesh()")
  if POINT_AXIS not in mesh.shape:
    raise ValueError(f"mesh axes {tuple(mesh.shape)} have no {POINT_AXIS!r} axis; build it with "
                     "engine.point_mesh()")


def axis_size(mesh: Mesh | None, axis: str) -> int:
  """Devices along `axis` of mesh (1 without a mesh or without that axis)."""
  if mesh is None or axis not in mesh.shape:
    return 1
  return int(mesh.shape[axis])


def shard_points(f: Callable[[jax.Array], PyTree], mesh: Mesh | None) -> Callable:
  """`f(indices (K,)) -> pytree of (K, ...)` run with the indices split over the points axis.

  K is padded with copies of indices[0] to a multiple of the axis size and the padding dropped.
  Whatever f closes over is replicated; other axes see replicated indices (f may psum over the
  data axis). Use inside jit. mesh None (or one device) returns f unchanged.
  """
  if mesh is None or mesh.size == 1:
    return f
  n = axis_size(mesh, POINT_AXIS)

  def g(indices):
    k = indices.shape[0]
    out = jax.shard_map(f, mesh=mesh, in_specs=P(POINT_AXIS), out_specs=P(POINT_AXIS),
                        check_vma=False)(core.pad_to_multiple(indices, n))
    return jax.tree.map(lambda v: v[:k], out)

  return g


def split_data(data: PyTree, shards: int) -> tuple[PyTree, PyTree | None]:
  """(head, rest): the first N - N % shards examples (split over the data axis) and the rest
  (replicated, added once), so sharded means stay exact for any N."""
  n = metrics.data_size(data)
  main = n - n % shards
  if main == 0:
    raise ValueError(f"data has N={n} examples, fewer than the {shards} data shards")
  head = jax.tree.map(lambda a: a[:main], data)
  rest = jax.tree.map(lambda a: a[main:], data) if main < n else None
  return head, rest


def sharded_point_metrics(metric_fn, params, delta_fn, indices, data=None, *, mesh: Mesh | None,
                          point_batch: int = 8, data_batch: int | None = None) -> dict:
  """core.point_metrics with points over the mesh's points axis and data over its data axis.

  TRACEABLE (use inside jit). Same numbers as point_metrics up to float32 summation order.
  """
  n_data = axis_size(mesh, DATA_AXIS)
  if data is None or n_data == 1:
    return shard_points(
        lambda idx: core.point_metrics(metric_fn, params, delta_fn, idx, data,
                                       point_batch=point_batch, data_batch=data_batch),
        mesh)(indices)
  head, rest = split_data(data, n_data)
  local_batch = None if data_batch is None else min(data_batch, metrics.data_size(head) // n_data)

  def f(idx, head, rest):
    return core.point_metrics(metric_fn, params, delta_fn, idx, head, point_batch=point_batch,
                              data_batch=local_batch, data_axis=DATA_AXIS, data_rest=rest)

  k = indices.shape[0]
  specs = (P(POINT_AXIS), jax.tree.map(lambda _: P(DATA_AXIS), head),
           jax.tree.map(lambda _: P(), rest))
  out = jax.shard_map(f, mesh=mesh, in_specs=specs, out_specs=P(POINT_AXIS), check_vma=False)(
      core.pad_to_multiple(indices, axis_size(mesh, POINT_AXIS)), head, rest)
  return jax.tree.map(lambda v: v[:k], out)


def sharded_mean(fn: Callable[[PyTree], PyTree], data: PyTree, *, mesh: Mesh | None,
                 data_batch: int | None = None) -> PyTree:
  """The exact mean over all N examples of the batch-mean pytree fn(batch), with the examples
  split over EVERY device of the mesh (each sums its share in chunks; psum). TRACEABLE.

  Used for one-point quantities (a loss, a gradient, a Hessian-vector product): the points axis
  has nothing to split there, so all devices share the data.
  """
  if mesh is None or mesh.size == 1:
    return metrics.chunked_mean(fn, data, data_batch)
  axes = tuple(mesh.axis_names)
  head, rest = split_data(data, mesh.size)
  n = float(metrics.data_size(data))
  local_batch = None if data_batch is None else min(data_batch, metrics.data_size(head) // mesh.size)

  def f(head, rest):
    s = metrics.chunked_sum(fn, head, local_batch, n)
    s = jax.lax.psum(s, axes)
    if rest is not None:
      s = jax.tree.map(jnp.add, s, metrics.chunked_sum(fn, rest, local_batch, n))
    return s

  specs = (jax.tree.map(lambda _: P(axes), head), jax.tree.map(lambda _: P(), rest))
  return jax.shard_map(f, mesh=mesh, in_specs=specs, out_specs=P(), check_vma=False)(head, rest)


def place(args: PyTree, mesh: Mesh | None) -> PyTree:
  """Inputs of a compiled chunk function, on the device once (not with every chunk).

  Uncommitted, so jit may place them on a mesh (a mesh-sharded input would clash with
  shard_map's manual axes). With a mesh of several devices, arrays committed to one device
  (restored checkpoints, a user's device_put) are copied through the host once to drop that
  commitment; otherwise jit refuses to mix them with the mesh's devices.
  """
  if mesh is not None and mesh.size > 1:
    args = trees.uncommitted(args)
  return jax.device_put(args)


def to_host(x: PyTree) -> PyTree:
  """Device arrays -> numpy on every process (all-gathered across hosts when there are several)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    return jax.tree.map(lambda a: np.asarray(multihost_utils.process_allgather(a, tiled=True)), x)
  return jax.tree.map(np.asarray, x)
