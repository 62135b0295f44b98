"""Small pytree utilities shared by every layer: sizes and norms of parameter trees."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any


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
