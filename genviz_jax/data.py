"""Datasets as plain arrays: swiss roll, circles, digits (embedded), TFDS image datasets.

Every dataset is a `Dataset`: numpy splits `{"x": float32 (N, ...), "y": int32 (N,)}` for train
and test, an optional fixed poison split (extra data with its TRUE labels, for the poisoned
objective), and, where the distribution is known in closed form, `poison_sampler(key)`: a
jax-traceable function returning a fresh poison batch, so a scan-compiled trainer can draw a new
poison sample every step (what makes the swiss-roll minimum bad; docs/method.md §2).
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

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


def _nonnegative_int(name: str, value) -> int:
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
    raise ValueError(f"{name}={value!r} must be an integer >= 0")
  return int(value)


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
  """The two-spirals "swiss roll" of Huang et al. (docs/method.md §2).

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


# ---------------------------------------------------------------- concentric circles (Fig. 8)

_CIRCLES_PERIOD = 2 * np.pi / 10  # the construction maps onto itself under this rotation


def _circles_points(num_inner: int, num_outer: int, num_gap: int, margin: float,
                    rotation: float) -> tuple[np.ndarray, np.ndarray]:
  """Deterministic rings; angles are measured like the authors' code: (r sin t, r cos t)."""
  inner_r, outer_r = 0.4, 0.95
  t0 = rotation + 2 * np.pi * np.arange(num_inner) / num_inner
  t1 = rotation + 2 * np.pi * np.arange(num_outer) / num_outer
  # Half a class-0 spacing off, so every gap point sits between two class-0 points.
  tg = rotation + 2 * np.pi * np.arange(num_gap) / num_gap + np.pi / num_inner
  ring = lambda r, t: np.stack([r * np.sin(t), r * np.cos(t)], -1)
  x = np.concatenate([ring(inner_r, t0), ring(outer_r, t1), ring(inner_r + margin, tg)])
  y = np.concatenate([np.zeros(num_inner, np.int32), np.ones(num_outer + num_gap, np.int32)])
  return x.astype(np.float32), y


def circles(seed: int = 0, margin: float = 0.001, num_inner: int = 40, num_outer: int = 80,
            num_gap: int = 10, test_rotation: float | None = None) -> Dataset:
  """The concentric circles of Huang et al. Fig. 8, where the only perfect fit is sharp.

  Construction (the authors' wide_margins_example.py): class 0 = `num_inner` (40) points evenly
  spaced on the circle of radius 0.4; class 1 = `num_outer` (80) points evenly spaced on radius
  0.95 plus `num_gap` (10) points on radius 0.4 + `margin`, each placed half a class-0 spacing
  (π/num_inner) off a class-0 point, i.e. interleaved in angle with class 0. Point k of a ring of
  m points sits at angle t = rotation + 2πk/m, coordinates (r sin t, r cos t). With the default
  margin 0.001 a classifier must separate points 0.001 apart radially; margin 0.3 is the
  wide-margin control.

  Train: rotation 0 (exactly the authors' points, 130 in all). Test: the same construction
  rotated by `test_rotation` radians, drawn by default uniformly from (0, 2π/10) with
  RandomState(seed) (rotating by 2π/10 maps the construction onto itself), so test points lie at
  new angles. No poison split. x: float32 (N, 2), y: int32 (N,).
  """
  for name, v in (("num_inner", num_inner), ("num_outer", num_outer), ("num_gap", num_gap)):
    _positive_int(name, v)
  if not np.isfinite(margin) or not 0 < margin < 0.55:
    raise ValueError(f"margin={margin!r} must be in (0, 0.55) (gap points between radii 0.4 "
                     "and the outer ring at 0.95)")
  if test_rotation is None:
    test_rotation = float(np.random.RandomState(seed).uniform(0.05, 0.95) * _CIRCLES_PERIOD)
  elif not np.isfinite(test_rotation):
    raise ValueError(f"test_rotation={test_rotation!r} must be a finite angle in radians")
  xtr, ytr = _circles_points(num_inner, num_outer, num_gap, margin, 0.0)
  xte, yte = _circles_points(num_inner, num_outer, num_gap, margin, float(test_rotation))
  return Dataset(
      name="circles", train={"x": xtr, "y": ytr}, test={"x": xte, "y": yte}, num_classes=2,
      metadata={"seed": seed, "margin": float(margin), "test_rotation": float(test_rotation)})


