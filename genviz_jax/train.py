"""The poisoned-objective trainer: pure jitted steps, scan-compiled loops, exact resume.

The train state is a plain dict of arrays

    {"params": pytree, "batch_stats": pytree or {}, "opt_state": optax state,
     "step": int32 (), "rng": uint32 (2,)}

and one training step is a pure function `state -> state` of the step counter alone: the
minibatch, the fresh poison sample and the poison factor β are all functions of
(seed, step), never of Python-side counters. So the state at step k does not depend on how the
steps were grouped into compiled calls or on whether the run was killed and resumed.

On GPU the bits also depend on XLA's autotuning and atomics: exact resume there needs
XLA_FLAGS=--xla_gpu_deterministic_ops=true, which experiments/train.py sets.

The loop runs `log_every` steps per compiled call (`lax.scan`; the paper's schedules are
100k+ steps and cannot be dispatched one by one from Python; conv nets on CPU are the exception,
see `steps_per_call`), checks them for non-finite values, evaluates, and checkpoints through
`genviz_jax.workdir`.

The objective (DESIGN §1) with β(step) from the poison schedule:
  L = (1-β)·mean_{D_t} -log p(y|x) + β·mean_{D_p} -log(1 - p(y|x)),
where D_p (true labels) is a fresh `dataset.poison_sampler` sample each step
(`poison_source="sampler"`) or minibatches of the fixed `dataset.poison` split
(`poison_source="fixed"`), passed through the network together with the train batch (so
BatchNorm sees both, as in the authors' mixed batches).
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from genviz_jax import data as data_lib
from genviz_jax import models as models_lib
from genviz_jax import objectives

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad", "adamax",
              "amsgrad", "lbfgs", "sam")
# Optimizers that may serve as SAM's outer (descent) optimizer.
SAM_BASES = tuple(o for o in OPTIMIZERS if o not in ("lbfgs", "sam"))
POISON_SOURCES = ("sampler", "fixed")
# Codes of the non-finite guard, in the order they are checked within a step.
NONFINITE_WHAT = ("loss", "gradient norm", "parameters")

State = dict


class NonFiniteError(ArithmeticError):
  """A training step produced inf/NaN; the message names the step and the quantity."""


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
  c.plot = True  # decision_boundary.png for 2-D data
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
  get = getattr(data_lib, "get_dataset", None)
  if get is not None:
    return get(config.dataset, **kw)
  if config.dataset != "swissroll":  # until the data module grows get_dataset
    raise ValueError(f"dataset={config.dataset!r} is not one of: swissroll")
  kw.pop("data_dir", None)
  return data_lib.swiss_roll(**kw)


def build_model(config, dataset: data_lib.Dataset) -> nn.Module:
  """The config's Flax module for `dataset.num_classes` outputs."""
  kw = dict(config.model_kwargs.to_dict() if hasattr(config.model_kwargs, "to_dict")
            else config.model_kwargs)
  create = getattr(models_lib, "create_model", None)
  if create is not None:
    return create(config.model, dataset.num_classes, **kw)
  if config.model != "mlp":
    raise ValueError(f"model={config.model!r} is not one of: mlp")
  if "widths" in kw:
    kw["widths"] = tuple(kw["widths"])
  return models_lib.MLP(num_classes=dataset.num_classes, **kw)


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


