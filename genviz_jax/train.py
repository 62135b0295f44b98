"""The poisoned-objective trainer: pure jitted steps, scan-compiled loops, exact resume.

One training step is a pure function `state -> state` of the step counter alone (the train state
is the dict of genviz_jax.train_config): the minibatch, the fresh poison sample and the poison
factor β are all functions of (seed, step), never of Python-side counters. So the state at step k
does not depend on how the steps were grouped into compiled calls or on whether the run was
killed and resumed.

On GPU the bits also depend on XLA's autotuning and atomics: exact resume there needs
XLA_FLAGS=--xla_gpu_deterministic_ops=true, which the train binary sets.

The loop runs `log_every` steps per compiled call (`lax.scan`; the paper's schedules are
100k+ steps and cannot be dispatched one by one from Python; conv nets on CPU are the exception,
see `steps_per_call`), checks them for non-finite values, evaluates, and checkpoints through
`genviz_jax.workdir`. The trainer draws nothing: figures of a finished run are the train job's.

The objective (Huang et al. 2019; genviz_jax.objectives) with β(step) from the poison schedule:
  L = (1-β)·mean_{D_t} -log p(y|x) + β·mean_{D_p} -log(1 - p(y|x)),
where D_p (true labels) is a fresh `dataset.poison_sampler` sample each step
(`poison_source="sampler"`) or minibatches of the fixed `dataset.poison` split
(`poison_source="fixed"`), passed through the network together with the train batch (so
BatchNorm sees both, as in the authors' mixed batches). The authors' poison factor f (poison
points per train point in one averaged batch) is β = f / (1 + f).
"""

from __future__ import annotations

import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from genviz_jax import data as data_lib
from genviz_jax import models as models_lib
from genviz_jax import objectives
from genviz_jax import progress as progress_lib
from genviz_jax import trees
from genviz_jax import workdir as workdir_lib
# The config's keys, checks and builders live in train_config; the trainer re-exports them.
from genviz_jax.train_config import (  # noqa: F401
    OPTIMIZERS, POISON_SOURCES, SAM_BASES, State, build_dataset, build_model, default_config,
    has_batch_stats, init_state, is_poisoned, lr_schedule, make_optimizer, model_state_of,
    poison_schedule, validate_config)

# Codes of the non-finite guard, in the order they are checked within a step.
NONFINITE_WHAT = ("loss", "gradient norm", "parameters")


class NonFiniteError(ArithmeticError):
  """A training step produced inf/NaN; the message names the step and the quantity."""


# ---------------------------------------------------------------------------- one step


def device_data(config, dataset: data_lib.Dataset) -> dict:
  """The arrays a train step reads: {"train": batch, "poison": batch or {}} as jnp arrays."""
  out = {"train": {k: jnp.asarray(dataset.train[k]) for k in ("x", "y")}, "poison": {}}
  if is_poisoned(config) and config.poison_source == "fixed":
    if dataset.poison is None:
      raise ValueError(f"poison_source='fixed' but dataset={config.dataset!r} has no poison split")
    out["poison"] = {k: jnp.asarray(dataset.poison[k]) for k in ("x", "y")}
  return out


def _check_step_inputs(config, model: nn.Module, dataset: data_lib.Dataset) -> None:
  """ValueError for batch sizes beyond the data, a missing poison source, lbfgs with BatchNorm."""
  poisoned, source = is_poisoned(config), config.poison_source
  if poisoned and source == "sampler" and dataset.poison_sampler is None:
    raise ValueError(f"poison_source='sampler' but dataset={config.dataset!r} has no "
                     "poison sampler (use poison_source='fixed')")
  n_train = int(dataset.train["y"].shape[0])
  n_poison = int(dataset.poison["y"].shape[0]) if dataset.poison is not None else 0
  for key, n in (("batch_size", n_train), ("poison_batch_size", n_poison)):
    size = int(config[key])
    if size > n and (key == "batch_size" or (poisoned and source == "fixed")):
      raise ValueError(f"{key}={size} exceeds the {n} examples available")
  if config.optimizer == "lbfgs" and has_batch_stats(model, dataset):
    raise ValueError("optimizer='lbfgs' needs a model without BatchNorm "
                     f"(model={config.model!r} has batch_stats)")


