"""A training run's config: its keys, their checks, and the parts it builds.

`default_config()` lists every key the trainer reads; `validate_config` turns a bad value into a
one-line ValueError; `build_dataset`, `build_model`, `make_optimizer` and `init_state` rebuild a
run's pieces from its config alone. Both the trainer (genviz_jax.train) and the loader of trained
runs (genviz_jax.workdir) use this module; neither imports the other's internals through it.

The train state is a plain dict of arrays

    {"params": pytree, "batch_stats": pytree or {}, "opt_state": optax state,
     "step": int32 (), "rng": uint32 (2,)}

and the state at step 0 is a function of config.seed only.
"""

from __future__ import annotations

import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from genviz_jax import data as data_lib
from genviz_jax import models as models_lib

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad", "adamax",
              "amsgrad", "lbfgs", "sam")
# Optimizers that may serve as SAM's outer (descent) optimizer.
SAM_BASES = tuple(o for o in OPTIMIZERS if o not in ("lbfgs", "sam"))
POISON_SOURCES = ("sampler", "fixed")

State = dict


def default_config() -> ml_collections.ConfigDict:
  """Every key the trainer reads, with neutral defaults; experiment configs override them."""
  c = ml_collections.ConfigDict()
  c.dataset = "swissroll"
  c.dataset_kwargs = ml_collections.ConfigDict()  # passed to data.get_dataset(name, **kw)
  c.data_dir = ""  # TFDS datasets: where the prepared data lives
  c.model = "mlp"
  c.model_kwargs = ml_collections.ConfigDict()  # passed to models.create_model(name, C, **kw)
  c.seed = 0  # initialization, minibatch order and poison samples

  c.optimizer = "adam"
  c.learning_rate = 1e-3
  c.lr_boundaries = ()  # steps at which the learning rate is multiplied by lr_decay
  c.lr_decay = 0.1
  c.momentum = 0.9  # momentum, nesterov, rmsprop (and SAM's base when it is one of them)
  c.weight_decay = 0.0  # decoupled for adamw, added to the gradient (L2) for the others
  c.grad_clip = 0.0  # global-norm clipping threshold; 0 = off
  c.sam_base = "sgd"  # SAM's outer optimizer
  c.sam_rho = 0.05  # SAM's ascent radius

  c.num_steps = 1000
  c.batch_size = 0  # 0 = full batch
  c.eval_batch_size = 1000

  c.poison_factor = 0.0  # β after the warm-up (β in [0, 1]); 0 = clean training
  c.poison_warmup_steps = 0  # for steps < this, β = poison_warmup_factor
  c.poison_warmup_factor = 0.0
  c.poison_source = "sampler"  # fresh sample every step, or "fixed": the dataset's poison split
  c.poison_batch_size = 0  # fixed source: poison examples per step; 0 = the whole split

  c.log_every = 100  # a metrics.jsonl line every this many steps
  # Steps per compiled call; 0 = auto: the whole log_every block as one lax.scan, except conv
  # nets on CPU, where XLA runs convolutions inside a while loop ~20x slower than outside
  # (measured: small CNN, 0.5 s vs 20 ms per step), so they get one unrolled step per call.
  c.steps_per_call = 0
  c.eval_every = 1000  # train/test evaluation (multiple of log_every)
  c.checkpoint_every = 1000  # multiple of log_every; the final step is always saved
  c.keep_checkpoints = 2
  c.snapshot_every = 0  # keep the parameters every k steps (trajectory figures); 0 = off
  c.plot = True  # read by the train job: decision_boundary.png for 2-D data (not the trainer)
  return c


# ------------------------------------------------------------------------------ validation


def _positive_int(config, key: str, allow_zero: bool = False) -> int:
  v = config[key]
  if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0 or (v == 0 and not allow_zero):
    allowed = "an integer >= 0" if allow_zero else "a positive integer"
    raise ValueError(f"{key}={v!r} must be {allowed}")
  return int(v)


