"""Random directions in parameter space, normalized filter by filter (Li et al. 2018).

Direction number k is a pure function of (key, k): one Gaussian vector drawn from
`fold_in(key, k)`, cut into the leaves in tree order, so the same k gives the same direction
whatever the chunking, the device count or whether a sweep was resumed, and K directions never
need to be held in memory at once.

Normalizations (`norm`):
  "filter": Li et al. For every filter j of a kernel, d_j <- d_j / ||d_j|| * ||θ_j||, where
            filter j is every weight feeding output unit j: the slice j along the kernel's
            output axis (its `filter_axis`), norms taken over all the other axes.
  "layer":  every leaf with ndim >= 2 rescaled as a whole: d <- d / ||d|| * ||θ||.
  "none":   the raw standard Gaussian.

Where the output axis is (`filter_axis`, used by "filter" and by num_perturbed):
  -1 or "last"  (the default): Flax linen and nnx, haiku. Dense kernel (in, out), Conv kernel
                (h, w, in, out).
  0 or "first": equinox and PyTorch. Linear weight (out, in), Conv weight (out, in, kh, kw).
                (Li et al.'s released PyTorch code indexes the first axis for this reason.)
  any int a:    axis a of every leaf with ndim >= 2 (negative counts from the end).
  a pytree like params of the above, one per leaf (mixed layouts); or the tuple `filter_axes`
                returns (hashable, so it can be a static jit argument).
The axis only matters for leaves with ndim >= 2; 1-D and scalar leaves accept any value.
None for a leaf (in a pytree) marks a per-unit vector stored with extra unit axes, such as an
equinox Conv bias (out, 1, 1): it then follows the 1-D rules below, as a PyTorch bias (out,) does.
A zero-norm parameter filter (or leaf) gets a zero direction, never NaN.

1-D (and scalar) parameters: biases, BatchNorm scale and bias; and leaves whose filter_axis is None.
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


FILTER_AXIS_NAMES = {"last": -1, "first": 0}
_AXIS_ALLOWED = ("an int, 'first' ((out, in, ...): equinox, PyTorch), 'last' ((..., in, out): "
                 "Flax, haiku) or a pytree like params of these")


def _is_axis_value(a) -> bool:
  if a is None or isinstance(a, str):
    return a is None or a in FILTER_AXIS_NAMES
  return isinstance(a, (int, np.integer)) and not isinstance(a, bool)


def _leaf_axis(a, path, shape) -> int | None:
  """One leaf's output axis in [0, ndim), or None for a per-unit vector (the 1-D rules)."""
  if not _is_axis_value(a):
    raise ValueError(f"filter_axis={a!r} for parameter {_path_str(path)} is not allowed; give "
                     f"{_AXIS_ALLOWED}")
  if len(shape) <= 1 or a is None:
    return None
  a = FILTER_AXIS_NAMES.get(a, a) if isinstance(a, str) else int(a)
  if not -len(shape) <= a < len(shape):
    raise ValueError(f"filter_axis={a} is out of range for parameter {_path_str(path)} of shape "
                     f"{shape}; allowed: an int in [{-len(shape)}, {len(shape) - 1}]")
  return a % len(shape)


def filter_axes(params: PyTree, filter_axis=-1) -> tuple[int | None, ...]:
  """The output axis of every leaf of params, in tree order (see the module docstring).

  Args:
    params: the parameter pytree (only leaf shapes are used).
    filter_axis: an int, "first", "last", a pytree like params of these (one per leaf), or a
      tuple like the one this returns.

  Returns:
    A tuple with one entry per leaf: the axis in [0, ndim) for leaves with ndim >= 2, None for
    1-D and scalar leaves and for leaves given None (per-unit vectors). Hashable; accepted back
    as `filter_axis`.

  Raises:
    ValueError: an unknown name or a non-int (naming the leaf), an axis out of range for its leaf
      (naming the leaf), or a pytree unlike params.
  """
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  per_leaf = None
  if isinstance(filter_axis, (str, int, np.integer)):
    per_leaf = [filter_axis] * len(leaves)
  elif isinstance(filter_axis, tuple) and len(filter_axis) == len(leaves) and all(
      _is_axis_value(a) for a in filter_axis):
    per_leaf = list(filter_axis)  # the canonical form (also a pytree like a flat tuple params)
  else:
    try:  # a pytree like params; None at a leaf marks a per-unit vector
      per_leaf = treedef.flatten_up_to(filter_axis)
    except (ValueError, TypeError):
      pass
  if per_leaf is None:
    raise ValueError(f"filter_axis={filter_axis!r} is neither {_AXIS_ALLOWED} nor a tuple of "
                     f"{len(leaves)} axes (one per parameter leaf)")
  return tuple(_leaf_axis(a, path, tuple(np.shape(p)))
               for a, (path, p) in zip(per_leaf, leaves))


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


def _normalize_leaf(d: jax.Array, p: jax.Array, norm: str, ignore_1d: bool,
                    axis: int | None) -> jax.Array:
  """One leaf; `axis`: its output axis in [0, ndim), or None: a per-unit vector (1-D rules)."""
  p = jnp.asarray(p)
  if axis is None:
    if ignore_1d:
      return jnp.zeros_like(d)
    return d if norm == "none" else jnp.broadcast_to(p, d.shape).astype(d.dtype)
  if norm == "none":
    return d
  # "filter": one norm per slice along the output axis; "layer": one norm for the leaf.
  axes = tuple(i for i in range(p.ndim) if norm != "filter" or i != axis)
  d_norm = jnp.sqrt(jnp.sum(jnp.square(d), axis=axes, keepdims=True))
  p_norm = jnp.sqrt(jnp.sum(jnp.square(p.astype(d.dtype)), axis=axes, keepdims=True))
  # Zero-norm filters (dead or pruned units) get a zero direction instead of 0/0.
  safe = jnp.where(d_norm > 0, d_norm, 1.0)
  return d * jnp.where(d_norm > 0, p_norm / safe, 0.0)