def _minibatch_indices(num_examples: int, batch_size: int, seed: int, step) -> jax.Array:
  """Indices (batch_size,) of minibatch `step`: epoch-wise permutations, remainder dropped."""
  fn = getattr(data_lib, "minibatch_indices", None)
  if fn is not None:
    return fn(num_examples, batch_size, seed, step)
  per_epoch = max(num_examples // batch_size, 1)
  epoch, i = step // per_epoch, step % per_epoch
  perm = jax.random.permutation(jax.random.fold_in(jax.random.PRNGKey(seed), epoch), num_examples)
  return jax.lax.dynamic_slice(perm, (i * batch_size,), (batch_size,))


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


def device_data(config, dataset: data_lib.Dataset) -> dict:
  """The arrays a train step reads: {"train": batch, "poison": batch or {}} as jnp arrays."""
  out = {"train": {k: jnp.asarray(dataset.train[k]) for k in ("x", "y")}, "poison": {}}
  if is_poisoned(config) and config.poison_source == "fixed":
    if dataset.poison is None:
      raise ValueError(f"poison_source='fixed' but dataset={config.dataset!r} has no poison split")
    out["poison"] = {k: jnp.asarray(dataset.poison[k]) for k in ("x", "y")}
  return out


def make_train_step(config, model: nn.Module, dataset: data_lib.Dataset,
                    tx: optax.GradientTransformationExtraArgs):
  """`step_fn(state, data) -> (state, aux)`: one optimizer step (pure, traceable).

  aux = {"objective": the poisoned loss at the pre-step parameters, "grad_norm": its global
  gradient norm (before clipping), "beta", "nonfinite": int32 code, -1 if all finite, else an
  index into NONFINITE_WHAT}.
  """
  poisoned = is_poisoned(config)
  beta_fn = poison_schedule(config)
  bs, pbs, seed = int(config.batch_size), int(config.poison_batch_size), int(config.seed)
  n_train = int(dataset.train["y"].shape[0])
  source = config.poison_source
  if poisoned and source == "sampler" and dataset.poison_sampler is None:
    raise ValueError(f"poison_source='sampler' but dataset={config.dataset!r} has no "
                     "poison sampler (use poison_source='fixed')")
  n_poison = int(dataset.poison["y"].shape[0]) if dataset.poison is not None else 0
  for key, size, n in (("batch_size", bs, n_train), ("poison_batch_size", pbs, n_poison)):
    if size > n and (key == "batch_size" or (poisoned and source == "fixed")):
      raise ValueError(f"{key}={size} exceeds the {n} examples available")
  # The objective is the same function every step only for full-batch data without fresh
  # poison samples; only then may L-BFGS reuse its line search's value and gradient.
  fixed_objective = bs == 0 and not (poisoned and source == "sampler")
  if config.optimizer == "lbfgs" and has_batch_stats(model, dataset):
    raise ValueError("optimizer='lbfgs' needs a model without BatchNorm "
                     f"(model={config.model!r} has batch_stats)")

  def batches(state, data):
    step = state["step"]
    if bs:
      idx = _minibatch_indices(n_train, bs, seed, step)
      batch = jax.tree.map(lambda a: a[idx], data["train"])
    else:
      batch = data["train"]
    if not poisoned:
      return batch, None
    if source == "sampler":
      poison = dataset.poison_sampler(jax.random.fold_in(state["rng"], step))
    elif pbs:
      idx = _minibatch_indices(n_poison, pbs, seed + 1, step)
      poison = jax.tree.map(lambda a: a[idx], data["poison"])
    else:
      poison = data["poison"]
    return batch, poison

  def loss_fn(params, batch_stats, batch, poison, beta):
    x = batch["x"] if poison is None else jnp.concatenate([batch["x"], poison["x"]])
    variables = {"params": params}
    if batch_stats:
      variables["batch_stats"] = batch_stats
      logits, new_vars = model.apply(variables, x, train=True, mutable=["batch_stats"])
      new_stats = new_vars["batch_stats"]
    else:
      logits, new_stats = model.apply(variables, x, train=True), batch_stats
    n = batch["y"].shape[0]
    if poison is None:
      return objectives.poisoned_loss(logits, batch["y"]), new_stats
    loss = objectives.poisoned_loss(logits[:n], batch["y"], logits[n:], poison["y"], beta)
    return loss, new_stats

  def step_fn(state, data):
    batch, poison = batches(state, data)
    beta = beta_fn(state["step"])
    params, stats = state["params"], state["batch_stats"]
    value_fn = lambda p: loss_fn(p, stats, batch, poison, beta)[0]
    extra = {}
    if config.optimizer == "lbfgs":
      if fixed_objective:
        loss, grads = optax.value_and_grad_from_state(value_fn)(params, state=state["opt_state"])
      else:
        loss, grads = jax.value_and_grad(value_fn)(params)
      new_stats = stats
      extra = {"value": loss, "grad": grads, "value_fn": value_fn}
    else:
      (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
          params, stats, batch, poison, beta)
      if config.optimizer == "sam":
        extra = {"grad_fn": lambda p, _: jax.grad(value_fn)(p)}
    grad_norm = optax.global_norm(grads)
    updates, opt_state = tx.update(grads, state["opt_state"], params, **extra)
    new_params = optax.apply_updates(params, updates)
    params_ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(new_params)]))
    nonfinite = jnp.where(~jnp.isfinite(loss), 0, jnp.where(
        ~jnp.isfinite(grad_norm), 1, jnp.where(~params_ok, 2, -1))).astype(jnp.int32)
    new_state = {"params": new_params, "batch_stats": new_stats, "opt_state": opt_state,
                 "step": state["step"] + 1, "rng": state["rng"]}
    aux = {"objective": loss, "grad_norm": grad_norm, "beta": beta, "nonfinite": nonfinite}
    return new_state, aux

  return step_fn