def _nonnegative(config, key: str) -> float:
  v = config[key]
  if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
    raise ValueError(f"{key}={v!r} must be a finite number >= 0")
  return float(v)


def _choice(config, key: str, allowed) -> str:
  v = config[key]
  if v not in allowed:
    raise ValueError(f"{key}={v!r} is not one of: {', '.join(allowed)}")
  return v


def _factor(config, key: str) -> float:
  v = config[key]
  try:
    f = float(v)
  except (TypeError, ValueError):
    f = float("nan")
  if not 0.0 <= f <= 1.0:  # also rejects NaN
    raise ValueError(f"{key}={v!r} is outside [0, 1]")
  return f


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises a one-line ValueError for any key outside what the trainer accepts.

  Checks names and numbers only; dataset/model names are checked when they are built.
  """
  _choice(config, "optimizer", OPTIMIZERS)
  if config.optimizer == "sam":
    _choice(config, "sam_base", SAM_BASES)
    _nonnegative(config, "sam_rho")
  if config.optimizer != "lbfgs":
    lr = config.learning_rate
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
      raise ValueError(f"learning_rate={lr!r} must be a finite number > 0")
  for key in ("lr_decay", "momentum", "weight_decay", "grad_clip"):
    _nonnegative(config, key)
  bounds = tuple(config.lr_boundaries)
  if any(not isinstance(b, (int, np.integer)) or b <= 0 for b in bounds) or list(bounds) != sorted(bounds):
    raise ValueError(f"lr_boundaries={bounds!r} must be increasing positive integers")
  for key in ("num_steps", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints",
              "eval_batch_size"):
    _positive_int(config, key)
  for key in ("batch_size", "poison_batch_size", "snapshot_every", "poison_warmup_steps",
              "steps_per_call"):
    _positive_int(config, key, allow_zero=True)
  for key in ("eval_every", "checkpoint_every"):
    if config[key] % config.log_every:
      raise ValueError(f"{key}={config[key]} must be a multiple of log_every={config.log_every}")
  k = config.snapshot_every
  if k and k % config.log_every and config.log_every % k:
    raise ValueError(f"snapshot_every={k} must divide or be a multiple of "
                     f"log_every={config.log_every}")
  _factor(config, "poison_factor")
  _factor(config, "poison_warmup_factor")
  _choice(config, "poison_source", POISON_SOURCES)
  if config.optimizer == "lbfgs" and config.batch_size:
    raise ValueError(f"batch_size={config.batch_size} is not allowed with optimizer='lbfgs' "
                     "(full batch only: use batch_size=0)")


def is_poisoned(config) -> bool:
  """Whether any step of the schedule has β > 0 (static: decides what gets compiled)."""
  return bool(config.poison_factor > 0 or
              (config.poison_warmup_steps > 0 and config.poison_warmup_factor > 0))


# ---------------------------------------------------------------------------- building blocks


def build_dataset(config) -> data_lib.Dataset:
  """The config's dataset (`data.get_dataset(name, data_dir=..., **dataset_kwargs)`)."""
  kw = dict(config.dataset_kwargs.to_dict() if hasattr(config.dataset_kwargs, "to_dict")
            else config.dataset_kwargs)
  if config.data_dir:
    kw["data_dir"] = config.data_dir
  return data_lib.get_dataset(config.dataset, **kw)


def build_model(config, dataset: data_lib.Dataset) -> nn.Module:
  """The config's Flax module for `dataset.num_classes` outputs."""
  kw = dict(config.model_kwargs.to_dict() if hasattr(config.model_kwargs, "to_dict")
            else config.model_kwargs)
  return models_lib.create_model(config.model, dataset.num_classes, **kw)


def lr_schedule(config) -> optax.Schedule:
  """Step decay: learning_rate, multiplied by lr_decay at each of lr_boundaries."""
  return optax.piecewise_constant_schedule(
      float(config.learning_rate), {int(b): float(config.lr_decay) for b in config.lr_boundaries})


