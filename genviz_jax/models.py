"""Flax (linen) models. Parameters are plain pytrees: {"params": ..., "batch_stats": ...}.

Every model is called as `model.apply(variables, x, train=False)`; models with BatchNorm need
`mutable=["batch_stats"]` when train=True. Dense kernels are (in, out) and Conv kernels
(h, w, in, out): a "filter" (Li et al.) is a slice along the LAST axis.
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp

ACTIVATIONS: dict[str, Callable] = {
    "relu": nn.relu, "tanh": jnp.tanh, "elu": nn.elu, "gelu": nn.gelu,
    "sigmoid": nn.sigmoid, "swish": nn.swish, "softplus": nn.softplus,
}


class MLP(nn.Module):
  """Fully connected net: flatten -> [Dense(w) -> act]* -> Dense(num_classes)."""
  widths: Sequence[int]
  num_classes: int
  activation: str = "relu"

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    act = ACTIVATIONS[self.activation]
    x = x.reshape((x.shape[0], -1))
    for w in self.widths:
      x = act(nn.Dense(w)(x))
    return nn.Dense(self.num_classes)(x)


def metric_fn(model: nn.Module, model_state: dict | None = None):
  """`fn(params, batch) -> {"loss": mean cross-entropy, "accuracy": mean 0/1}` in inference mode.

  The bridge from a model to every evaluator (landscape, basin, Hessian): `params` is the
  perturbable "params" collection; `model_state` (e.g. {"batch_stats": ...}) is held fixed, so
  BatchNorm uses its running statistics. `batch` is {"x": (N, ...), "y": (N,)}.
  """
  from genviz_jax import objectives  # local: keep models importable on its own
  state = dict(model_state or {})

  def fn(params, batch):
    logits = model.apply({"params": params, **state}, batch["x"], train=False)
    return {"loss": jnp.mean(objectives.cross_entropy(logits, batch["y"])),
            "accuracy": jnp.mean(objectives.accuracy(logits, batch["y"]))}

  return fn
