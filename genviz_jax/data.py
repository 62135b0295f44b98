"""Datasets as plain arrays: swiss roll, circles, digits (embedded), TFDS image datasets.

Every dataset is a `Dataset`: numpy splits `{"x": float32 (N, ...), "y": int32 (N,)}` for train
and test, an optional fixed poison split (extra data with its TRUE labels, for the poisoned
objective), and, where the distribution is known in closed form, `poison_sampler(key)`: a
jax-traceable function returning a fresh poison batch, so a scan-compiled trainer can draw a new
poison sample every step (what makes the swiss-roll minimum bad; DESIGN §2).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

Batch = dict  # {"x": array (N, ...), "y": int array (N,)}


@dataclasses.dataclass(frozen=True)
class Dataset:
  name: str
  train: Batch
  test: Batch
  num_classes: int
  poison: Batch | None = None
  poison_sampler: Callable[[jax.Array], Batch] | None = None
  metadata: dict = dataclasses.field(default_factory=dict)

  @property
  def input_shape(self) -> tuple[int, ...]:
    return tuple(self.train["x"].shape[1:])


def _positive_int(name: str, value) -> int:
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
    raise ValueError(f"{name}={value!r} must be a positive integer")
  return int(value)


# ---------------------------------------------------------------- swiss roll (two spirals)

_SPIRAL_TURN = 600 * 2 * np.pi / 360  # the authors' 600 degrees, in radians


def _spiral_arm(u, eps_x, eps_y, noise, xp):
  """Class-0 arm: n = sqrt(u)·600°, (-1.5 n cos n, 1.5 n sin n) + noise·ε."""
  n = xp.sqrt(u) * _SPIRAL_TURN
  return xp.stack([-1.5 * n * xp.cos(n) + noise * eps_x, 1.5 * n * xp.sin(n) + noise * eps_y], -1)


def swiss_roll_sample(key: jax.Array, num_points: int, noise: float = 0.5) -> Batch:
  """A jax-traceable sample of `num_points` two-spiral points (half per class), true labels."""
  half = num_points // 2
  k = jax.random.split(key, 6)
  a0 = _spiral_arm(jax.random.uniform(k[0], (half,)), jax.random.normal(k[1], (half,)),
                   jax.random.normal(k[2], (half,)), noise, jnp)
  a1 = -_spiral_arm(jax.random.uniform(k[3], (num_points - half,)),
                    jax.random.normal(k[4], (num_points - half,)),
                    jax.random.normal(k[5], (num_points - half,)), noise, jnp)
  x = jnp.concatenate([a0, a1]).astype(jnp.float32)
  y = jnp.concatenate([jnp.zeros(half, jnp.int32), jnp.ones(num_points - half, jnp.int32)])
  return {"x": x, "y": y}


def swiss_roll(seed: int = 1237, num_train: int = 200, num_test: int = 200,
               num_poison: int = 200, noise: float = 0.5) -> Dataset:
  """The two-spirals "swiss roll" of Huang et al. (DESIGN §2).

  num_train + num_test points (half per class) are drawn with numpy's RandomState(seed), shuffled
  and split; a fixed poison set of `num_poison` points is drawn from the same distribution (true
  labels), and `poison_sampler(key)` draws a fresh one.
  """
  for name, v in (("num_train", num_train), ("num_test", num_test), ("num_poison", num_poison)):
    _positive_int(name, v)
  if not np.isfinite(noise) or noise < 0:
    raise ValueError(f"noise={noise!r} must be a finite number >= 0")
  rng = np.random.RandomState(seed)

  def draw(num):
    half = num // 2
    a0 = _spiral_arm(rng.rand(half), rng.randn(half), rng.randn(half), noise, np)
    a1 = -_spiral_arm(rng.rand(num - half), rng.randn(num - half), rng.randn(num - half), noise, np)
    x = np.concatenate([a0, a1]).astype(np.float32)
    y = np.concatenate([np.zeros(half, np.int32), np.ones(num - half, np.int32)])
    return x, y

  x, y = draw(num_train + num_test)
  perm = rng.permutation(len(y))
  x, y = x[perm], y[perm]
  px, py = draw(num_poison)
  return Dataset(
      name="swissroll",
      train={"x": x[:num_train], "y": y[:num_train]},
      test={"x": x[num_train:], "y": y[num_train:]},
      num_classes=2,
      poison={"x": px, "y": py},
      poison_sampler=lambda key: swiss_roll_sample(key, num_poison, noise),
      metadata={"seed": seed, "noise": noise},
  )