def poison_schedule(config) -> Callable[[jax.Array], jax.Array]:
  """β(step): poison_warmup_factor before poison_warmup_steps, poison_factor from then on."""
  warm_steps = int(config.poison_warmup_steps)
  warm, final = float(config.poison_warmup_factor), float(config.poison_factor)
  return lambda step: jnp.where(step < warm_steps, warm, final).astype(jnp.float32)


def _named_optimizer(name: str, config, lr) -> optax.GradientTransformation:
  m = float(config.momentum)
  wd = float(config.weight_decay)
  makers = {
      "sgd": lambda: optax.sgd(lr),
      "momentum": lambda: optax.sgd(lr, momentum=m),
      "nesterov": lambda: optax.sgd(lr, momentum=m, nesterov=True),
      "adam": lambda: optax.adam(lr),
      "adamw": lambda: optax.adamw(lr, weight_decay=wd),
      "rmsprop": lambda: optax.rmsprop(lr, momentum=m),
      "adagrad": lambda: optax.adagrad(lr),
      "adamax": lambda: optax.adamax(lr),
      "amsgrad": lambda: optax.amsgrad(lr),
  }
  if name not in makers:
    raise ValueError(f"optimizer={name!r} is not one of: {', '.join(OPTIMIZERS)}")
  tx = makers[name]()
  if wd and name != "adamw":  # adamw decays decoupled; the others get the L2 gradient term
    tx = optax.chain(optax.add_decayed_weights(wd), tx)
  return tx


def make_optimizer(config) -> optax.GradientTransformationExtraArgs:
  """The optax transformation named by config.optimizer (see OPTIMIZERS).

  Clipping (grad_clip > 0) acts on the raw gradient before anything else. lbfgs uses its zoom
  line search (learning_rate is not used); sam is optax.contrib.sam in opaque mode (one call =
  one ascent step of radius sam_rho + one descent step of sam_base), so a SAM step costs two
  gradients.
  """
  name = _choice(config, "optimizer", OPTIMIZERS)
  if name == "lbfgs":
    tx = optax.lbfgs()
  elif name == "sam":
    base = _named_optimizer(_choice(config, "sam_base", SAM_BASES), config, lr_schedule(config))
    adv = optax.chain(optax.contrib.normalize(), optax.sgd(float(config.sam_rho)))
    tx = optax.contrib.sam(base, adv, sync_period=2, opaque_mode=True)
  else:
    tx = _named_optimizer(name, config, lr_schedule(config))
  if config.grad_clip > 0:
    tx = optax.chain(optax.clip_by_global_norm(float(config.grad_clip)), tx)
  return optax.with_extra_args_support(tx)


def init_state(config, model: nn.Module, dataset: data_lib.Dataset,
               tx: optax.GradientTransformation) -> State:
  """The train state at step 0, a function of config.seed only."""
  init_key, rng = jax.random.split(jax.random.PRNGKey(int(config.seed)))
  x = jnp.zeros((1,) + dataset.input_shape, jnp.float32)
  variables = model.init(init_key, x, train=False)
  params = variables["params"]
  state = {"params": params, "batch_stats": variables.get("batch_stats", {}),
           "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32), "rng": rng}
  # Optimizer states may alias the parameter buffers (lbfgs does); the loop donates the state,
  # and one buffer cannot be donated twice.
  return jax.tree.map(lambda a: jnp.array(a, copy=True), state)


def model_state_of(state: State) -> dict:
  """The non-parameter collections of a train state, as model.apply wants them."""
  return {"batch_stats": state["batch_stats"]} if jax.tree.leaves(state["batch_stats"]) else {}



def has_batch_stats(model: nn.Module, dataset: data_lib.Dataset) -> bool:
  """Whether `model` has a non-empty batch_stats collection (BatchNorm) for this input shape."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                             jnp.zeros((1,) + dataset.input_shape), train=False))
  return bool(jax.tree.leaves(shapes.get("batch_stats", {})))