def _make_batches(config, dataset: data_lib.Dataset):
  """`batches(state, data) -> (train batch, poison batch or None)` of step state["step"]."""
  poisoned, source = is_poisoned(config), config.poison_source
  bs, pbs, seed = int(config.batch_size), int(config.poison_batch_size), int(config.seed)
  n_train = int(dataset.train["y"].shape[0])
  n_poison = int(dataset.poison["y"].shape[0]) if dataset.poison is not None else 0

  def batches(state, data):
    step = state["step"]
    batch = data["train"]
    if bs:
      idx = data_lib.minibatch_indices(n_train, bs, seed, step)
      batch = jax.tree.map(lambda a: a[idx], batch)
    if not poisoned:
      return batch, None
    if source == "sampler":
      return batch, dataset.poison_sampler(jax.random.fold_in(state["rng"], step))
    if pbs:
      idx = data_lib.minibatch_indices(n_poison, pbs, seed + 1, step)
      return batch, jax.tree.map(lambda a: a[idx], data["poison"])
    return batch, data["poison"]

  return batches


def _train_apply(model: nn.Module, batch_stats):
  """apply_fn(params, x) -> (training-mode logits, new batch_stats) for objectives.step_loss."""
  def apply_fn(params, x):
    if not batch_stats:
      return model.apply({"params": params}, x, train=True), batch_stats
    logits, new_vars = model.apply({"params": params, "batch_stats": batch_stats}, x,
                                   train=True, mutable=["batch_stats"])
    return logits, new_vars["batch_stats"]
  return apply_fn


def _nonfinite_code(loss, grad_norm, params) -> jax.Array:
  """-1 if all finite, else the index into NONFINITE_WHAT of the first non-finite quantity."""
  params_ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(params)]))
  return jnp.where(~jnp.isfinite(loss), 0, jnp.where(
      ~jnp.isfinite(grad_norm), 1, jnp.where(~params_ok, 2, -1))).astype(jnp.int32)