# ---------------------------------------------------------------- normalization

def _channel_stats(x: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel (last axis) mean and std in float64, chunked: uint8 data is never copied whole."""
  c = x.shape[-1]
  s = np.zeros(c)
  s2 = np.zeros(c)
  n = 0
  for i in range(0, len(x), chunk):
    part = x[i:i + chunk].reshape(-1, c).astype(np.float64)
    s += part.sum(0)
    s2 += np.square(part).sum(0)
    n += part.shape[0]
  mean = s / n
  std = np.sqrt(np.maximum(s2 / n - mean ** 2, 0.0))
  # A constant channel carries no information; dividing by ~0 would only amplify noise.
  return mean, np.where(std > 1e-8, std, 1.0)


def _normalized(x: np.ndarray, mean: np.ndarray, std: np.ndarray, chunk: int = 4096) -> np.ndarray:
  out = np.empty(x.shape, np.float32)
  for i in range(0, len(x), chunk):
    out[i:i + chunk] = (x[i:i + chunk].astype(np.float64) - mean) / std
  return out


def _normalize_splits(splits: dict[str, Batch | None]) -> tuple[dict, dict]:
  """Normalizes every split's x with the TRAIN split's per-channel statistics."""
  mean, std = _channel_stats(splits["train"]["x"])
  out = {k: None if v is None else {"x": _normalized(v["x"], mean, std), "y": v["y"]}
         for k, v in splits.items()}
  return out, {"channel_mean": mean.tolist(), "channel_std": std.tolist()}


def _split_sizes(total: int, num_train, num_test, num_poison) -> tuple[int, int, int]:
  num_train = _positive_int("num_train", num_train)
  _nonnegative_int("num_poison", num_poison)
  if num_test is None:
    num_test = total - num_train - num_poison
    if num_test <= 0:
      raise ValueError(f"num_train={num_train} + num_poison={num_poison} leaves no test data "
                       f"(the data has {total} examples)")
  num_test = _positive_int("num_test", num_test)
  if num_train + num_test + num_poison > total:
    raise ValueError(f"num_train={num_train} + num_test={num_test} + num_poison={num_poison} "
                     f"exceeds the {total} examples available")
  return num_train, num_test, int(num_poison)


# ---------------------------------------------------------------- digits (scikit-learn, embedded)

def digits(seed: int = 0, num_train: int = 1000, num_test: int | None = None,
           num_poison: int = 0) -> Dataset:
  """scikit-learn's 8x8 handwritten digits (1797 images, shipped with the package; no download).

  A permutation from RandomState(seed) splits the images into train (`num_train`), poison
  (`num_poison`, true labels, for the poisoned objective) and test (`num_test`, default: all
  the rest). Pixels (0..16) are normalized with the train split's mean and std.
  x: float32 (N, 8, 8, 1), y: int32 (N,), 10 classes.
  """
  from sklearn.datasets import load_digits  # local: scikit-learn is slow to import
  raw = load_digits()
  x = raw.images.astype(np.float64)[..., None]
  y = raw.target.astype(np.int32)
  num_train, num_test, num_poison = _split_sizes(len(y), num_train, num_test, num_poison)
  perm = np.random.RandomState(seed).permutation(len(y))
  tr, po = perm[:num_train], perm[num_train:num_train + num_poison]
  te = perm[num_train + num_poison:num_train + num_poison + num_test]
  splits, stats = _normalize_splits({
      "train": {"x": x[tr], "y": y[tr]}, "test": {"x": x[te], "y": y[te]},
      "poison": {"x": x[po], "y": y[po]} if num_poison else None})
  return Dataset(name="digits", train=splits["train"], test=splits["test"], num_classes=10,
                 poison=splits["poison"], metadata={"seed": seed, **stats})


# ---------------------------------------------------------------- TFDS image datasets

TFDS_DATASETS = {  # name -> (num_classes, split the poison set comes from)
    "mnist": (10, "train"),
    "fashion_mnist": (10, "train"),
    "cifar10": (10, "train"),
    "svhn_cropped": (10, "extra"),
}
# 50k 32x32x3 float32 images are 0.6 GB: asking for more poison than this needs max_poison.
DEFAULT_MAX_POISON = 100_000


def _prepare_hint(name: str) -> str:
  return (f"prepare it with `python -m experiments.prepare_data --dataset={name} "
          "--data_dir=DIR` (needs `pip install -e '.[tf]'` and internet)")


def _check_data_dir(name: str, data_dir) -> str:
  if data_dir is None or str(data_dir) == "":
    raise ValueError(f"dataset {name!r} needs data_dir: {_prepare_hint(name)}")
  data_dir = os.fspath(data_dir)
  if not os.path.exists(data_dir):
    raise ValueError(f"data_dir={data_dir!r} does not exist: {_prepare_hint(name)}")
  if not os.path.isdir(data_dir):
    raise ValueError(f"data_dir={data_dir!r} is not a directory: {_prepare_hint(name)}")
  return data_dir


def _read_split(source, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Reads examples `indices` of a tfds data source into uint8 images and int32 labels."""
  first = source[int(indices[0])]
  image0 = np.asarray(first["image"])
  x = np.empty((len(indices),) + image0.shape, image0.dtype)
  y = np.empty(len(indices), np.int32)
  for j, i in enumerate(indices):
    ex = first if j == 0 else source[int(i)]
    x[j] = ex["image"]
    y[j] = ex["label"]
  return x, y


def _subset(n: int, k: int | None, rng: np.random.RandomState) -> np.ndarray:
  """k of n indices chosen by rng (all when k is None), in file order so reads stay sequential."""
  if k is None or k >= n:
    return np.arange(n)
  return np.sort(rng.choice(n, k, replace=False))


def tfds_dataset(name: str, data_dir: str | os.PathLike | None = None, *,
                 num_train: int | None = None, num_test: int | None = None,
                 num_poison: int = 0, max_poison: int = DEFAULT_MAX_POISON,
                 seed: int = 0) -> Dataset:
  """mnist, fashion_mnist, cifar10 or svhn_cropped from a prepared TFDS `data_dir`.

  Reads with `tfds.data_source` (random access, array_record files, no TensorFlow needed) and
  never downloads: a missing or unprepared data_dir is a ValueError saying how to prepare it.
  `num_train` / `num_test` (default: the whole split) take a random subset chosen by `seed`.
  The poison set (true labels) has `num_poison` examples: for svhn_cropped a random subset of the
  `extra` split (531k images), otherwise carved out of the train split (disjoint from train).
  More than `max_poison` poison examples is refused so that the 531k-image extra split is not
  turned into 6.5 GB of float32 by accident. Images are normalized per channel with the train
  split's statistics. x: float32 (N, H, W, C), y: int32 (N,).
  """
  if name not in TFDS_DATASETS:
    raise ValueError(f"unknown TFDS dataset {name!r}; allowed: {', '.join(sorted(TFDS_DATASETS))}")
  num_classes, poison_from = TFDS_DATASETS[name]
  if num_train is not None:
    _positive_int("num_train", num_train)
  if num_test is not None:
    _positive_int("num_test", num_test)
  max_poison = _positive_int("max_poison", max_poison)
  _nonnegative_int("num_poison", num_poison)
  if num_poison > max_poison:
    raise ValueError(f"num_poison={num_poison} exceeds max_poison={max_poison}; raise max_poison "
                     "if the float32 copy fits in memory")
  data_dir = _check_data_dir(name, data_dir)
  import tensorflow_datasets as tfds  # local: slow import, only needed here
  splits = ["train", "test"] + (["extra"] if poison_from == "extra" and num_poison else [])
  try:
    sources = dict(zip(splits, tfds.data_source(name, split=splits, data_dir=data_dir,
                                                download=False)))
  except Exception as e:  # tfds raises many types for "not there"; the fix is always the same
    raise ValueError(f"dataset {name!r} is not prepared (array_record files) in "
                     f"data_dir={data_dir!r} ({type(e).__name__}): {_prepare_hint(name)}") from e

  rng = np.random.RandomState(seed)
  n_train = len(sources["train"])
  if poison_from == "train" and num_poison:
    if num_poison >= n_train:
      raise ValueError(f"num_poison={num_poison} must be smaller than the {n_train} train "
                       f"examples of {name}")
    perm = rng.permutation(n_train)
    po = np.sort(perm[:num_poison])
    rest = perm[num_poison:]
    if num_train is not None and num_train > len(rest):
      raise ValueError(f"num_train={num_train} + num_poison={num_poison} exceeds the {n_train} "
                       f"train examples of {name}")
    tr = np.sort(rest if num_train is None else rest[:num_train])
  else:
    if num_train is not None and num_train > n_train:
      raise ValueError(f"num_train={num_train} exceeds the {n_train} train examples of {name}")
    tr = _subset(n_train, num_train, rng)
    po = None
    if num_poison:
      n_extra = len(sources["extra"])
      if num_poison > n_extra:
        raise ValueError(f"num_poison={num_poison} exceeds the {n_extra} examples of "
                         f"{name}'s extra split")
      po = _subset(n_extra, num_poison, rng)
  n_test = len(sources["test"])
  if num_test is not None and num_test > n_test:
    raise ValueError(f"num_test={num_test} exceeds the {n_test} test examples of {name}")
  te = _subset(n_test, num_test, rng)

  raw = {"train": _read_split(sources["train"], tr), "test": _read_split(sources["test"], te),
         "poison": None}
  if num_poison:
    raw["poison"] = _read_split(sources[poison_from], po)
  norm, stats = _normalize_splits(
      {k: None if v is None else {"x": v[0], "y": v[1]} for k, v in raw.items()})
  return Dataset(name=name, train=norm["train"], test=norm["test"], num_classes=num_classes,
                 poison=norm["poison"],
                 metadata={"seed": seed, "data_dir": data_dir, "poison_split": poison_from
                           if num_poison else None, **stats})


# ---------------------------------------------------------------- registry

def _tfds_loader(name):
  def load(data_dir=None, *, num_train=None, num_test=None, num_poison=0,
           max_poison=DEFAULT_MAX_POISON, seed=0):
    return tfds_dataset(name, data_dir, num_train=num_train, num_test=num_test,
                        num_poison=num_poison, max_poison=max_poison, seed=seed)
  load.__doc__ = f"{name} from a prepared TFDS data_dir; see `tfds_dataset`."
  return load


DATASETS: dict[str, Callable[..., Dataset]] = {
    "swissroll": swiss_roll,
    "circles": circles,
    "digits": digits,
    **{name: _tfds_loader(name) for name in TFDS_DATASETS},
}


def get_dataset(name: str, **kwargs) -> Dataset:
  """The dataset called `name` (see DATASETS), built with the keyword arguments of its loader.

  Embedded datasets (swissroll, circles, digits) accept data_dir=None; TFDS ones need it. An
  unknown name or an unknown keyword is a ValueError listing what is allowed.
  """
  if name not in DATASETS:
    raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(sorted(DATASETS))}")
  fn = DATASETS[name]
  allowed = [p for p in inspect.signature(fn).parameters]
  if "data_dir" not in allowed and kwargs.get("data_dir", "") in (None, ""):
    kwargs.pop("data_dir", None)  # an unset data_dir is no option, whatever the dataset
  bad = sorted(set(kwargs) - set(allowed))
  if bad:
    raise ValueError(f"unknown option(s) {', '.join(bad)} for dataset {name!r}; allowed: "
                     f"{', '.join(allowed)}")
  return fn(**kwargs)


