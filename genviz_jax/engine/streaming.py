"""Streaming: K points through one compiled chunk function, sharded over a mesh.

`stream` runs any traceable per-point function `f(*owners, indices (C,), args) -> dict of (C, ...)`
in compiled chunks of C points, so device memory is needed for one chunk only (K = 10^6 points go
through the same executable); the next chunk is dispatched before the current one is copied to
the host. `evaluate_points` / `iter_evaluate_points` are stream over core.point_metrics: the
metrics at params + delta_fn(k). Compiled functions come from the engine's cache, keyed by the
user's callables without keeping them alive (engine.cache).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from genviz_jax.engine import cache
from genviz_jax.engine import core
from genviz_jax.engine import host
from genviz_jax.engine import metrics
from genviz_jax.engine import sharding
from genviz_jax.engine import sizes

PyTree = Any
Progress = Callable[[int, int], None]


def _is_array_leaf(x) -> bool:
  return isinstance(x, (jax.Array, np.ndarray, np.generic, int, float, bool))


def split_callable(fn) -> tuple[list, tuple]:
  """(arrays, static) of a callable: a callable registered as a pytree of arrays (the deltas of
  engine.deltas) travels into jit as arguments, static = its tree structure; any other callable
  is an owner of the compiled function itself (static = None)."""
  leaves, treedef = jax.tree.flatten(fn)
  if leaves and all(_is_array_leaf(x) for x in leaves) and treedef != jax.tree.structure(0):
    return leaves, treedef
  return [], None


def chunk_points(num_points: int, unit: int, chunk_size: int | None, target: int) -> int:
  """Points per compiled call: a multiple of `unit`, close to `target`, with little padding."""
  want = chunk_size if chunk_size is not None else target
  want = max(unit, min(want, -(-num_points // unit) * unit))
  num_chunks = -(-num_points // want)
  per = -(-num_points // num_chunks)
  return -(-per // unit) * unit


def _chunk_impl(*owners_and_args, impl, chunk, mesh):
  *owners, args, lo, last = owners_and_args
  idx = jnp.minimum(lo + jnp.arange(chunk, dtype=jnp.int32), last)
  return sharding.shard_points(lambda i: impl(*owners, i, args), mesh)(idx)


def stream(impl: Callable, owners: tuple, num_points: int, args: PyTree = None, *,
           static: Any = (), start: int = 0, chunk_size: int | None = None,
           exact_chunk: bool = False, unit: int = 1, mesh: Mesh | None = None,
           progress: Progress | None = None) -> Iterator[tuple[int, int, dict]]:
  """Yields (lo, hi, {name: np.ndarray (hi-lo, ...)}) for points start .. start+num_points-1.

  Args:
    impl: traceable impl(*owners, indices (C,), args) -> dict of (C, ...) arrays: a module-level
      function, or cache.Bound(function, **hashable settings); it must not capture user objects.
    owners: the user's callables impl needs (held weakly by the compile cache).
    num_points: K >= 1.
    args: pytree of arrays for impl (passed into the compiled call, not baked in).
    static: extra hashable part of the compile-cache key (rarely needed: impl's settings are).
    start: id of the first point (>= 0): resumed sweeps continue from here.
    chunk_size: points per compiled call (rounded to a multiple of unit x devices).
    exact_chunk: use chunk_size itself (it must be a multiple of unit x devices), so chunk
      boundaries fall at start + j·chunk_size (resumable sweeps store chunks by their start).
    unit: chunk sizes are multiples of unit x (devices on the points axis), e.g. point_batch.
    mesh: shard every chunk's points over the mesh's points axis.
    progress: progress(points_done, num_points) after each chunk.
  The last chunk repeats the last point id as padding; padded results are dropped. With several
  processes every process gets all results.
  """
  num_points = metrics.positive_int("num_points", num_points)
  if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start < 0:
    raise ValueError(f"start={start!r} must be an integer >= 0")
  chunk_size = metrics.optional_positive_int("chunk_size", chunk_size)
  sharding.check_mesh(mesh)
  step = metrics.positive_int("unit", unit) * sharding.axis_size(mesh, sharding.POINT_AXIS)
  if exact_chunk:
    if chunk_size is None or chunk_size % step:
      raise ValueError(f"chunk_size={chunk_size!r} must be a multiple of {step} (unit x devices)")
    chunk = chunk_size
  else:
    chunk = chunk_points(num_points, step, chunk_size, target=256 * step)
  run = cache.cached_jit(cache.Bound(_chunk_impl, impl=impl, chunk=chunk, mesh=mesh), owners,
                         static=static)
  last = jnp.int32(start + num_points - 1)
  los = list(range(start, start + num_points, chunk))
  pending = _call(run, args, los[0], last)
  for j, lo in enumerate(los):
    current = pending
    if j + 1 < len(los):
      pending = _call(run, args, los[j + 1], last)
    hi = min(lo + chunk, start + num_points)
    out = {k: v[:hi - lo] for k, v in sharding.to_host(current).items()}
    if progress is not None:
      progress(hi - start, num_points)
    yield lo, hi, out


def _call(run, args, lo, last):
  return run(args, jnp.int32(lo), last)


def _metrics_impl(metric_fn, *rest, delta_static, point_batch, data_batch, mesh):
  delta_owner = rest[0] if delta_static is None else None
  idx, (params, data, delta_arrays) = rest[-2], rest[-1]
  delta_fn = delta_owner if delta_static is None else jax.tree.unflatten(delta_static, delta_arrays)
  if mesh is None:
    return core.point_metrics(metric_fn, params, delta_fn, idx, data, point_batch=point_batch,
                              data_batch=data_batch)
  return sharding.sharded_point_metrics(metric_fn, params, delta_fn, idx, data, mesh=mesh,
                                        point_batch=point_batch, data_batch=data_batch)


def iter_evaluate_points(metric_fn: Callable, params: PyTree, delta_fn: Callable, num_points: int,
                         data: PyTree | None = None, *, start: int = 0,
                         point_batch: int | None = None, data_batch: int | None = None,
                         chunk_size: int | None = None, mesh: Mesh | None = None,
                         progress: Progress | None = None) -> Iterator[tuple[int, int, dict]]:
  """Generator form of evaluate_points: yields (lo, hi, {name: np.ndarray (hi-lo, ...)}) per chunk
  (write each chunk to disk for a resumable sweep; rerun with start=<first missing id>)."""
  point_batch = sizes.point_batch_for(params, point_batch)
  data_batch = sizes.data_batch_for(params, data, data_batch)
  sharding.check_mesh(mesh)
  mesh = host.resolve_mesh(mesh)
  arrays, treedef = split_callable(delta_fn)
  owners = (metric_fn,) if treedef is not None else (metric_fn, delta_fn)
  impl = cache.Bound(_metrics_impl, delta_static=treedef, point_batch=point_batch,
                     data_batch=data_batch, mesh=mesh)
  args = sharding.place((params, data, arrays), mesh)
  # Sharding happens inside impl (data may be split too), so the stream itself is unsharded;
  # chunks are multiples of point_batch x devices on the points axis.
  unit = point_batch * sharding.axis_size(mesh, sharding.POINT_AXIS)
  yield from stream(impl, owners, num_points, args, start=start,
                    chunk_size=chunk_size, unit=unit, progress=progress)


def evaluate_points(metric_fn: Callable, params: PyTree, delta_fn: Callable, num_points: int,
                    data: PyTree | None = None, **kwargs) -> dict[str, np.ndarray]:
  """Metrics at the points params + delta_fn(k), k = start .. start+num_points-1, as numpy.

  The engine's entry point: points stream through one compiled chunk function (memory for one
  chunk only), sharded over `mesh` when given (data too when the mesh has a "data" axis of
  size > 1), compiled once per (metric_fn, delta structure, sizes).

  Args:
    metric_fn: `metric_fn(params, batch)` or `metric_fn(params)` (engine.metrics); any
      callable, hashable or not.
    params: the centre θ.
    delta_fn: point k is params + delta_fn(k) (engine.deltas), or any traceable callable.
    num_points: K >= 1.
    data: None, or a pytree of (N, ...) arrays: metrics are exact means over all N.
    start, chunk_size, progress: see stream.
    point_batch: points vmapped together; None: 8, or 1 for models over 2^16 parameters
      (engine.sizes).
    data_batch: examples per data chunk; None: all at once, or chunks of 2048 for models over
      2^16 parameters on more than 4096 examples (engine.sizes).
    mesh: shard points over its devices; None: every local CPU device when the default backend
      is the CPU (engine.host.default_mesh), else one device.

  Returns:
    dict name -> float32 (num_points, *metric_shape).
  """
  parts: dict[str, list[np.ndarray]] = {}
  for _, _, out in iter_evaluate_points(metric_fn, params, delta_fn, num_points, data, **kwargs):
    for k, v in out.items():
      parts.setdefault(k, []).append(v)
  return {k: np.concatenate(v) for k, v in parts.items()}
