"""Which directions a basin sweep draws: on-the-fly random directions, and the det-1 preconditioner.

Importance sampling (Scherlis & Belrose 2025, EleutherAI basin-volume). Draw g ~ N(0, I_n), set
d = P g with P diagonal, positive, det P = 1 (e.g. from Adam's second moment), v = d / ||d||. The
density of v on the sphere with respect to the uniform one is the angular central Gaussian with
covariance P²:  p(v) = det(P)^{-1} · ||P^{-1} v||^{-n} = ||P^{-1} v||^{-n}.  Hence
  E_unif[r(u)^n] = E_p[r(v)^n / p(v)] = E_p[r(v)^n · ||P^{-1} v||^n],
and with P^{-1} v = g / ||P g||, writing z = g / ||g|| (uniform on the sphere):
  log weight_k = n·log r_k(Euclidean) + n·log||g_k|| - n·log||P g_k||
              = n·log r_k - n·log||P z_k||,
the correction -n·log|P z| of basin-volume. A sweep records ||g_k|| and ||P g_k|| per direction
so `Radii.volume()` applies it exactly.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from genviz_jax import directions as directions_lib

PyTree = Any


@dataclasses.dataclass(frozen=True)
class RandomDirections:
  """Directions generated on the fly: direction k = directions.random_direction(key, params, k, ...).

  Only one chunk of directions is ever held in memory, so `num` may be 10^6 or more. With
  `preconditioner` (a pytree like params, positive, Σ log P = 0 over the perturbed coordinates; see
  `diagonal_preconditioner`) direction k is P ⊙ g_k with g_k the un-normalized Gaussian
  (norm must be "none"), and volumes get the exact importance weight (module docstring).
  `filter_axis`: each leaf's output axis (directions.filter_axes): -1 / "last" for Flax and
  haiku, 0 / "first" for equinox and PyTorch layouts, or a pytree like params.
  """
  key: jax.Array
  num: int
  norm: str = "filter"
  ignore_1d: bool = True
  preconditioner: PyTree | None = None
  filter_axis: Any = -1


def diagonal_preconditioner(second_moment: PyTree, params: PyTree, *, ignore_1d: bool = True,
                            eps: float = 1e-12, power: float = 0.5) -> PyTree:
  """P ∝ (v + eps)^(-power) over the perturbed coordinates, scaled to det P = 1 (Σ log P = 0).

  `second_moment` is e.g. Adam's ν (same tree as params). Directions of high curvature (large ν)
  get short proposal steps, as in Adam. Ignored 1-D leaves get P = 1 (their direction is zero).
  Returns a pytree like params (float32).
  """
  _check_same_tree(second_moment, params, "second_moment")
  mask = _perturbed_mask(params, ignore_1d)
  logs = jax.tree.map(lambda v: -power * np.log(np.asarray(v, np.float64) + eps), second_moment)
  total = sum(float(np.sum(l)) for l, m in zip(jax.tree.leaves(logs), mask) if m)
  n = sum(int(np.size(l)) for l, m in zip(jax.tree.leaves(params), mask) if m)
  if n == 0:
    raise ValueError("params has no perturbed coordinates (all leaves are 1-D and ignore_1d=True)")
  mean = total / n
  leaves = [np.exp(l - mean).astype(np.float32) if m else np.ones(np.shape(l), np.float32)
            for l, m in zip(jax.tree.leaves(logs), mask)]
  return jax.tree.unflatten(jax.tree.structure(params), leaves)


def _perturbed_mask(params: PyTree, ignore_1d: bool) -> list[bool]:
  return [not (ignore_1d and np.ndim(l) <= 1) for l in jax.tree.leaves(params)]


def _check_same_tree(tree: PyTree, params: PyTree, name: str, stacked: bool = False) -> int | None:
  """ValueError naming the first differing path unless `tree` is like params (leading K if
  stacked); returns K for a stack."""
  directions_lib.check_same_tree(tree, params, leading=1 if stacked else 0, what=name)
  if not stacked:
    return None
  sizes = {np.shape(x)[0] for x in jax.tree.leaves(tree)}
  if len(sizes) != 1:
    raise ValueError(f"{name} leaves have different numbers of directions {sorted(sizes)}")
  return sizes.pop()


def _check_preconditioner(precond: PyTree, params: PyTree, ignore_1d: bool) -> None:
  """P must be positive and finite, with det P = 1 over the perturbed coordinates (the weight
  -n·log|Pz| assumes it)."""
  _check_same_tree(precond, params, "preconditioner")
  total, n = 0.0, 0
  for x, m in zip(jax.tree.leaves(precond), _perturbed_mask(params, ignore_1d)):
    a = np.asarray(x, np.float64)
    if not np.all(np.isfinite(a) & (a > 0)):
      raise ValueError("preconditioner has a non-positive or non-finite entry; P must be > 0")
    if m:
      total += float(np.sum(np.log(a)))
      n += a.size
  if n and abs(total / n) > 1e-4:
    raise ValueError(f"preconditioner has mean log P = {total / n:.3g} over the perturbed "
                     "coordinates; det P must be 1 (use diagonal_preconditioner)")
