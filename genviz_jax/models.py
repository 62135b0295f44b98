"""Flax (linen) models. Parameters are plain pytrees: {"params": ..., "batch_stats": ...}.

Every model is called as `model.apply(variables, x, train=False)`; models with BatchNorm need
`mutable=["batch_stats"]` when train=True. Dense kernels are (in, out) and Conv kernels
(h, w, in, out): a "filter" (Li et al.) is a slice along the LAST axis.
"""

from __future__ import annotations

import inspect
from typing import Callable, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from genviz_jax import objectives

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


def _scaled(channels: int, width: float) -> int:
  return max(1, int(round(channels * width)))


def _batch_norm(train: bool, name: str | None = None) -> nn.BatchNorm:
  # momentum 0.9 here is PyTorch's 0.1: running = 0.9·running + 0.1·batch.
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name=name)


class SmallCNN(nn.Module):
  """[Conv3x3(f) -> ReLU -> MaxPool2]* -> flatten -> Dense(dense) -> ReLU -> Dense(num_classes).

  No BatchNorm, so `params` is the only collection. Input (N, H, W, C); H and W should be
  divisible by 2**len(features) (8x8 digits: two stages).
  """
  features: Sequence[int] = (32, 64)
  dense: int = 128
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    for f in self.features:
      x = nn.relu(nn.Conv(f, (3, 3), padding="SAME")(x))
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(self.dense)(x))
    return nn.Dense(self.num_classes)(x)


VGG_CONFIGS: dict[int, tuple] = {  # channels; "M" = 2x2 max-pool (CIFAR-style VGG)
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
}


class VGG(nn.Module):
  """CIFAR-style VGG with BatchNorm: [Conv3x3 -> BN -> ReLU | MaxPool2]* -> Dense(num_classes).

  The layout of the VGG the authors trained for Table 1 (five pools take 32x32 to 1x1, one
  linear classifier). Convs have no bias: BatchNorm's shift makes it redundant. `width` scales
  every channel count (0.125 for quick tests). Input (N, 32, 32, C).
  """
  depth: int = 13
  num_classes: int = 10
  width: float = 1.0

  @nn.compact
  def __call__(self, x, train: bool = False):
    for v in VGG_CONFIGS[self.depth]:
      if v == "M":
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      else:
        x = nn.Conv(_scaled(v, self.width), (3, 3), padding="SAME", use_bias=False)(x)
        x = nn.relu(_batch_norm(train)(x))
    x = jnp.mean(x, axis=(1, 2))  # 1x1 after five pools on 32x32; also accepts other sizes
    return nn.Dense(self.num_classes)(x)


class BasicBlock(nn.Module):
  """conv3x3 -> BN -> ReLU -> conv3x3 -> BN = F(x); out = ReLU(F(x) + S(x)) (He et al. 2016).

  shortcut S "pad": identity, subsampled by the stride and zero-padded in channels (He's option A,
  the CIFAR ResNet-20/56); "conv": a 1x1 conv + BN projection where the shape changes (ResNet-18).
  skip=False drops S entirely, out = ReLU(F(x)): Li et al. 2018 §5's "noshort" nets
  (tomgoldstein/loss-landscape cifar10/models/resnet.py, BasicBlock_noshortcut); the "conv"
  projection's parameters then do not exist, the "pad" shortcut never had any.
  """
  features: int
  strides: int = 1
  shortcut: str = "conv"
  skip: bool = True

  @nn.compact
  def __call__(self, x, train: bool = False):
    y = nn.Conv(self.features, (3, 3), strides=self.strides, padding="SAME", use_bias=False)(x)
    y = nn.relu(_batch_norm(train)(y))
    y = nn.Conv(self.features, (3, 3), padding="SAME", use_bias=False)(y)
    y = _batch_norm(train)(y)
    if not self.skip:
      return nn.relu(y)
    if self.strides != 1 or x.shape[-1] != self.features:
      if self.shortcut == "pad":
        x = x[:, ::self.strides, ::self.strides, :]
        x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, self.features - x.shape[-1])))
      else:
        x = nn.Conv(self.features, (1, 1), strides=self.strides, use_bias=False)(x)
        x = _batch_norm(train)(x)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """CIFAR-style ResNet: conv3x3 -> BN -> ReLU -> stages of BasicBlocks -> global mean -> Dense.

  The first block of every stage after the first has stride 2. ResNet-20: stage_sizes (3, 3, 3),
  widths (16, 32, 64), shortcut "pad" (0.27M parameters). ResNet-56: (9, 9, 9), same widths and
  shortcut (0.85M). ResNet-18: (2, 2, 2, 2), (64, 128, 256, 512), shortcut "conv" (11.2M).
  `width` scales all channel counts; skip=False removes every block's shortcut (Li et al. 2018
  §5, Figs 5-6: "ResNet-56-noshort"). Input (N, H, W, C), 32x32 for CIFAR/SVHN.
  """
  stage_sizes: Sequence[int] = (3, 3, 3)
  widths: Sequence[int] = (16, 32, 64)
  num_classes: int = 10
  width: float = 1.0
  shortcut: str = "pad"
  skip: bool = True

  @nn.compact
  def __call__(self, x, train: bool = False):
    widths = [_scaled(w, self.width) for w in self.widths]
    x = nn.Conv(widths[0], (3, 3), padding="SAME", use_bias=False)(x)
    x = nn.relu(_batch_norm(train)(x))
    for i, (n, w) in enumerate(zip(self.stage_sizes, widths)):
      for j in range(n):
        x = BasicBlock(w, strides=2 if i > 0 and j == 0 else 1, shortcut=self.shortcut,
                       skip=self.skip)(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes)(x)


