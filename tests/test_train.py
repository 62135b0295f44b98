"""Trainer: steps against hand-computed updates, scan vs step-by-step, schedules, guards."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from genviz_jax import data as data_lib
from genviz_jax import objectives
from genviz_jax import train
from helpers import tiny_config


def build(config):
  train.validate_config(config)
  ds = train.build_dataset(config)
  model = train.build_model(config, ds)
  tx = train.make_optimizer(config)
  step_fn = train.make_train_step(config, model, ds, tx)
  state = train.init_state(config, model, ds, tx)
  return ds, model, tx, step_fn, state, train.device_data(config, ds)


def test_sgd_step_is_the_hand_computed_update_with_decay_and_clipping():
  c = tiny_config(optimizer="sgd", learning_rate=0.1, weight_decay=0.01, grad_clip=0.5)
  ds, model, _, step_fn, state, data = build(c)
  p0 = state["params"]

  def clean_loss(p):
    logits = model.apply({"params": p}, jnp.asarray(ds.train["x"]))
    return jnp.mean(objectives.cross_entropy(logits, ds.train["y"]))

  g = jax.grad(clean_loss)(p0)
  gn = optax.global_norm(g)
  scale = jnp.minimum(1.0, 0.5 / gn)  # clip first, then the L2 term is added
  want = jax.tree.map(lambda p, g: p - 0.1 * (scale * g + 0.01 * p), p0, g)
  new, aux = jax.jit(step_fn)(state, data)
  np.testing.assert_allclose(aux["grad_norm"], gn, rtol=1e-5)
  np.testing.assert_allclose(aux["objective"], clean_loss(p0), rtol=1e-5)
  for a, b in zip(jax.tree.leaves(new["params"]), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  assert int(new["step"]) == 1


def test_poisoned_objective_uses_a_fresh_sample_keyed_by_step_and_the_beta_schedule():
  c = tiny_config(poison_factor=0.5, poison_warmup_factor=0.2, poison_warmup_steps=3,
                  poison_source="sampler")
  ds, model, _, step_fn, state, data = build(c)
  f = jax.jit(step_fn)
  for step in range(5):
    p = state["params"]
    poison = ds.poison_sampler(jax.random.fold_in(state["rng"], step))
    beta = 0.2 if step < 3 else 0.5
    lt = model.apply({"params": p}, jnp.asarray(ds.train["x"]))
    lp = model.apply({"params": p}, poison["x"])
    want = ((1 - beta) * jnp.mean(objectives.cross_entropy(lt, ds.train["y"])) +
            beta * jnp.mean(objectives.complement_cross_entropy(lp, poison["y"])))
    state, aux = f(state, data)
    np.testing.assert_allclose(aux["beta"], beta)
    np.testing.assert_allclose(aux["objective"], want, rtol=1e-5)
  # a fresh sample each step: two steps see different poison points
  a = ds.poison_sampler(jax.random.fold_in(state["rng"], 0))["x"]
  b = ds.poison_sampler(jax.random.fold_in(state["rng"], 1))["x"]
  assert not np.allclose(a, b)


def test_scan_loop_equals_step_by_step_and_does_not_depend_on_grouping():
  c = tiny_config(batch_size=8, poison_factor=0.3, poison_source="fixed", poison_batch_size=4)
  _, _, _, step_fn, state, data = build(c)
  f = jax.jit(step_fn)
  ref, objs = state, []
  for _ in range(12):
    ref, aux = f(ref, data)
    objs.append(float(aux["objective"]))
  loop = train.make_train_loop(step_fn)
  copy = lambda s: jax.tree.map(jnp.array, s)
  s1, aux1, _, bad = loop(copy(state), data, 1, 12, False)
  s2, _, snaps, _ = loop(copy(state), data, 3, 4, True)
  s3, aux3, snaps3, _ = loop(copy(state), data, 3, 4, True, True)  # unrolled (CPU conv nets)
  assert list(np.asarray(bad)) == [-1, -1]
  np.testing.assert_allclose(aux1["objective"], objs, rtol=1e-5)
  np.testing.assert_allclose(aux3["objective"], objs, rtol=1e-5)
  for a, b, c_, d in zip(*(jax.tree.leaves(s["params"]) for s in (s1, s2, s3, ref))):
    np.testing.assert_allclose(a, d, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c_, d, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(a, b)  # the same steps, grouped differently: same bits
  # snapshots after steps 4, 8, 12; the last one is the final state
  assert jax.tree.leaves(snaps)[0].shape[0] == jax.tree.leaves(snaps3)[0].shape[0] == 3
  for a, b in zip(jax.tree.leaves(snaps), jax.tree.leaves(s2["params"])):
    np.testing.assert_array_equal(a[-1], b)


def test_minibatches_are_a_function_of_seed_and_step():
  c = tiny_config(batch_size=8)
  ds, model, _, step_fn, state, data = build(c)
  idx = data_lib.minibatch_indices(32, 8, c.seed, 5)
  # epoch 1 (steps 4..7) is a permutation: its four batches cover every example once
  ep = np.concatenate([np.asarray(data_lib.minibatch_indices(32, 8, c.seed, s)) for s in range(4, 8)])
  assert sorted(ep.tolist()) == list(range(32))
  np.testing.assert_array_equal(idx, data_lib.minibatch_indices(32, 8, c.seed, 5))
  s5 = dict(state, step=jnp.int32(5))
  _, aux = jax.jit(step_fn)(s5, data)
  logits = model.apply({"params": state["params"]}, jnp.asarray(ds.train["x"])[idx])
  want = jnp.mean(objectives.cross_entropy(logits, jnp.asarray(ds.train["y"])[idx]))
  np.testing.assert_allclose(aux["objective"], want, rtol=1e-5)


# The unusual ones (line search, two-gradient SAM, decoupled decay) run by default; the
# plain first-order ones with -m slow.
_DEFAULT_OPTIMIZERS = ("sgd", "adam", "adamw", "lbfgs", "sam")


@pytest.mark.parametrize("name", [o if o in _DEFAULT_OPTIMIZERS else
                                  pytest.param(o, marks=pytest.mark.slow)
                                  for o in train.OPTIMIZERS])
def test_every_optimizer_lowers_the_loss(name):
  lr = {"sgd": 0.5, "momentum": 0.1, "nesterov": 0.1, "adagrad": 0.1, "sam": 0.1}.get(name, 0.01)
  c = tiny_config(optimizer=name, learning_rate=lr, sam_base="momentum")
  _, _, _, step_fn, state, data = build(c)
  loop = train.make_train_loop(step_fn)
  _, aux, _, bad = loop(state, data, 1, 30, False)
  obj = np.asarray(aux["objective"])
  assert int(bad[0]) == -1
  assert obj[-1] < 0.9 * obj[0], (name, obj[0], obj[-1])


def test_lr_schedule_steps_down_at_boundaries():
  c = tiny_config(learning_rate=0.5, lr_boundaries=(10, 20), lr_decay=0.1)
  sched = train.lr_schedule(c)
  np.testing.assert_allclose([sched(0), sched(9), sched(10), sched(19), sched(20)],
                             [0.5, 0.5, 0.05, 0.05, 0.005], rtol=1e-6)


def test_nonfinite_guard_names_the_step_and_quantity():
  c = tiny_config(optimizer="sgd", learning_rate=1e30)
  _, _, _, step_fn, state, data = build(c)
  loop = train.make_train_loop(step_fn)
  copy = lambda s: jax.tree.map(jnp.array, s)
  _, _, _, bad = loop(copy(state), data, 1, 10, False)
  step, what = (int(v) for v in bad)
  assert 0 <= step < 10 and train.NONFINITE_WHAT[what] in ("loss", "gradient norm", "parameters")
  # NaN inputs make the loss itself non-finite at the first step
  data_nan = {"train": {"x": data["train"]["x"].at[0, 0].set(jnp.nan), "y": data["train"]["y"]},
              "poison": {}}
  _, _, _, bad = loop(copy(state), data_nan, 1, 10, False)
  assert [int(v) for v in bad] == [0, 0]


@pytest.mark.parametrize("key,value,match", [
    ("optimizer", "adadelta", "optimizer='adadelta' is not one of: sgd, momentum"),
    ("poison_factor", 1.5, r"poison_factor=1.5 is outside \[0, 1\]"),
    ("poison_warmup_factor", -0.1, r"poison_warmup_factor=-0.1 is outside \[0, 1\]"),
    ("num_steps", 0, "num_steps=0 must be a positive integer"),
    ("batch_size", -4, "batch_size=-4 must be an integer >= 0"),
    ("learning_rate", 0.0, "learning_rate=0.0 must be a finite number > 0"),
    ("checkpoint_every", 15, "checkpoint_every=15 must be a multiple of log_every=10"),
    ("poison_source", "disk", "poison_source='disk' is not one of: sampler, fixed"),
])
def test_bad_config_is_a_one_line_value_error(key, value, match):
  with pytest.raises(ValueError, match=match) as e:
    train.validate_config(tiny_config(**{key: value}))
  assert "\n" not in str(e.value)


def test_bad_names_and_sizes_in_building():
  with pytest.raises(ValueError, match="nope"):
    train.build_dataset(tiny_config(dataset="nope"))
  c = tiny_config(model="nope")
  with pytest.raises(ValueError, match="nope"):
    train.build_model(c, train.build_dataset(c))
  c = tiny_config(batch_size=64)
  ds = train.build_dataset(c)
  with pytest.raises(ValueError, match="batch_size=64 exceeds the 32 examples"):
    train.make_train_step(c, train.build_model(c, ds), ds, train.make_optimizer(c))
  c = tiny_config(dataset="circles", poison_factor=0.5)
  c.dataset_kwargs = {}
  ds = train.build_dataset(c)
  with pytest.raises(ValueError, match="no poison sampler"):
    train.make_train_step(c, train.build_model(c, ds), ds, train.make_optimizer(c))


def test_split_evaluation_in_ragged_chunks_is_the_exact_mean():
  c = tiny_config()
  ds, model, _, _, state, _ = build(c)
  split = train.dataset_split(ds, "train")  # 32 examples: chunks of 7 leave a ragged 4
  got = train.make_split_evaluator(model, 7)(state["params"], {}, split)
  logits = np.asarray(model.apply({"params": state["params"]}, split["x"]), np.float64)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  y = np.asarray(split["y"])
  np.testing.assert_allclose(got["loss"], -np.mean(logp[np.arange(32), y]), rtol=1e-6)
  np.testing.assert_allclose(got["accuracy"], np.mean(logits.argmax(-1) == y), rtol=3e-7)
  whole = train.make_split_evaluator(model, 32)(state["params"], {}, split)  # one chunk: exact
  assert whole["accuracy"] == np.mean(logits.argmax(-1) == y)
