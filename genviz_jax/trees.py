"""Small pytree utilities shared by every layer: sizes and norms of parameter trees."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any


def uncommitted(tree: PyTree) -> PyTree:
  """`tree` with every array committed to a device (Orbax restores, a user's device_put) copied
  through the host into an uncommitted one, values unchanged; PRNG key arrays are kept. jit may
  move uncommitted arrays, so they can meet outputs sharded over several devices."""
  def one(x):
    if isinstance(x, jax.Array) and x.committed and \
        not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jnp.asarray(np.asarray(x))
    return x
  return jax.tree.map(one, tree)


def num_params(tree: PyTree) -> int:
  """Total number of scalars in the leaves of `tree` (concrete or abstract shapes)."""
  return int(sum(int(np.prod(np.shape(x))) for x in jax.tree.leaves(tree)))


def tree_norm(tree: PyTree) -> jax.Array:
  """||tree||_2 over every leaf, accumulated in float32 (traceable)."""
  leaves = jax.tree.leaves(tree)
  if not leaves:
    return jnp.zeros((), jnp.float32)
  return jnp.sqrt(sum(jnp.sum(jnp.square(jnp.asarray(x).astype(jnp.float32))) for x in leaves))


def tree_bytes(tree: PyTree) -> int:
  """Bytes held by the leaves of `tree`."""
  return int(sum(int(np.prod(np.shape(x))) * jnp.result_type(x).itemsize
                 for x in jax.tree.leaves(tree)))