def _check_positive(name: str, value, kind=(int,)) -> None:
  ok = isinstance(value, kind) and not isinstance(value, bool) and value > 0
  if not ok:
    what = "integer" if kind == (int,) else "number"
    raise ValueError(f"{name}={value!r} must be a positive {what}")


def _make_mlp(num_classes, widths=(23, 16, 26, 32, 28, 31), activation="relu"):
  widths = tuple(widths)
  if not widths:
    raise ValueError("widths=() must list at least one hidden width")
  for w in widths:
    _check_positive(f"widths entry {w!r} in widths", w)
  if activation not in ACTIVATIONS:
    raise ValueError(f"activation={activation!r} is unknown; allowed: "
                     f"{', '.join(sorted(ACTIVATIONS))}")
  return MLP(widths=widths, num_classes=num_classes, activation=activation)


def _make_small_cnn(num_classes, features=(32, 64), dense=128):
  features = tuple(features)
  if not features:
    raise ValueError("features=() must list at least one conv width")
  for f in features:
    _check_positive(f"features entry {f!r} in features", f)
  _check_positive("dense", dense)
  return SmallCNN(features=features, dense=dense, num_classes=num_classes)


def _make_vgg(depth):
  def make(num_classes, width=1.0):
    _check_positive("width", width, (int, float))
    return VGG(depth=depth, num_classes=num_classes, width=float(width))
  return make


def _make_resnet(stage_sizes, widths, shortcut):
  def make(num_classes, width=1.0, skip=True):
    _check_positive("width", width, (int, float))
    if not isinstance(skip, (bool, np.bool_)):
      raise ValueError(f"skip={skip!r} must be a bool (True: shortcuts, False: Li et al.'s noshort)")
    return ResNet(stage_sizes=stage_sizes, widths=widths, num_classes=num_classes,
                  width=float(width), shortcut=shortcut, skip=bool(skip))
  return make


MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": _make_mlp,
    "small_cnn": _make_small_cnn,
    "vgg11": _make_vgg(11),
    "vgg13": _make_vgg(13),
    "vgg16": _make_vgg(16),
    "resnet20": _make_resnet((3, 3, 3), (16, 32, 64), "pad"),
    "resnet56": _make_resnet((9, 9, 9), (16, 32, 64), "pad"),
    "resnet18": _make_resnet((2, 2, 2, 2), (64, 128, 256, 512), "conv"),
}


def create_model(name: str, num_classes: int, **kwargs) -> nn.Module:
  """The model called `name` (see MODELS) for `num_classes` outputs.

  Options: mlp(widths, activation), small_cnn(features, dense), vgg11/13/16(width),
  resnet20/resnet56/resnet18(width, skip); `width` multiplies every channel count, skip=False
  removes the residual shortcuts (Li et al.'s "noshort"). Unknown names or options and
  non-positive sizes are a ValueError naming the value and what is allowed.
  """
  if name not in MODELS:
    raise ValueError(f"unknown model {name!r}; allowed: {', '.join(sorted(MODELS))}")
  _check_positive("num_classes", num_classes)
  fn = MODELS[name]
  allowed = list(inspect.signature(fn).parameters)[1:]
  bad = sorted(set(kwargs) - set(allowed))
  if bad:
    raise ValueError(f"unknown option(s) {', '.join(bad)} for model {name!r}; allowed: "
                     f"{', '.join(allowed) or 'none'}")
  return fn(num_classes, **kwargs)


def init_variables(model: nn.Module, key, input_shape: Sequence[int]) -> dict:
  """`model.init` on a zero batch of one example of `input_shape` (no leading batch axis).

  Returns the variables dict: {"params": ...} plus {"batch_stats": ...} for BatchNorm models.
  """
  x = jnp.zeros((1, *input_shape), jnp.float32)
  return dict(model.init(key, x, train=False))


def metric_fn(model: nn.Module, model_state: dict | None = None):
  """`fn(params, batch) -> {"loss": mean cross-entropy, "accuracy": mean 0/1}` in inference mode.

  The bridge from a model to every evaluator (landscape, basin, Hessian): `params` is the
  perturbable "params" collection; `model_state` (e.g. {"batch_stats": ...}) is held fixed, so
  BatchNorm uses its running statistics. `batch` is {"x": (N, ...), "y": (N,)}.
  """
  state = dict(model_state or {})

  def fn(params, batch):
    logits = model.apply({"params": params, **state}, batch["x"], train=False)
    return {"loss": jnp.mean(objectives.cross_entropy(logits, batch["y"])),
            "accuracy": jnp.mean(objectives.accuracy(logits, batch["y"]))}

  return fn
