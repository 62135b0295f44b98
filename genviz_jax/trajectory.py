"""Training trajectories in a PCA plane (Li et al. 2018, §7 "Visualizing optimization paths").

Random directions miss an optimization path: in high dimension two random vectors are nearly
orthogonal to it (Li et al. §7). Instead the plane is spanned by the top two principal
directions of the path itself, measured from the final parameters θ_f:

  M = [vec(θ_1 − θ_f); ...; vec(θ_T − θ_f)]                           (T, P)
  PCA of M, as sklearn.decomposition.PCA does for Li et al. (tomgoldstein/loss-landscape
  `projection.py`, setup_PCA_directions): rows are CENTRED (M_c = H·M, H = I − 11ᵀ/T) and the
  directions v_1, v_2 are the top right-singular vectors of M_c; explained variance ratio
  r_k = σ_k² / Σ_j σ_j² = σ_k² / ||M_c||_F².
  Coordinates: the UNcentred rows projected on v_1, v_2 (`project_trajectory`, proj_method
  "cos": x_i = ⟨θ_i − θ_f, v_1⟩, y_i = ⟨θ_i − θ_f, v_2⟩), so θ_f sits at the origin.

P runs to millions and T to a few hundred, so the SVD goes through the T×T Gram matrix
G = M·Mᵀ (float64, accumulated leaf by leaf): G_c = H·G·H = U·diag(σ²)·Uᵀ, then with
W = H·U_{:,:2}·diag(1/σ) the directions are V = Wᵀ·M (one more pass over the leaves) and the
coordinates are M·Vᵀ = G·W. Memory beyond the inputs: O(T²) plus one leaf's (T, p) block.

  pca_plane  the plane (orthonormal basis pytree, path coordinates, explained variance ratios)
  contour    metrics on a grid over that plane around θ_f, through genviz_jax.engine
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from genviz_jax import directions as directions_lib
from genviz_jax import engine

PyTree = Any

# A second principal direction whose singular value is below this fraction of the first is
# rounding noise of float32 iterates (relative error ~1e-7), not a direction of the path.
MIN_SINGULAR_RATIO = 1e-6


@dataclasses.dataclass
class PCAPlane:
  """The PCA plane of a trajectory.

  basis: pytree like θ_f, leaves (2, *leaf.shape) in θ_f's leaf dtypes: v_1, v_2, orthonormal
    in the flattened space (computed in float64; to ~1e-7 once stored as float32).
  coords: (T, 2) float64, row i = (⟨θ_i − θ_f, v_1⟩, ⟨θ_i − θ_f, v_2⟩).
  explained_variance: (2,) float64 ratios σ_k² / Σ_j σ_j² of the centred path (sum <= 1).
  """
  basis: PyTree
  coords: np.ndarray
  explained_variance: np.ndarray


def _leaf_rows(iterate: Any, final: Any) -> np.ndarray:
  """(T, p) float64 rows vec(θ_i − θ_f) of one leaf."""
  a = np.asarray(iterate, np.float64)
  return (a - np.asarray(final, np.float64)[None]).reshape(a.shape[0], -1)


def _check_inputs(iterates: PyTree, final: PyTree) -> int:
  """T, after checking tree structure, shapes, a common leading size T >= 2 and finiteness."""
  directions_lib.check_same_tree(iterates, final, leading=1, what="iterates")
  paths = jax.tree_util.tree_flatten_with_path(iterates)[0]
  if not paths:
    raise ValueError("iterates have no leaves; need a pytree of (T, ...) arrays")
  sizes = {np.shape(x)[0] for _, x in paths}
  if len(sizes) != 1:
    raise ValueError(f"iterates leaves have different leading sizes {sorted(sizes)}; need one T")
  t = sizes.pop()
  if t < 2:
    raise ValueError(f"iterates have T={t} points; need T >= 2")
  for what, tree in (("iterates", iterates), ("final", final)):
    for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]:
      if not np.all(np.isfinite(np.asarray(x))):
        raise ValueError(f"{what} leaf {jax.tree_util.keystr(path)} has a non-finite value")
  return t


def _gram(iterates: PyTree, final: PyTree, t: int) -> np.ndarray:
  """G = M·Mᵀ (T, T) in float64, one leaf at a time."""
  g = np.zeros((t, t), np.float64)
  for it, f in zip(jax.tree.leaves(iterates), jax.tree.leaves(final)):
    rows = _leaf_rows(it, f)
    g += rows @ rows.T
  return g


def _top_two(g: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
  """(W (T, 2), σ (2,), ||M_c||_F²) from the Gram matrix, as described in the module doc."""
  t = g.shape[0]
  h = np.eye(t) - np.full((t, t), 1.0 / t)
  gc = h @ g @ h
  gc = 0.5 * (gc + gc.T)
  lam, u = np.linalg.eigh(gc)  # ascending
  lam, u = lam[::-1][:2], u[:, ::-1][:, :2]
  total = float(np.trace(gc))
  sigma = np.sqrt(np.clip(lam, 0.0, None))
  if not sigma[0] > 0:
    raise ValueError("iterates are all the same point; a PCA plane needs a path that moves")
  if sigma[1] <= MIN_SINGULAR_RATIO * sigma[0]:
    raise ValueError(f"iterates lie on a line (second singular value {sigma[1]:.3g} <= "
                     f"{MIN_SINGULAR_RATIO:g} x the first); a PCA plane needs 2 directions")
  return h @ u / sigma, sigma, total


def pca_plane(iterates: PyTree, final: PyTree) -> PCAPlane:
  """The top-2 PCA plane of the path θ_1..θ_T around θ_final (Li et al. 2018 §7).

  Args:
    iterates: pytree like final whose leaves have a leading axis T >= 2 (e.g. the parameter
      tree of genviz_jax.workdir.snapshots); θ_final may or may not be one of them.
    final: θ_f, the centre of the plane.

  Returns:
    PCAPlane (see its doc): centred PCA of the rows θ_i − θ_f (as Li et al.'s sklearn PCA),
    coordinates of the uncentred rows. Signs: each direction is flipped so that the coordinate
    of largest magnitude along it is positive (the start of a typical path lies at x > 0).

  Raises:
    ValueError: T < 2, trees unlike final, leading sizes that differ, non-finite values, or a
      path spanning fewer than 2 directions (all iterates equal, or collinear).
  """
  t = _check_inputs(iterates, final)
  g = _gram(iterates, final, t)
  w, sigma, total = _top_two(g)
  coords = g @ w  # M·Vᵀ = M·Mᵀ·W
  sign = np.sign(coords[np.argmax(np.abs(coords), axis=0), [0, 1]])
  sign[sign == 0] = 1.0
  w, coords = w * sign, coords * sign
  leaves, treedef = jax.tree.flatten(final)
  basis = []
  for it, f in zip(jax.tree.leaves(iterates), leaves):
    v = w.T @ _leaf_rows(it, f)  # (2, p): this leaf's slice of V = Wᵀ·M
    basis.append(v.reshape((2, *np.shape(f))).astype(np.asarray(f).dtype))
  return PCAPlane(basis=jax.tree.unflatten(treedef, basis), coords=coords,
                  explained_variance=sigma ** 2 / total)


def _axis(values: np.ndarray, num: int, margin: float) -> np.ndarray:
  """num points on [lo − margin·w, hi + margin·w], [lo, hi] the hull of values and 0 (θ_f)."""
  lo, hi = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
  pad = margin * (hi - lo)
  return np.linspace(lo - pad, hi + pad, num)


def contour(loss_fn: Callable, final: PyTree, plane: PCAPlane, *, num: int = 31,
            margin: float = 0.2, data: PyTree | None = None, mesh=None, point_batch: int | None = None,
            data_batch: int | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
  """Metrics at θ_f + x·v_1 + y·v_2 on a num × num grid covering the path (Li et al. Fig. 9).

  Each axis spans the path's coordinates and the origin (θ_f), widened by `margin` times its
  width on both sides. Points go through the engine (engine.basis_delta over plane.basis,
  engine.evaluate_points), like landscape.plane but on the trajectory's own axes.

  Args:
    loss_fn: `loss_fn(params, batch)` (or `loss_fn(params)` when data is None): a scalar
      batch-mean loss (reported as "loss") or a dict of batch-mean metrics.
    final: θ_f, the centre used by pca_plane.
    plane: pca_plane(iterates, final).
    num: grid points per axis (>= 2). margin: finite, >= 0.
    data, mesh, point_batch, data_batch: as engine.evaluate_points.

  Returns:
    (xs (num,), ys (num,), {name: (num, num)}) with grids[name][i, j] at (xs[i], ys[j]).
  """
  if not isinstance(plane, PCAPlane):
    raise ValueError(f"plane is a {type(plane).__name__}; need a PCAPlane from pca_plane")
  if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 2:
    raise ValueError(f"num={num!r} must be an integer >= 2")
  if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not (
      math.isfinite(margin) and margin >= 0):
    raise ValueError(f"margin={margin!r} must be a finite number >= 0")
  directions_lib.check_same_tree(plane.basis, final, leading=1, what="plane.basis")
  coords = np.asarray(plane.coords, np.float64)
  if coords.ndim != 2 or coords.shape[1] != 2 or not np.all(np.isfinite(coords)):
    raise ValueError(f"plane.coords have shape {coords.shape}; need finite (T, 2)")
  xs, ys = _axis(coords[:, 0], int(num), float(margin)), _axis(coords[:, 1], int(num), float(margin))
  xx, yy = np.meshgrid(xs, ys, indexing="ij")
  grid = np.stack([xx.ravel(), yy.ravel()], axis=1)
  dtype = jnp.result_type(*jax.tree.leaves(final))
  basis = jax.tree.map(jnp.asarray, plane.basis)
  delta = engine.basis_delta(basis, jnp.asarray(grid, dtype))
  out = engine.evaluate_points(loss_fn, final, delta, grid.shape[0], data, mesh=mesh,
                               point_batch=point_batch, data_batch=data_batch)
  return xs, ys, {k: v.reshape(int(num), int(num)) for k, v in out.items()}