def make_train_step(config, model: nn.Module, dataset: data_lib.Dataset,
                    tx: optax.GradientTransformationExtraArgs):
  """`step_fn(state, data) -> (state, aux)`: one optimizer step (pure, traceable).

  aux = {"objective": the poisoned loss at the pre-step parameters, "grad_norm": its global
  gradient norm (before clipping), "beta", "nonfinite": int32 code, -1 if all finite, else an
  index into NONFINITE_WHAT}.
  """
  _check_step_inputs(config, model, dataset)
  beta_fn, batches = poison_schedule(config), _make_batches(config, dataset)
  # The objective is the same function every step only for full-batch data without fresh
  # poison samples; only then may L-BFGS reuse its line search's value and gradient.
  fixed_objective = not config.batch_size and not (
      is_poisoned(config) and config.poison_source == "sampler")

  def step_fn(state, data):
    batch, poison = batches(state, data)
    beta = beta_fn(state["step"])
    params, stats = state["params"], state["batch_stats"]
    loss_fn = lambda p: objectives.step_loss(_train_apply(model, stats), p, batch, poison, beta)
    value_fn = lambda p: loss_fn(p)[0]
    extra = {}
    if config.optimizer == "lbfgs":
      if fixed_objective:
        loss, grads = optax.value_and_grad_from_state(value_fn)(params, state=state["opt_state"])
      else:
        loss, grads = jax.value_and_grad(value_fn)(params)
      new_stats = stats
      extra = {"value": loss, "grad": grads, "value_fn": value_fn}
    else:
      (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
      if config.optimizer == "sam":
        extra = {"grad_fn": lambda p, _: jax.grad(value_fn)(p)}
    grad_norm = trees.tree_norm(grads)
    updates, opt_state = tx.update(grads, state["opt_state"], params, **extra)
    new_params = optax.apply_updates(params, updates)
    new_state = {"params": new_params, "batch_stats": new_stats, "opt_state": opt_state,
                 "step": state["step"] + 1, "rng": state["rng"]}
    aux = {"objective": loss, "grad_norm": grad_norm, "beta": beta,
           "nonfinite": _nonfinite_code(loss, grad_norm, new_params)}
    return new_state, aux

  return step_fn


# ----------------------------------------------------------------------- loops, evaluation


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


def make_split_evaluator(model: nn.Module, batch_size: int):
  """`evaluate(params, model_state, split) -> {"loss", "accuracy"}`: exact means over the split.

  Each chunk of `batch_size` examples goes through `models.metric_fn` (inference mode: BatchNorm
  running statistics) in one compiled call (a Python loop, not lax.map: convolutions in an XLA
  CPU while loop are ~20x slower); the chunk means are weighted by their sizes and summed in
  float64 on the host, so a ragged last chunk does not bias the mean:
      mean = Σ_c n_c · mean_c / N,
  reported rounded to float32, the precision of mean_c. A split in one chunk gives mean_0
  exactly; over several chunks each float32 mean_c carries its own rounding (an accuracy k/N
  may come out one float32 ulp off).
  """
  batch_metrics = jax.jit(
      lambda params, model_state, batch: models_lib.metric_fn(model, model_state)(params, batch))

  def evaluate(params, model_state, split):
    n = int(split["y"].shape[0])
    sums: dict[str, float] = {}
    for i in range(0, n, batch_size):
      chunk = {k: split[k][i:i + batch_size] for k in ("x", "y")}
      means = jax.device_get(batch_metrics(params, model_state, chunk))
      for name, v in means.items():
        sums[name] = sums.get(name, 0.0) + float(v) * int(chunk["y"].shape[0])
    return {name: float(np.float32(s / n)) for name, s in sums.items()}

  return evaluate


# ------------------------------------------------------------------------------- the driver


class _Snapshots:
  """Parameter snapshots held until the next checkpoint writes them (workdir.RunDir)."""

  def __init__(self, every: int):
    self.every, self.steps, self.trees = every, [], []

  def add(self, step: int, params) -> None:
    self.steps.append(int(step))
    self.trees.append(jax.tree.map(lambda a: np.asarray(a)[None], jax.device_get(params)))

  def add_stacked(self, steps, stacked) -> None:
    self.steps.extend(int(s) for s in steps)
    self.trees.append(jax.device_get(stacked))

  def flush(self, run: workdir_lib.RunDir, step: int) -> None:
    if self.steps:
      run.save_snapshots(step, self.steps, self.trees)
      self.steps, self.trees = [], []


def _raise_if_nonfinite(bad: np.ndarray, run: workdir_lib.RunDir) -> None:
  if bad[0] >= 0:
    raise NonFiniteError(
        f"non-finite {NONFINITE_WHAT[bad[1]]} at step {bad[0]}; last checkpoint: "
        f"{run.latest_step()} (loss, gradient norm and parameters are checked every step)")


def _run_block(loop, state, data, step: int, length: int, config, snaps: _Snapshots,
               run: workdir_lib.RunDir):
  """`length` steps from `step` in compiled calls of steps_per_call; returns (state, aux)."""
  spc, unroll = steps_per_call(config)
  k, auxes, done = snaps.every, [], 0
  while done < length:
    n = min(spc, length - done)
    inner = k if 0 < k < n and n % k == 0 else n
    state, aux, call_snaps, bad = loop(state, data, n // inner, inner, inner != n, unroll)
    _raise_if_nonfinite(np.asarray(bad), run)
    if inner != n:
      snaps.add_stacked(step + inner * np.arange(1, n // inner + 1), call_snaps)
    step, done = step + n, done + n
    if k and inner == n and step % k == 0:
      snaps.add(step, state["params"])
    auxes.append(aux)
  return state, jax.tree.map(lambda *a: np.concatenate(a), *jax.device_get(auxes))


def _metrics_line(step: int, aux: dict, lr) -> dict:
  """The metrics.jsonl line of a block: means over its steps, the last step's values."""
  line = {"step": step, "objective": float(np.mean(aux["objective"])),
          "objective_last": float(aux["objective"][-1]),
          "grad_norm": float(np.mean(aux["grad_norm"])), "beta": float(aux["beta"][-1])}
  if lr is not None:
    line["learning_rate"] = float(lr(step - 1))
  return line


def _evaluations(evaluate, state, splits) -> dict:
  """{"train_loss", "train_accuracy", "test_loss", "test_accuracy"} at the state."""
  out = {}
  for name, split in splits.items():
    m = evaluate(state["params"], model_state_of(state), split)
    out[f"{name}_loss"], out[f"{name}_accuracy"] = float(m["loss"]), float(m["accuracy"])
  return out


def _restore_or_init(config, model, dataset, tx, run: workdir_lib.RunDir):
  """(state, wall seconds so far): the latest readable checkpoint, or the step-0 state."""
  abstract = jax.eval_shape(lambda: init_state(config, model, dataset, tx))
  restored = run.restore(abstract)
  if restored is None:
    return init_state(config, model, dataset, tx), 0.0
  state, meta = restored
  logging.info("resuming %s from step %d", run.workdir, int(state["step"]))
  return state, float(meta.get("wall_time_s", 0.0))


def _train_loop(config, step_fn, state, data, run: workdir_lib.RunDir, evaluate, splits,
                wall0: float):
  """Trains from state["step"] to num_steps; returns (final state, wall seconds, all sessions)."""
  snaps = _Snapshots(int(config.snapshot_every))
  step, num_steps = int(state["step"]), int(config.num_steps)
  if snaps.every and step == 0:
    snaps.add(0, state["params"])
  loop = make_train_loop(step_fn)
  lr = lr_schedule(config) if config.optimizer != "lbfgs" else None
  progress = progress_lib.Progress("train", num_steps)
  wall, t_session = wall0, time.time()
  while step < num_steps:
    length = min(int(config.log_every), num_steps - step)
    state, aux = _run_block(loop, state, data, step, length, config, snaps, run)
    step += length
    line = _metrics_line(step, aux, lr)
    final = step == num_steps
    if final or step % config.eval_every == 0:
      line.update(_evaluations(evaluate, state, splits))
    run.append_metrics(line)
    progress.update(step, extra=f"objective {line['objective']:.4g}")
    if final or step % config.checkpoint_every == 0:
      wall = wall0 + time.time() - t_session  # training time over all sessions
      # Snapshots first: a kill between the two leaves snapshots the resumed run writes again,
      # identically (workdir.snapshots keeps each step once); the other order loses them.
      snaps.flush(run, step)
      run.save(step, state, {"wall_time_s": wall})
  progress.update(step, force=True)
  return state, wall


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains (or resumes) the run of `config` in `workdir`; returns the summary dict.

  Writes config.json, metrics.jsonl, checkpoints/, snapshots/ (if snapshot_every) and
  summary.json (layout: genviz_jax.workdir); draws nothing. A workdir whose run already finished
  is not retrained: its summary is returned as it is. Raises ValueError (bad config, foreign
  workdir) before anything is written, and NonFiniteError when a step produces inf/NaN (the last
  good checkpoint stays).
  """
  validate_config(config)
  dataset = build_dataset(config)
  model = build_model(config, dataset)
  tx = make_optimizer(config)
  step_fn = make_train_step(config, model, dataset, tx)
  data = device_data(config, dataset)
  run = workdir_lib.RunDir.open(workdir, config)  # ValueError for foreign workdirs; nothing written
  summary = run.read_summary()
  if summary is not None and summary.get("steps") == config.num_steps:
    logging.info("%s already finished (%d steps); not retraining", workdir, config.num_steps)
    return summary
  state, wall0 = _restore_or_init(config, model, dataset, tx, run)
  run.start(int(state["step"]))  # writes config.json, trims metrics.jsonl beyond the step
  evaluate = make_split_evaluator(model, int(config.eval_batch_size))
  splits = {s: dataset_split(dataset, s) for s in ("train", "test")}
  state, wall = _train_loop(config, step_fn, state, data, run, evaluate, splits, wall0)
  summary = {
      "dataset": config.dataset, "model": config.model, "optimizer": config.optimizer,
      **_evaluations(evaluate, state, splits),
      "poison_factor": float(config.poison_factor), "num_params": trees.num_params(state["params"]),
      "steps": int(config.num_steps), "seed": int(config.seed), "wall_time_s": round(wall, 3),
      "steps_per_s": round(config.num_steps / wall, 2) if wall > 0 else None,
  }
  run.write_summary(summary)
  return summary


def dataset_split(dataset: data_lib.Dataset, name: str) -> dict:
  """dataset.<name> ("train", "test", "poison") as {"x", "y"} jnp arrays."""
  split = getattr(dataset, name)
  return {"x": jnp.asarray(split["x"]), "y": jnp.asarray(split["y"])}
