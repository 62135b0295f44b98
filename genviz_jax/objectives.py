"""The poisoned objective of Huang et al. (2019), computed stably from logits.

L(θ) = (1-β)/|D_t| Σ_{D_t} -log p_θ(y|x)  +  β/|D_p| Σ_{D_p} -log[1 - p_θ(y|x)]

D_p holds extra data from the same distribution with its TRUE labels; the second term pushes the
network away from the true label there. For two classes -log(1 - p_y) is the cross-entropy of the
flipped label, which is how the authors' code wrote it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike


def _nan_unless_valid(values: jax.Array, labels: jax.Array, num_classes: int) -> jax.Array:
  # Traced code cannot raise: a label outside [0, C) becomes NaN, which the trainer's NaN guard
  # reports, instead of wrapping around (-1) or silently scoring 0.
  valid = (labels >= 0) & (labels < num_classes)
  return jnp.where(valid, values, jnp.nan)


def cross_entropy(logits: ArrayLike, labels: ArrayLike) -> jax.Array:
  """Per-example -log p_y from logits (..., C) and integer labels (...); NaN where y ∉ [0, C)."""
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels).astype(jnp.int32)
  logp = jax.nn.log_softmax(logits, axis=-1)
  safe = jnp.clip(labels, 0, logits.shape[-1] - 1)
  ce = -jnp.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
  return _nan_unless_valid(ce, labels, logits.shape[-1])


def complement_cross_entropy(logits: ArrayLike, labels: ArrayLike) -> jax.Array:
  """Per-example -log(1 - p_y) from logits (..., C), stable as p_y -> 1 in float32.

  1 - p_y = Σ_{c≠y} exp(z_c) / Σ_c exp(z_c), so
  -log(1 - p_y) = logsumexp(z) - logsumexp_{c≠y}(z_c): no subtraction of nearly equal numbers,
  finite value and gradient whenever some other logit is finite. NaN where y ∉ [0, C).
  """
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels).astype(jnp.int32)
  onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=bool)
  others = jnp.where(onehot, -jnp.inf, logits)
  value = jax.nn.logsumexp(logits, axis=-1) - jax.nn.logsumexp(others, axis=-1)
  return _nan_unless_valid(value, labels, logits.shape[-1])


def accuracy(logits: ArrayLike, labels: ArrayLike) -> jax.Array:
  """Per-example 0/1 correctness (float32)."""
  return (jnp.argmax(logits, axis=-1) == jnp.asarray(labels)).astype(jnp.float32)


def check_poison_factor(beta: float) -> float:
  """Returns beta as a float; raises ValueError unless it is a number with 0 <= beta <= 1."""
  try:
    beta_f = float(beta)
  except (TypeError, ValueError):
    raise ValueError(f"poison_factor={beta!r} must be a number in [0, 1]") from None
  if not 0.0 <= beta_f <= 1.0:  # also rejects NaN
    raise ValueError(f"poison_factor={beta!r} is outside [0, 1]")
  return beta_f


def poisoned_loss(logits_train: ArrayLike, labels_train: ArrayLike,
                  logits_poison: ArrayLike | None = None, labels_poison: ArrayLike | None = None,
                  beta: ArrayLike = 0.0) -> jax.Array:
  """The poisoned objective (a scalar): (1-β)·mean CE on D_t + β·mean -log(1-p_y) on D_p.

  With β = 0 (or no poison batch) this is exactly the mean cross-entropy on D_t. β may be a traced
  value (a poison schedule); range checks on Python values belong to the caller
  (`check_poison_factor`).
  """
  clean = jnp.mean(cross_entropy(logits_train, labels_train))
  if logits_poison is None:
    return clean
  poison = jnp.mean(complement_cross_entropy(logits_poison, labels_poison))
  beta = jnp.asarray(beta, clean.dtype)
  # where() rather than (1-β)·a + β·b so that β = 0 gives exactly the clean loss even if the
  # poison term overflowed.
  return jnp.where(beta == 0, clean, (1 - beta) * clean + beta * poison)
