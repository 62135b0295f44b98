"""Default point and data batch sizes of the engine, from the model's size.

Measured on a 2-core CPU (benchmarks/engine_benchmark.py, one run), points over both cores:
  - swiss-roll MLP 2->[23,16,26,32,28,31]->2 (3.6k parameters, 200 examples): 8 points per
    vmapped group over all examples, 31.2k points/s; 1 point per group, 22.2k;
  - 2->512->512->2 (265k parameters, 10k examples): one point per group over chunks of 2048
    examples, 0.95-0.98 of the float32 GEMM rate; 8 points over all examples, 0.66 (the
    matrices fill the cores alone, and 2048-example activations stay in cache).
So small models group points and large ones chunk data. The boundary, 2^16 parameters, lies
between the two measured cases; explicit sizes always win.
"""

from __future__ import annotations

from typing import Any

from genviz_jax import trees
from genviz_jax.engine import metrics

PyTree = Any
LARGE_MODEL = 2 ** 16      # parameters: above this a point is evaluated alone
SMALL_POINT_BATCH = 8      # points per vmapped group for small models
LARGE_DATA_BATCH = 2048    # examples per data chunk for large models


def point_batch_for(params: PyTree, point_batch: int | None) -> int:
  """point_batch, or the default for this model's size when None."""
  if point_batch is not None:
    return metrics.positive_int("point_batch", point_batch)
  return 1 if trees.num_params(params) > LARGE_MODEL else SMALL_POINT_BATCH


def data_batch_for(params: PyTree, data: PyTree | None, data_batch: int | None) -> int | None:
  """data_batch, or the default when None: all examples at once for small models, chunks of
  LARGE_DATA_BATCH for large ones (None = all: pass data_batch=N to force it for a large one)."""
  if data_batch is not None:
    return metrics.positive_int("data_batch", data_batch)
  if data is None or trees.num_params(params) <= LARGE_MODEL:
    return None
  return LARGE_DATA_BATCH if metrics.data_size(data) > 2 * LARGE_DATA_BATCH else None
