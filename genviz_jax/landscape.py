"""Loss landscapes (Li et al. 2018): metrics on lines and planes through parameter space.

Every surface is "metrics at θ + Σ_i α_{k,i} d_i for K coefficient rows α_k", evaluated by the
engine (genviz_jax.engine) in fixed-size compiled chunks, so a 51x51 grid is a handful of
compiled calls rather than 2601 Python-level evaluations.

  surface        any coefficient table over D shared directions (the general entry point)
  line           1-D: θ + α·d
  interpolation  1-D: (1-α)·θ_a + α·θ_b = θ_a + α·(θ_b - θ_a), α in [-0.5, 1.5] by default
  plane          2-D: θ + x·d_1 + y·d_2 on a grid (default 51x51 on [-1, 1]^2)

Directions come from `directions.random_directions` (filter-normalized by default, biases and
other 1-D parameters zeroed) or are given. Interpolation moves every parameter, 1-D ones included.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from genviz_jax import directions as directions_lib
from genviz_jax import engine

PyTree = Any


def _as_basis(directions, params) -> PyTree:
  """A stacked pytree (D, ...) from a stack or a list/tuple of pytrees like params."""
  if isinstance(directions, (list, tuple)):
    if not directions:
      raise ValueError("directions is an empty list; give at least one direction")
    for i, d in enumerate(directions):
      directions_lib.check_same_tree(d, params, what=f"directions[{i}]")
    # Through the host: the directions may live on different devices (a sharded Hessian's
    # eigenvectors beside directions drawn on one device).
    return jax.tree.map(lambda *xs: jnp.stack([np.asarray(x) for x in xs]), *directions)
  directions_lib.check_same_tree(directions, params, leading=1, what="directions")
  sizes = {np.shape(x)[0] for x in jax.tree.leaves(directions)}
  if len(sizes) != 1:
    raise ValueError(f"directions leaves have different leading sizes {sorted(sizes)}; need (D, ...)")
  return jax.tree.map(jnp.asarray, directions)


def _coords(coords, d: int) -> np.ndarray:
  c = np.asarray(coords, np.float64)
  if c.ndim == 1 and d == 1:
    c = c[:, None]
  if c.ndim != 2 or c.shape[1] != d:
    raise ValueError(f"coords have shape {np.shape(coords)}; need (K, {d}) for {d} direction(s)")
  if c.shape[0] == 0:
    raise ValueError("coords have K=0 points; need K >= 1")
  if not np.all(np.isfinite(c)):
    raise ValueError("coords contain a non-finite value")
  return c


def surface(loss_fn: Callable, params: PyTree, directions, coords, *, data: PyTree | None = None,
            chunk_size: int = 256, point_batch: int | None = None, data_batch: int | None = None,
            mesh=None, on_chunk: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
  """Metrics at the K points θ + Σ_i coords[k, i]·d_i (through the engine).

  Args:
    loss_fn: `loss_fn(params, batch)` (or `loss_fn(params)` when data is None) returning a scalar
      batch-mean loss (reported as "loss") or a dict of batch-mean metrics; any callable,
      hashable or not.
    params: θ, the centre (a pytree).
    directions: D directions: a stacked pytree (leaves (D, *leaf.shape)) or a list of D pytrees
      like params.
    coords: (K,) when D = 1, or (K, D) coefficients.
    data: the batch to average over (all of it, exactly), or None.
    chunk_size: points per compiled call (about; rounded to whole point groups).
    point_batch, data_batch: the engine's chunking (engine.point_metrics).
    mesh: a jax.sharding.Mesh (engine.point_mesh()): points (and data, with a "data" axis of
      size > 1) sharded over its devices; same numbers on any device count.
    on_chunk: progress callback on_chunk(done, K).

  Returns:
    dict metric name -> (K,) float32 numpy array.

  Raises:
    ValueError: direction trees unlike params, coords of the wrong shape, K = 0, non-finite coords.
  """
  basis = _as_basis(directions, params)
  c = _coords(coords, jax.tree.leaves(basis)[0].shape[0])
  if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size <= 0:
    raise ValueError(f"chunk_size={chunk_size!r} must be a positive integer")
  dtype = jnp.result_type(*jax.tree.leaves(params))
  delta = engine.basis_delta(basis, jnp.asarray(c, dtype))
  return engine.evaluate_points(loss_fn, params, delta, c.shape[0], data, point_batch=point_batch,
                                data_batch=data_batch, chunk_size=int(chunk_size), mesh=mesh,
                                progress=on_chunk)


@functools.partial(jax.jit, static_argnames=("num", "norm", "ignore_1d", "filter_axis"))
def _random_basis(key, params, start, *, num, norm, ignore_1d, filter_axis):
  ks = jnp.arange(num, dtype=jnp.int32) + start
  return jax.vmap(lambda k: directions_lib.random_direction(
      key, params, k, norm=norm, ignore_1d=ignore_1d, filter_axis=filter_axis))(ks)


def random_basis(key: jax.Array, params: PyTree, num: int, *, norm: str = "filter",
                 ignore_1d: bool = True, start: int = 0, filter_axis=-1) -> PyTree:
  """Directions start .. start+num-1 stacked (leaves (num, ...)), compiled once per shape.

  The same values as directions.random_directions (direction k = random_direction(key, params,
  k)); jitted because eager Gaussian generation compiles op by op (seconds per leaf on CPU).
  """
  directions_lib._check_norm(norm)
  if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num <= 0:
    raise ValueError(f"num={num!r} must be a positive integer")
  if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start < 0:
    raise ValueError(f"start={start!r} must be an integer >= 0")
  return _random_basis(key, params, jnp.int32(start), num=int(num), norm=norm,
                       ignore_1d=bool(ignore_1d),
                       filter_axis=directions_lib.filter_axes(params, filter_axis))


def line(loss_fn: Callable, params: PyTree, direction: PyTree, alphas, **kwargs):
  """Metrics at θ + α·d for α in `alphas` (A,): dict name -> (A,)."""
  return surface(loss_fn, params, [direction], np.asarray(alphas)[:, None], **kwargs)


def interpolation(loss_fn: Callable, params_a: PyTree, params_b: PyTree, alphas=None, **kwargs):
  """Metrics at (1-α)·θ_a + α·θ_b (every parameter moves, 1-D ones too).

  alphas default to 81 points on [-0.5, 1.5] (Li et al.; α = 0 and 1 are on the grid).
  Returns (alphas (A,), dict name -> (A,)).
  """
  directions_lib.check_same_tree(params_b, params_a, what="params_b")
  if alphas is None:
    alphas = np.linspace(-0.5, 1.5, 81)
  alphas = np.asarray(alphas, np.float64)
  diff = jax.tree.map(lambda a, b: jnp.asarray(b) - jnp.asarray(a), params_a, params_b)
  return alphas, line(loss_fn, params_a, diff, alphas, **kwargs)


def grid(num: int = 51, lo: float = -1.0, hi: float = 1.0):
  """Square grid: (axis (num,), coords (num*num, 2)); row k = (x_i, y_j) with k = i*num + j.

  Results reshape to (num, num) indexed [i (x), j (y)].
  """
  if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 2:
    raise ValueError(f"num={num!r} must be an integer >= 2")
  if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
    raise ValueError(f"grid range [{lo}, {hi}] must be finite with lo < hi")
  axis = np.linspace(lo, hi, int(num))
  xx, yy = np.meshgrid(axis, axis, indexing="ij")
  return axis, np.stack([xx.ravel(), yy.ravel()], axis=1)


def plane(loss_fn: Callable, params: PyTree, directions, *, num: int = 51, lo: float = -1.0,
          hi: float = 1.0, **kwargs):
  """Metrics on the num x num grid θ + x·d_1 + y·d_2, (x, y) in [lo, hi]^2.

  Returns (axis (num,), dict name -> (num, num) indexed [x, y]).
  """
  axis, coords = grid(num, lo, hi)
  basis = _as_basis(directions, params)
  if jax.tree.leaves(basis)[0].shape[0] != 2:
    raise ValueError(f"plane needs 2 directions, got {jax.tree.leaves(basis)[0].shape[0]}")
  out = surface(loss_fn, params, basis, coords, **kwargs)
  return axis, {k: v.reshape(num, num) for k, v in out.items()}


def on_splits(fn: Callable[..., Any], splits: Mapping[str, PyTree], **kwargs) -> dict:
  """Runs fn(..., data=split) for every named split; keys become "split/metric".

  fn returns a dict of arrays, or (axis, dict) as line/interpolation/plane do; the axis of the
  first split is returned alongside in the second case.
  """
  out, axis = {}, None
  for name, batch in splits.items():
    res = fn(data=batch, **kwargs)
    if isinstance(res, tuple):
      axis, res = res
    out.update({f"{name}/{k}": v for k, v in res.items()})
  return (axis, out) if axis is not None else out


# ------------------------------------------------------------------ curvature of a 2-D surface

def _uniform_axis(name: str, axis) -> float:
  """The step h of a uniformly spaced 1-D axis of >= 3 finite points (ValueError otherwise)."""
  a = np.asarray(axis, np.float64)
  if a.ndim != 1 or a.shape[0] < 3:
    raise ValueError(f"{name} has shape {a.shape}; need a 1-D axis of >= 3 points")
  if not np.all(np.isfinite(a)):
    raise ValueError(f"{name} contains a non-finite value")
  d = np.diff(a)
  h = float(d.mean())
  if h == 0 or np.max(np.abs(d - h)) > 1e-6 * abs(h):
    raise ValueError(f"{name} spacing ranges over [{d.min():.6g}, {d.max():.6g}]; need a uniform "
                     "nonzero step (e.g. np.linspace)")
  return h


def surface_curvature(xs, ys, grid, *, rtol: float = 1e-3) -> dict:
  """How non-convex a 2-D surface is: the local 2×2 Hessians of grid[i, j] = f(xs[i], ys[j]).

  Li et al. 2018 §6 map |λ_min/λ_max| of the full Hessian over a surface (small: convex, near
  1 or more: chaotic). Restricted to the plane, central second differences at every interior
  point (1 <= i <= nx−2, 1 <= j <= ny−2) give

    f_xx = (f[i+1,j] − 2f[i,j] + f[i−1,j]) / h_x²,   f_yy likewise along j,
    f_xy = (f[i+1,j+1] − f[i+1,j−1] − f[i−1,j+1] + f[i−1,j−1]) / (4 h_x h_y),
    λ_min, λ_max = (f_xx + f_yy)/2 ∓ sqrt(((f_xx − f_yy)/2)² + f_xy²)   (exact for quadratics).

  Tolerance: tol = max(rtol · S, 8 · eps · max|f| / min(h_x, h_y)²), S the grid's curvature
  scale max |λ| over interior points, and the second term the second-difference noise that
  rounding the grid values to their dtype (eps: machine epsilon, float32 surfaces from the
  engine) can cause.

  Returns:
    negative_share: share of interior points with λ_min < −tol (a direction of negative
      curvature in the plane);
    mean_abs_ratio: mean |λ_min / λ_max| over the interior points with λ_max > tol (NaN when
      there are none; a ratio with λ_max ~ 0 is undefined);
    ratio_points: how many points that mean is over; num_points: (nx−2)(ny−2); tol.

  Raises:
    ValueError: axes of < 3 points, non-uniform or zero spacing, a grid not (len(xs), len(ys)),
      non-finite values, rtol not in (0, 1).
  """
  hx, hy = _uniform_axis("xs", xs), _uniform_axis("ys", ys)
  f = np.asarray(grid)
  shape = (np.shape(xs)[0], np.shape(ys)[0])
  if f.shape != shape:
    raise ValueError(f"grid has shape {f.shape}; need (len(xs), len(ys)) = {shape}")
  if not np.issubdtype(f.dtype, np.floating) and not np.issubdtype(f.dtype, np.integer):
    raise ValueError(f"grid has dtype {f.dtype}; need real numbers")
  if not np.all(np.isfinite(f)):
    raise ValueError("grid contains a non-finite value")
  if isinstance(rtol, bool) or not isinstance(rtol, (int, float)) or not 0 < rtol < 1:
    raise ValueError(f"rtol={rtol!r} must be a number in (0, 1)")
  eps = float(np.finfo(f.dtype).eps) if np.issubdtype(f.dtype, np.floating) else 0.0
  f = f.astype(np.float64)
  c = f[1:-1, 1:-1]
  fxx = (f[2:, 1:-1] - 2 * c + f[:-2, 1:-1]) / hx ** 2
  fyy = (f[1:-1, 2:] - 2 * c + f[1:-1, :-2]) / hy ** 2
  fxy = (f[2:, 2:] - f[2:, :-2] - f[:-2, 2:] + f[:-2, :-2]) / (4 * hx * hy)
  mean, rad = (fxx + fyy) / 2, np.sqrt(((fxx - fyy) / 2) ** 2 + fxy ** 2)
  lmin, lmax = mean - rad, mean + rad
  scale = float(np.max(np.maximum(np.abs(lmin), np.abs(lmax))))
  noise = 8 * eps * float(np.max(np.abs(f))) / min(abs(hx), abs(hy)) ** 2
  tol = max(rtol * scale, noise)
  valid = lmax > tol
  return {
      "negative_share": float(np.mean(lmin < -tol)),
      "mean_abs_ratio": float(np.mean(np.abs(lmin[valid] / lmax[valid]))) if valid.any()
                        else float("nan"),
      "ratio_points": int(valid.sum()),
      "num_points": int(c.size),
      "tol": tol,
  }