def normalize_direction(direction: PyTree, params: PyTree, norm: str = "filter",
                        ignore_1d: bool = True, *, filter_axis=-1) -> PyTree:
  """Rescales `direction` (a pytree like params) by `norm`; see the module docstring.

  Args:
    direction: pytree with the structure and leaf shapes of `params`.
    params: the centre θ; its filter / leaf norms set the scale.
    norm: "filter", "layer" or "none".
    ignore_1d: zero direction on 1-D and scalar leaves (biases, BatchNorm scale/bias).
    filter_axis: each kernel's output axis: -1 / "last" (Flax, haiku), 0 / "first" (equinox,
      PyTorch), or one per leaf (module docstring).

  Returns:
    A pytree like params. Traceable (shapes only are checked in Python).

  Raises:
    ValueError: unknown norm or filter_axis, or trees that differ (the message names the first
      differing path).
  """
  _check_norm(norm)
  check_same_tree(direction, params)
  axes = filter_axes(params, filter_axis)
  d_leaves = jax.tree.leaves(direction)
  p_leaves, treedef = jax.tree.flatten(params)
  return jax.tree.unflatten(treedef, [_normalize_leaf(d, p, norm, ignore_1d, a)
                                      for d, p, a in zip(d_leaves, p_leaves, axes)])


def _leaf_dtype(path, p):
  dtype = jnp.result_type(p)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(f"parameter {_path_str(path)} has dtype {dtype}; directions need floating "
                     "point parameters")
  return dtype


def random_direction(key: jax.Array, params: PyTree, k, *, norm: str = "filter",
                     ignore_1d: bool = True, filter_axis=-1) -> PyTree:
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
    filter_axis: each kernel's output axis: -1 / "last" (Flax, haiku), 0 / "first" (equinox,
      PyTorch), or one per leaf (module docstring). Static (Python values, not traced).

  Returns:
    A pytree like params with the leaf dtypes of params.

  Raises:
    ValueError: unknown norm or filter_axis, non-floating parameters.
  """
  _check_norm(norm)
  axes = filter_axes(params, filter_axis)
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  sizes = [int(np.prod(np.shape(p))) for _, p in leaves]
  # One draw for the whole tree: one RNG op to compile, whatever the number of leaves.
  flat = jax.random.normal(jax.random.fold_in(key, k), (sum(sizes),), jnp.float32)
  out, offset = [], 0
  for (path, p), size, axis in zip(leaves, sizes, axes):
    dtype = _leaf_dtype(path, p)
    shape = np.shape(p)
    if axis is None and ignore_1d:
      out.append(jnp.zeros(shape, dtype))
    else:
      d = flat[offset:offset + size].reshape(shape).astype(dtype)
      out.append(_normalize_leaf(d, p, norm, ignore_1d, axis))
    offset += size
  return jax.tree_util.tree_unflatten(treedef, out)


def _check_count(name: str, value) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
    raise ValueError(f"{name}={value!r} must be a positive integer")
  return int(value)


def random_directions(key: jax.Array, params: PyTree, num: int, *, norm: str = "filter",
                      ignore_1d: bool = True, start: int = 0, filter_axis=-1) -> PyTree:
  """Directions start .. start+num-1, stacked: leaves (num, *leaf.shape).

  Equal, direction by direction, to `random_direction(key, params, start + j, ...)` with the
  same norm, ignore_1d and filter_axis.

  Raises:
    ValueError: num not a positive integer, start negative, unknown norm or filter_axis.
  """
  num = _check_count("num", num)
  if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start < 0:
    raise ValueError(f"start={start!r} must be an integer >= 0")
  _check_norm(norm)
  axes = filter_axes(params, filter_axis)
  ks = jnp.arange(num, dtype=jnp.int32) + jnp.int32(start)
  return jax.vmap(lambda k: random_direction(key, params, k, norm=norm, ignore_1d=ignore_1d,
                                             filter_axis=axes))(ks)


def num_perturbed(params: PyTree, ignore_1d: bool = True, *, norm: str = "filter",
                  filter_axis=-1) -> int:
  """n: the number of coordinates a direction can move (the dimension of the basin volume).

  Counts every coordinate whose direction is not identically zero: with ignore_1d the 1-D and
  scalar leaves are left out; with "filter" ("layer") normalization the coordinates of zero-norm
  filters (leaves) are left out, and with the 1-D copy rule the zero entries of 1-D parameters.
  `filter_axis` says which slices are filters (module docstring). Needs concrete (not traced)
  params.
  """
  _check_norm(norm)
  axes = filter_axes(params, filter_axis)
  n = 0
  for (path, p), axis in zip(jax.tree_util.tree_flatten_with_path(params)[0], axes):
    _leaf_dtype(path, p)
    a = np.asarray(p)
    if a.size == 0:
      continue
    if axis is None:
      if ignore_1d:
        continue
      n += a.size if norm == "none" else int(np.count_nonzero(a))
    elif norm == "none":
      n += a.size
    elif norm == "layer":
      n += a.size if np.any(a != 0) else 0
    else:
      filters = np.moveaxis(a, axis, -1).reshape(-1, a.shape[axis])
      live = np.any(filters != 0, axis=0)  # one flag per filter
      n += int(np.count_nonzero(live)) * (a.size // a.shape[axis])
  return n