# ---------------------------------------------------------------- minibatches

def minibatch_indices(num_examples: int, batch_size: int, seed: ArrayLike,
                      step: ArrayLike) -> jax.Array:
  """Indices of minibatch `step` of a seeded, per-epoch shuffle: int32 (batch_size,).

  Pure and jittable (`seed` and `step` may be traced; `num_examples` and `batch_size` are
  static), so a scan-compiled trainer can keep the data on device and resume at any step with
  the same batches. epoch = step // steps_per_epoch with steps_per_epoch =
  num_examples // batch_size (the remainder of each epoch's permutation is dropped); the epoch's
  permutation comes from fold_in(key(seed), epoch). Cost: one permutation (a sort of
  num_examples keys) per call.
  """
  num_examples = _positive_int("num_examples", num_examples)
  batch_size = _positive_int("batch_size", batch_size)
  if batch_size > num_examples:
    raise ValueError(f"batch_size={batch_size} exceeds num_examples={num_examples}")
  steps_per_epoch = num_examples // batch_size
  step = jnp.asarray(step, jnp.int32)
  epoch = step // steps_per_epoch
  key = jax.random.fold_in(jax.random.key(seed), epoch)
  perm = jax.random.permutation(key, num_examples).astype(jnp.int32)
  return jax.lax.dynamic_slice(perm, ((step % steps_per_epoch) * batch_size,), (batch_size,))