def has_batch_stats(model: nn.Module, dataset: data_lib.Dataset) -> bool:
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0),
                                             jnp.zeros((1,) + dataset.input_shape), train=False))
  return bool(jax.tree.leaves(shapes.get("batch_stats", {})))


def steps_per_call(config, model_name: str | None = None) -> tuple[int, bool]:
  """(steps per compiled call, whether to unroll them) for this config on this backend."""
  spc = int(config.steps_per_call)
  if spc:
    return spc, False
  if jax.default_backend() == "cpu" and (model_name or config.model) != "mlp":
    return 1, True
  return int(config.log_every), False


def make_train_loop(step_fn):
  """`loop(state, data, outer, inner, snapshot, unroll=False) -> (state, aux, snaps, bad)`.

  Jitted. Runs outer·inner steps as a nested `lax.scan` (unrolled when `unroll`); aux
  holds per-step values (outer·inner,), snaps the parameters after every inner block (leading
  axis `outer`) when `snapshot`, and bad = (first non-finite step or -1, its NONFINITE_WHAT
  code). The state argument is donated.
  """

  def loop(state, data, outer, inner, snapshot, unroll=False):
    def inner_body(carry, _):
      state, bad = carry
      step = state["step"]
      state, aux = step_fn(state, data)
      first = (bad[0] < 0) & (aux["nonfinite"] >= 0)
      bad = jnp.where(first, jnp.stack([step, aux["nonfinite"]]), bad)
      return (state, bad), {k: v for k, v in aux.items() if k != "nonfinite"}

    def scan(body, carry, length):
      if not unroll:
        return jax.lax.scan(body, carry, None, length=length)
      # A Python loop at trace time: even a trip-count-1 scan (unroll=True included) leaves
      # an XLA while loop, which is what makes CPU convolutions slow.
      outs = []
      for _ in range(length):
        carry, out = body(carry, None)
        outs.append(out)
      return carry, jax.tree.map(lambda *a: jnp.stack(a), *outs)

    def outer_body(carry, _):
      carry, aux = scan(inner_body, carry, inner)
      return carry, (aux, carry[0]["params"] if snapshot else None)

    bad0 = jnp.array([-1, -1], jnp.int32)
    (state, bad), (aux, snaps) = scan(outer_body, (state, bad0), outer)
    aux = jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), aux)
    return state, aux, snaps, bad

  return jax.jit(loop, static_argnums=(2, 3, 4, 5), donate_argnums=0)


