"""The PyTorch peer of the engine benchmark: Li et al.'s loss-landscape evaluation loop.

Li et al. (2018, github.com/tomgoldstein/loss-landscape) evaluate a surface point by point:
`net_plotter.set_weights` writes θ + α d1 + β d2 into every parameter, then `evaluation.eval_loss`
runs the net under torch.no_grad() over the data and returns the cross-entropy loss and the
accuracy as Python floats. This module does the same for a flax MLP (genviz_jax.models.MLP): the
torch net gets the same weights (a flax Dense kernel is (in, out), a torch Linear weight is
(out, in): transposed), and directions laid out like the flax params map the same way.
float32, torch's default threads. Needs torch (pip install -e '.[torch]').
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

PyTree = Any


def dense_layers(tree: PyTree) -> list[tuple[np.ndarray, np.ndarray]]:
  """[(kernel (in, out), bias (out,))] of a flax MLP's params (or a tree laid out like them),
  in layer order (Dense_0, Dense_1, ...)."""
  names = sorted(tree, key=lambda n: int(re.fullmatch(r"Dense_(\d+)", n).group(1)))
  return [(np.asarray(tree[n]["kernel"]), np.asarray(tree[n]["bias"])) for n in names]


def to_torch(tree: PyTree) -> list[torch.Tensor]:
  """The tree's leaves as float32 tensors in nn.Sequential parameter order: W0 (out, in), b0, ..."""
  out = []
  for kernel, bias in dense_layers(tree):
    out.append(torch.tensor(kernel.T, dtype=torch.float32))  # copies: contiguous (out, in)
    out.append(torch.tensor(bias, dtype=torch.float32))
  return out


def build_net(params: PyTree, activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
  """nn.Sequential Linear -> activation -> ... -> Linear holding the flax params' weights."""
  layers: list[nn.Module] = []
  shapes = dense_layers(params)
  for i, (kernel, _) in enumerate(shapes):
    layers.append(nn.Linear(kernel.shape[0], kernel.shape[1]))
    if i + 1 < len(shapes):
      layers.append(activation())
  net = nn.Sequential(*layers)
  set_weights(net, to_torch(params))
  return net.eval()


def to_torch_data(data: dict) -> tuple[torch.Tensor, torch.Tensor]:
  """(x float32, y int64) tensors of a {"x": (N, ...), "y": (N,)} batch."""
  x = torch.tensor(np.asarray(data["x"]), dtype=torch.float32)
  return x, torch.tensor(np.asarray(data["y"]), dtype=torch.int64)


def set_weights(net: nn.Module, weights: Sequence[torch.Tensor],
                directions: Sequence[Sequence[torch.Tensor]] = (),
                step: Sequence[float] = ()) -> None:
  """Every parameter <- w + Σ_i step[i] · directions[i] (in place, as net_plotter.set_weights)."""
  with torch.no_grad():
    for j, p in enumerate(net.parameters()):
      value = weights[j]
      for d, s in zip(directions, step):
        value = value + s * d[j]
      p.data.copy_(value)


def eval_loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor,
              batch_size: int | None = None) -> tuple[float, float]:
  """(mean cross-entropy, accuracy in [0, 1]) over the data, as evaluation.eval_loss does (it
  reports accuracy in %); batch_size None: all examples in one forward pass."""
  net.eval()
  n = len(x)
  size = n if batch_size is None else batch_size
  total_loss, correct = 0.0, 0
  with torch.no_grad():
    for lo in range(0, n, size):
      xb, yb = x[lo:lo + size], y[lo:lo + size]
      logits = net(xb)
      total_loss += nn.functional.cross_entropy(logits, yb).item() * len(xb)
      correct += logits.argmax(1).eq(yb).sum().item()
  return total_loss / n, correct / n


def evaluate_point(net, weights, directions, step, x, y, batch_size=None) -> tuple[float, float]:
  """(loss, accuracy) at θ + Σ_i step[i] d_i: set the weights, then evaluate."""
  set_weights(net, weights, directions, step)
  return eval_loss(net, x, y, batch_size)


def evaluate_loop(net, weights, directions, steps, x, y,
                  batch_size=None) -> list[tuple[float, float]]:
  """[(loss, accuracy)] at every step (α, β, ...) in turn, one point at a time."""
  return [evaluate_point(net, weights, directions, s, x, y, batch_size) for s in steps]
