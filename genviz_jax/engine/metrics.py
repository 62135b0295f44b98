"""The metric contract and the one exact chunked dataset mean.

Metric functions. `metric_fn(params, batch)` returns the batch mean of the loss as a scalar
(reported as "loss"), or a dict of batch means (e.g. {"loss", "accuracy"}); `metric_fn(params)`
when there is no data. A metric may also be an array of fixed shape (e.g. class probabilities
on a fixed input grid): every value is averaged over the data the same way, element by element.
`as_metric_dict` is the one adapter from such a result to {name: float32 array}.

Exact chunked means. A dataset of N examples is visited in chunks of B examples (memory for one
chunk only); a chunk's batch mean m_c is weighted by its own size n_c:

    mean = Σ_c (n_c / N) · m_c,

so a ragged last chunk does not bias the result (Li et al.'s loss-landscape code and PyHessian
average chunk means with equal weights, which is biased when N is not a multiple of B).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

PyTree = Any
MetricFn = Callable[..., Any]


def positive_int(name: str, value) -> int:
  """`value` as an int > 0, else ValueError naming it."""
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
    raise ValueError(f"{name}={value!r} must be a positive integer")
  return int(value)


def optional_positive_int(name: str, value) -> int | None:
  return None if value is None else positive_int(name, value)


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


def as_metric_dict(out) -> dict[str, jax.Array]:
  """A metric_fn result as {name: float32 array}; a bare scalar or array is named "loss"."""
  if isinstance(out, Mapping):
    d = dict(out)
    if not d:
      raise ValueError("metric_fn returned an empty dict; it must return at least one metric")
  else:
    d = {"loss": out}
  res = {}
  for name, v in d.items():
    v = jnp.asarray(v)
    if not jnp.issubdtype(v.dtype, jnp.number) and v.dtype != jnp.bool_:
      raise ValueError(f"metric_fn value {name!r} has dtype {v.dtype}; metrics must be numbers")
    res[str(name)] = v.astype(jnp.float32)
  return res


def scalar_loss(out) -> jax.Array:
  """The "loss" of a metric_fn result (a scalar, or a dict with a scalar "loss")."""
  if isinstance(out, Mapping):
    if "loss" not in out:
      raise ValueError(f"loss_fn returned a dict with keys {sorted(out)}; it needs a 'loss' entry")
    out = out["loss"]
  out = jnp.asarray(out)
  if out.shape != ():
    raise ValueError(f"loss_fn must return a scalar batch-mean loss, got shape {out.shape}")
  return out


def chunk_count(n: int, data_batch: int | None) -> tuple[int, int, int]:
  """(B, full chunks, remainder) for N = n examples in chunks of data_batch (None: one chunk)."""
  data_batch = optional_positive_int("data_batch", data_batch)
  b = n if data_batch is None else min(data_batch, n)
  full, rest = divmod(n, b)
  return b, full, rest


def chunked_sum(fn: Callable[[PyTree], PyTree], data: PyTree, data_batch: int | None,
                total: float) -> PyTree:
  """Σ_c fn(chunk_c) · n_c / total over chunks of `data_batch` examples. TRACEABLE.

  fn(batch) returns a pytree of batch means; with total = N this is the exact dataset mean.
  Full chunks are visited by lax.scan keeping only the running sum (memory does not grow with N;
  under differentiation the sum is taken of per-chunk derivatives computed inside fn).
  """
  n = data_size(data)
  b, n_full, rest = chunk_count(n, data_batch)
  w_full = b / total
  if n_full == 1:
    first = jax.tree.map(lambda a: a[:b], data)
    sums = fn(first)
    if w_full != 1.0:
      sums = jax.tree.map(lambda v: v * w_full, sums)
  else:
    full = jax.tree.map(lambda a: jnp.reshape(a[:n_full * b], (n_full, b) + a.shape[1:]), data)
    shapes = jax.eval_shape(fn, jax.tree.map(lambda a: a[0], full))
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def body(acc, chunk):
      return jax.tree.map(lambda a, v: a + v * w_full, acc, fn(chunk)), None

    sums, _ = lax.scan(body, zeros, full)
  if rest:
    tail = jax.tree.map(lambda a: a[n_full * b:], data)
    sums = jax.tree.map(lambda a, v: a + v * (rest / total), sums, fn(tail))
  return sums


def chunked_mean(fn: Callable[[PyTree], PyTree], data: PyTree,
                 data_batch: int | None = None) -> PyTree:
  """The exact mean over all N examples of `data` of the batch-mean pytree fn(batch). TRACEABLE."""
  return chunked_sum(fn, data, data_batch, float(data_size(data)))