def make_evaluator(model: nn.Module, batch_size: int):
  """`evaluate(params, model_state, split) -> {"loss", "accuracy"}`: means over the split.

  Inference mode (BatchNorm running statistics). The split is processed in chunks of
  `batch_size` examples, one compiled call each (a Python loop, not lax.map: convolutions in
  an XLA CPU while loop are ~20x slower), the last chunk padded and masked.
  """

  @jax.jit
  def sums(params, model_state, x, y, mask):
    logits = model.apply({"params": params, **model_state}, x, train=False)
    return (jnp.sum(jnp.where(mask, objectives.cross_entropy(logits, y), 0.0)),
            jnp.sum(jnp.where(mask, objectives.accuracy(logits, y), 0.0)))

  def evaluate(params, model_state, split):
    n = int(split["y"].shape[0])
    b = batch_size  # one shape for every split: one compilation
    loss = acc = 0.0
    for i in range(0, n, b):
      x, y = split["x"][i:i + b], split["y"][i:i + b]
      pad = b - x.shape[0]
      mask = jnp.arange(b) < b - pad
      if pad:
        x = jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)])
        y = jnp.concatenate([y, jnp.zeros((pad,), y.dtype)])
      l, a = sums(params, model_state, x, y, mask)
      loss, acc = loss + l, acc + a
    return {"loss": loss / n, "accuracy": acc / n}

  return evaluate


def model_state_of(state: State) -> dict:
  """The non-parameter collections of a train state, as model.apply wants them."""
  return {"batch_stats": state["batch_stats"]} if jax.tree.leaves(state["batch_stats"]) else {}


def num_params(params) -> int:
  return int(sum(np.size(p) for p in jax.tree.leaves(params)))


