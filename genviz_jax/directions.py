"""Random directions in parameter space, normalized filter by filter (Li et al. 2018).

Direction number k is a pure function of (key, k): one Gaussian vector drawn from
`fold_in(key, k)`, cut into the leaves in tree order, so the same k gives the same direction
whatever the chunking, the device count or whether a sweep was resumed, and K directions never
need to be held in memory at once.

Normalizations (`norm`):
  "filter": Li et al. For every filter j of a kernel, d_j <- d_j / ||d_j|| * ||θ_j||. In Flax a
            Dense kernel is (in, out) and a Conv kernel is (h, w, in, out), so a filter (all the
            weights feeding one output unit) is a slice along the LAST axis. (PyTorch stores the
            output axis first: Li et al.'s code indexes the first axis; we must not copy that.)
  "layer":  every leaf with ndim >= 2 rescaled as a whole: d <- d / ||d|| * ||θ||.
  "none":   the raw standard Gaussian.
A zero-norm parameter filter (or leaf) gets a zero direction, never NaN.

1-D (and scalar) parameters: biases, BatchNorm scale and bias.
  ignore_1d=True  (Li et al.'s --xignore biasbn, the paper's setting): zero direction.
  ignore_1d=False: with "filter" or "layer" the direction is a copy of the parameter itself
            (Li et al.'s rule with --xignore off: each 1-D weight is one value per unit, and its
            own magnitude is its "filter norm"); with "none" the raw Gaussian is kept.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

NORMS = ("filter", "layer", "none")

PyTree = Any


def _check_norm(norm) -> str:
  if norm not in NORMS:
    raise ValueError(f"norm={norm!r} is not one of {', '.join(NORMS)}")
  return norm


def _path_str(path) -> str:
  return jax.tree_util.keystr(path) or "<root>"


def check_same_tree(direction: PyTree, params: PyTree, *, leading: int = 0,
                    what: str = "direction") -> None:
  """Raises ValueError naming the first path where `direction` and `params` differ.

  `leading` extra leading axes are allowed on the direction's leaves (e.g. 1 for a stack (K, ...)).
  """
  d_leaves, d_def = jax.tree_util.tree_flatten_with_path(direction)
  p_leaves, p_def = jax.tree_util.tree_flatten_with_path(params)
  d_paths = [_path_str(p) for p, _ in d_leaves]
  p_paths = [_path_str(p) for p, _ in p_leaves]
  if d_def != p_def or d_paths != p_paths:
    for i in range(max(len(d_paths), len(p_paths))):
      dp = d_paths[i] if i < len(d_paths) else None
      pp = p_paths[i] if i < len(p_paths) else None
      if dp != pp:
        raise ValueError(f"{what} tree differs from params at {dp if dp is not None else pp}: "
                         f"{what} has {dp!r}, params have {pp!r}")
    raise ValueError(f"{what} tree structure {d_def} differs from params {p_def}")
  for (path, d), (_, p) in zip(d_leaves, p_leaves):
    d_shape, p_shape = tuple(np.shape(d)), tuple(np.shape(p))
    if len(d_shape) < leading or d_shape[leading:] != p_shape:
      lead = "(K, ...) + " if leading else ""
      raise ValueError(f"{what} leaf {_path_str(path)} has shape {d_shape}, expected "
                       f"{lead}{p_shape}")


def _normalize_leaf(d: jax.Array, p: jax.Array, norm: str, ignore_1d: bool) -> jax.Array:
  p = jnp.asarray(p)
  if p.ndim <= 1:
    if ignore_1d:
      return jnp.zeros_like(d)
    return d if norm == "none" else jnp.broadcast_to(p, d.shape).astype(d.dtype)
  if norm == "none":
    return d
  axes = tuple(range(p.ndim - 1)) if norm == "filter" else tuple(range(p.ndim))
  d_norm = jnp.sqrt(jnp.sum(jnp.square(d), axis=axes, keepdims=True))
  p_norm = jnp.sqrt(jnp.sum(jnp.square(p.astype(d.dtype)), axis=axes, keepdims=True))
  # Zero-norm filters (dead or pruned units) get a zero direction instead of 0/0.
  safe = jnp.where(d_norm > 0, d_norm, 1.0)
  return d * jnp.where(d_norm > 0, p_norm / safe, 0.0)


def normalize_direction(direction: PyTree, params: PyTree, norm: str = "filter",
                        ignore_1d: bool = True) -> PyTree:
  """Rescales `direction` (a pytree like params) by `norm`; see the module docstring.

  Args:
    direction: pytree with the structure and leaf shapes of `params`.
    params: the centre θ; its filter / leaf norms set the scale.
    norm: "filter", "layer" or "none".
    ignore_1d: zero direction on 1-D and scalar leaves (biases, BatchNorm scale/bias).

  Returns:
    A pytree like params. Traceable (shapes only are checked in Python).

  Raises:
    ValueError: unknown norm, or trees that differ (the message names the first differing path).
  """
  _check_norm(norm)
  check_same_tree(direction, params)
  return jax.tree.map(lambda d, p: _normalize_leaf(d, p, norm, ignore_1d), direction, params)


def _leaf_dtype(path, p):
  dtype = jnp.result_type(p)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f"parameter {_path_str(path)} has dtype {dtype}; directions need floating "
                     "point parameters")
  return dtype


def random_direction(key: jax.Array, params: PyTree, k, *, norm: str = "filter",
                     ignore_1d: bool = True) -> PyTree:
  """Gaussian direction number k, normalized (a pytree like params).

  A pure function of (key, k): one standard Gaussian vector of |θ| float32 numbers is drawn
  from fold_in(key, k) and cut into the leaves in tree order (every leaf, ignored ones
  included, so the kernels' draw does not depend on ignore_1d or norm), then normalized. So
  direction k is the same in any chunk, on any device and in a resumed run. `k` may be traced
  (an int32 scalar), so this can be vmapped over a range of k inside jit.

  Cost: drawing is not free (threefry on CPU gives ~2e7 normals/s, comparable to a small MLP's
  forward pass); code that evaluates the same directions many times (bisection) should draw a
  chunk once with random_directions and reuse it.

  Args:
    key: a PRNG key (jax.random.key or PRNGKey).
    params: the centre θ (only shapes, dtypes and norms are used).
    k: the direction number, an integer scalar >= 0 (Python int or traced).
    norm: "filter" (Li et al.), "layer" or "none".
    ignore_1d: zero direction on 1-D and scalar parameters.

  Returns:
    A pytree like params with the leaf dtypes of params.
  """
  _check_norm(norm)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  sizes = [int(np.prod(np.shape(p))) for _, p in leaves]
  # One draw for the whole tree: one RNG op to compile, whatever the number of leaves.
  flat = jax.random.normal(jax.random.fold_in(key, k), (sum(sizes),), jnp.float32)
  out, offset = [], 0
  for (path, p), size in zip(leaves, sizes):
    dtype = _leaf_dtype(path, p)
    shape = np.shape(p)
    if len(shape) <= 1 and ignore_1d:
      out.append(jnp.zeros(shape, dtype))
    else:
      d = flat[offset:offset + size].reshape(shape).astype(dtype)
      out.append(_normalize_leaf(d, p, norm, ignore_1d))
    offset += size
  return jax.tree_util.tree_unflatten(treedef, out)


def _check_count(name: str, value) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
    raise ValueError(f"{name}={value!r} must be a positive integer")
  return int(value)


def random_directions(key: jax.Array, params: PyTree, num: int, *, norm: str = "filter",
                      ignore_1d: bool = True, start: int = 0) -> PyTree:
  """Directions start .. start+num-1, stacked: leaves (num, *leaf.shape).

  Equal, direction by direction, to `random_direction(key, params, start + j)`.

  Raises:
    ValueError: num not a positive integer, start negative, unknown norm.
  """
  num = _check_count("num", num)
  if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start < 0:
    raise ValueError(f"start={start!r} must be an integer >= 0")
  _check_norm(norm)
  ks = jnp.arange(num, dtype=jnp.int32) + jnp.int32(start)
  return jax.vmap(lambda k: random_direction(key, params, k, norm=norm, ignore_1d=ignore_1d))(ks)


def num_perturbed(params: PyTree, ignore_1d: bool = True, *, norm: str = "filter") -> int:
  """n: the number of coordinates a direction can move (the dimension of the basin volume).

  Counts every coordinate whose direction is not identically zero: with ignore_1d the 1-D and
  scalar leaves are left out; with "filter" ("layer") normalization the coordinates of zero-norm
  filters (leaves) are left out, and with the 1-D copy rule the zero entries of 1-D parameters.
  Needs concrete (not traced) params.
  """
  _check_norm(norm)
  n = 0
  for path, p in jax.tree_util.tree_flatten_with_path(params)[0]:
    _leaf_dtype(path, p)
    a = np.asarray(p)
    if a.size == 0:
      continue
    if a.ndim <= 1:
      if ignore_1d:
        continue
      n += a.size if norm == "none" else int(np.count_nonzero(a))
    elif norm == "none":
      n += a.size
    elif norm == "layer":
      n += a.size if np.any(a != 0) else 0
    else:
      live = np.any(a.reshape(-1, a.shape[-1]) != 0, axis=0)  # one flag per filter
      n += int(np.count_nonzero(live)) * (a.size // a.shape[-1])
  return n
