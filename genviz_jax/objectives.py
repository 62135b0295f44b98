"""The poisoned objective of Huang et al. (2019), computed stably from logits.

L(θ) = (1-β)/|D_t| Σ_{D_t} -log p_θ(y|x)  +  β/|D_p| Σ_{D_p} -log[1 - p_θ(y|x)]

D_p holds extra data from the same distribution with its TRUE labels; the second term pushes the
network away from the true label there. For two classes -log(1 - p_y) is the cross-entropy of the
flipped label, which is how the authors' code wrote it.

The authors' poison factor f is a count, not a weight: they appended f·|D_t| flipped-label points
to each batch of |D_t| train points and averaged over the whole batch. One mean over |D_t|(1+f)
points is the objective above with β = f / (1 + f) (f = 0.8 -> β = 0.444, f = 1 -> β = 0.5).
β = 1 drops the clean term altogether: the network then fits no training point.

`step_loss` is the objective of one training step as both trainers (genviz_jax.train, one run;
genviz_jax.ensemble, many vmapped runs) compute it: the train and poison batches go through the
network in ONE call, so BatchNorm sees both, as in the authors' mixed batches.
"""

from __future__ import annotations

from typing import Any, Callable

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


def step_loss(apply_fn: Callable[[Any, jax.Array], tuple[jax.Array, Any]], params, batch: dict,
              poison: dict | None = None, beta: ArrayLike = 0.0) -> tuple[jax.Array, Any]:
  """(poisoned objective, aux) of one step: batch and poison through the network together.

  Args:
    apply_fn: apply_fn(params, x (M, ...)) -> (logits (M, C), aux); aux is passed through
      (e.g. the updated BatchNorm statistics of a training-mode call).
    params: the parameters differentiated by the caller.
    batch: D_t, {"x": (N, ...), "y": (N,)}.
    poison: D_p with TRUE labels, {"x": (P, ...), "y": (P,)}, or None for the clean loss.
    beta: β (may be traced).
  Returns:
    (poisoned_loss(logits[:N], y, logits[N:], y_p, β), aux); the mean cross-entropy on D_t
    when poison is None.
  """
  if poison is None:
    logits, aux = apply_fn(params, batch["x"])
    return poisoned_loss(logits, batch["y"]), aux
  n = batch["y"].shape[0]
  logits, aux = apply_fn(params, jnp.concatenate([batch["x"], poison["x"]]))
  return poisoned_loss(logits[:n], batch["y"], logits[n:], poison["y"], beta), aux
