"""Train many small full-batch models at once: one vmapped, scan-compiled loop over R runs.

The paper's sweeps are many tiny nets on the same data (the minefield: 200 bad minima trained from
iterates of one good run; the generalization-gap sweep: 20 poison factors x seeds). Dispatching
them one by one from Python costs a compile and a loop each; here R runs share one compiled
`lax.scan` of `vmap(step)`, each with its own parameters, optimizer state, poison factor β_r and
poison-sample stream.

Every run minimizes the poisoned objective of Huang et al. (2019), `objectives.step_loss`,
  (1-β_r)·mean_{D_t} -log p(y|x) + β_r·mean_{D_p} -log(1-p(y|x)),
with D_p either one fixed poison batch shared by all runs or a fresh `poison_sampler(key)` sample
every step (key = fold_in(keys[r], step)). Step k is a pure function of (params_r, keys[r], k), so
results do not depend on `chunk`. (The authors' poison factor f, poison points per train point in
one averaged batch, is β = f / (1 + f).)

`evaluate_many` evaluates the R trained parameter sets through the evaluation engine
(genviz_jax.engine): R parameter points, one `models.metric_fn` definition of loss and accuracy.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from genviz_jax import engine
from genviz_jax import models as models_lib
from genviz_jax import objectives

PyTree = Any


def stack(trees: list[PyTree]) -> PyTree:
  """[tree_1, ..., tree_R] -> one tree with leading axis R."""
  return jax.tree.map(lambda *a: jnp.stack(a), *trees)


def init_many(model: nn.Module, seeds, input_shape) -> PyTree:
  """Independent "params" for each seed, stacked (R, ...)."""
  x = jnp.zeros((1,) + tuple(input_shape), jnp.float32)
  return jax.vmap(lambda k: model.init(k, x, train=False)["params"])(
      jnp.stack([jax.random.PRNGKey(int(s)) for s in seeds]))


def train_many(model: nn.Module, tx: optax.GradientTransformation, params: PyTree, train: dict, *,
               num_steps: int, betas=None, warmup_betas=None, warmup_steps: int = 0,
               poison: dict | None = None, poison_sampler: Callable | None = None, keys=None,
               snapshot_every: int = 0, chunk: int = 1000,
               on_chunk: Callable[[int], None] | None = None):
  """Trains R runs (params leaves (R, ...)) for num_steps full-batch steps.

  betas: (R,) β after warm-up (default 0: clean); warmup_betas (R,) for steps < warmup_steps.
  Returns (params (R, ...), snapshots) where snapshots is None or a list of (step, params (R, ...))
  taken at step 0 and every `snapshot_every` steps. `tx` must not need extra update arguments
  (not lbfgs / sam: use the single-run trainer for those).
  """
  if num_steps <= 0:
    raise ValueError(f"num_steps={num_steps!r} must be a positive integer")
  r = jax.tree.leaves(params)[0].shape[0]
  betas = jnp.zeros(r) if betas is None else jnp.asarray(betas, jnp.float32).reshape(r)
  warm = betas if warmup_betas is None else jnp.asarray(warmup_betas, jnp.float32).reshape(r)
  poisoned = bool(np.any(np.asarray(betas) > 0) or np.any(np.asarray(warm) > 0))
  if poisoned and poison is None and poison_sampler is None:
    raise ValueError("betas > 0 need a fixed `poison` batch or a `poison_sampler`")
  keys = (jax.random.split(jax.random.PRNGKey(0), r) if keys is None else keys)
  train = {k: jnp.asarray(train[k]) for k in ("x", "y")}

  apply_fn = lambda p, x: (model.apply({"params": p}, x, train=True), None)

  def loss_fn(p, key, step, beta):
    if not poisoned:
      return objectives.step_loss(apply_fn, p, train)[0]
    pb = poison if poison_sampler is None else poison_sampler(jax.random.fold_in(key, step))
    return objectives.step_loss(apply_fn, p, train, pb, beta)[0]

  def one_step(p, opt, key, step, beta_final, beta_warm):
    beta = jnp.where(step < warmup_steps, beta_warm, beta_final)
    g = jax.grad(loss_fn)(p, key, step, beta)
    updates, opt = tx.update(g, opt, p)
    return optax.apply_updates(p, updates), opt

  vstep = jax.vmap(one_step, in_axes=(0, 0, 0, None, 0, 0))

  @jax.jit
  def run(p, opt, step0, length_marker):
    def body(carry, i):
      p, opt = carry
      p, opt = vstep(p, opt, keys, step0 + i, betas, warm)
      return (p, opt), None
    (p, opt), _ = jax.lax.scan(body, (p, opt), jnp.arange(length_marker.shape[0]))
    return p, opt

  opt = jax.vmap(tx.init)(params)
  snaps = [(0, jax.device_get(params))] if snapshot_every else None
  block = snapshot_every if snapshot_every else chunk
  step = 0
  while step < num_steps:
    length = min(block, num_steps - step)
    params, opt = run(params, opt, jnp.int32(step), jnp.zeros((length,)))
    step += length
    if snapshot_every and step % snapshot_every == 0:
      snaps.append((step, jax.device_get(params)))
    if on_chunk is not None:
      on_chunk(step)
  return params, snaps


def evaluate_many(model: nn.Module, params: PyTree, split: dict, *, point_batch: int | None = None,
                  data_batch: int | None = None, mesh=None) -> dict[str, np.ndarray]:
  """{"loss", "accuracy"}: (R,) means over the split for each run (inference mode).

  The R runs (params leaves (R, ...)) are R points of the engine: point r = 0 + params[r]
  (a zero centre, so each point is params[r] bit for bit), with `models.metric_fn(model)`;
  data_batch chunks the split with exact size-weighted means, mesh shards the runs.
  """
  centre, delta, r = engine.stacked_points(params)
  data = {k: jnp.asarray(split[k]) for k in ("x", "y")}
  out = engine.evaluate_points(models_lib.metric_fn(model), centre, delta, r, data, point_batch=point_batch, data_batch=data_batch, mesh=mesh)
  return {"loss": np.asarray(out["loss"]), "accuracy": np.asarray(out["accuracy"])}