# ------------------------------------------------------------------------------- the driver


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (or resumes) the run of `config` in `workdir`; returns the summary dict.

  Writes config.json, metrics.jsonl, checkpoints/, snapshots/ (if snapshot_every),
  summary.json and, for 2-D inputs, decision_boundary.png (layout: genviz_jax.workdir). A
  workdir whose run already finished is not retrained: its summary is returned as it is.
  Raises ValueError (bad config, foreign workdir) before anything is written, and
  NonFiniteError when a step produces inf/NaN (the last good checkpoint stays).
  """
  from absl import logging
  from genviz_jax import workdir as wd_lib
  from experiments import common

  validate_config(config)
  dataset = build_dataset(config)
  model = build_model(config, dataset)
  tx = make_optimizer(config)
  step_fn = make_train_step(config, model, dataset, tx)
  data = device_data(config, dataset)
  run = wd_lib.RunDir.open(workdir, config)  # ValueError for foreign workdirs; nothing written
  summary = run.read_summary()
  if summary is not None and summary.get("steps") == config.num_steps:
    logging.info("%s already finished (%d steps); not retraining", workdir, config.num_steps)
    return summary

  abstract = jax.eval_shape(lambda: init_state(config, model, dataset, tx))
  restored = run.restore(abstract)
  if restored is None:
    state, meta = init_state(config, model, dataset, tx), {"wall_time_s": 0.0}
  else:
    state, meta = restored
  start = int(state["step"])
  run.start(start)  # writes config.json, trims metrics.jsonl beyond `start`
  if start:
    logging.info("resuming %s from step %d", workdir, start)

  loop = make_train_loop(step_fn)
  evaluate = make_evaluator(model, int(config.eval_batch_size))
  splits = {s: dataset_split(dataset, s) for s in ("train", "test")}
  lr = lr_schedule(config) if config.optimizer != "lbfgs" else None
  k = int(config.snapshot_every)
  snaps_steps, snaps = [], []
  if k and start == 0:
    snaps_steps.append(0)
    snaps.append(_stack1(state["params"]))
  progress = common.Progress("train", int(config.num_steps))
  wall0 = wall = float(meta.get("wall_time_s", 0.0))
  t_session = time.time()
  step = start
  spc, unroll = steps_per_call(config)
  while step < config.num_steps:
    length = min(int(config.log_every), int(config.num_steps) - step)
    auxes, done = [], 0
    while done < length:
      n = min(spc, length - done)
      inner = k if 0 < k < n and n % k == 0 else n
      state, aux, call_snaps, bad = loop(state, data, n // inner, inner, inner != n, unroll)
      bad = np.asarray(bad)
      if bad[0] >= 0:
        raise NonFiniteError(
            f"non-finite {NONFINITE_WHAT[bad[1]]} at step {bad[0]}; last checkpoint: "
            f"{run.latest_step()} (loss, gradient norm and parameters are checked every step)")
      if inner != n:
        snaps_steps.extend(int(s) for s in step + inner * np.arange(1, n // inner + 1))
        snaps.append(jax.device_get(call_snaps))
      step += n
      done += n
      if k and inner == n and step % k == 0:
        snaps_steps.append(step)
        snaps.append(_stack1(state["params"]))
      auxes.append(aux)
    aux = jax.tree.map(lambda *a: np.concatenate(a), *jax.device_get(auxes))
    line = {"step": step, "objective": float(np.mean(aux["objective"])),
            "objective_last": float(aux["objective"][-1]),
            "grad_norm": float(np.mean(aux["grad_norm"])), "beta": float(aux["beta"][-1])}
    if lr is not None:
      line["learning_rate"] = float(lr(step - 1))
    final = step == config.num_steps
    if final or step % config.eval_every == 0:
      for split_name in ("train", "test"):
        m = jax.device_get(evaluate(state["params"], model_state_of(state), splits[split_name]))
        line[f"{split_name}_loss"] = float(m["loss"])
        line[f"{split_name}_accuracy"] = float(m["accuracy"])
    run.append_metrics(line)
    progress.update(step, extra=f"objective {line['objective']:.4g}")
    if final or step % config.checkpoint_every == 0:
      wall = wall0 + time.time() - t_session  # training time over all sessions
      run.save(step, state, {"wall_time_s": wall})
      if snaps_steps:
        run.save_snapshots(step, snaps_steps, snaps)
        snaps_steps, snaps = [], []
  progress.update(step, force=True)

  ms = model_state_of(state)
  evals = {s: jax.device_get(evaluate(state["params"], ms, splits[s]))
           for s in ("train", "test")}
  summary = {
      "dataset": config.dataset, "model": config.model, "optimizer": config.optimizer,
      "train_accuracy": float(evals["train"]["accuracy"]),
      "test_accuracy": float(evals["test"]["accuracy"]),
      "train_loss": float(evals["train"]["loss"]), "test_loss": float(evals["test"]["loss"]),
      "poison_factor": float(config.poison_factor), "num_params": num_params(state["params"]),
      "steps": int(config.num_steps), "seed": int(config.seed), "wall_time_s": round(wall, 3),
      "steps_per_s": round(config.num_steps / wall, 2) if wall > 0 else None,
  }
  if dataset.input_shape == (2,) and config.plot:
    from genviz_jax.plots import decision
    decision.save_decision_boundary(
        run.path("decision_boundary.png"), model, state["params"], ms, dataset,
        title=(f"{config.dataset} β={config.poison_factor:g}: train "
               f"{100 * summary['train_accuracy']:.1f}%, test {100 * summary['test_accuracy']:.1f}%"))
  run.write_summary(summary)
  return summary


def _stack1(params):
  return jax.tree.map(lambda a: np.asarray(a)[None], jax.device_get(params))


def dataset_split(dataset: data_lib.Dataset, name: str) -> dict:
  split = getattr(dataset, name)
  return {"x": jnp.asarray(split["x"]), "y": jnp.asarray(split["y"])}
