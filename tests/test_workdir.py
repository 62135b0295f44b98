"""Workdirs: a trained run loads back exactly; foreign or mismatched workdirs are refused."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genviz_jax import train
from genviz_jax import workdir

import helpers


def tiny_config(**overrides):
  """The shared tiny run, poisoned, with snapshots and no figure."""
  return helpers.tiny_config(**{"snapshot_every": 5, "poison_factor": 0.3, "plot": False,
                                **overrides})


def listing(d):
  return sorted((os.path.relpath(os.path.join(r, f), d), os.path.getmtime(os.path.join(r, f)))
                for r, _, fs in os.walk(d) for f in fs)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("run"))
  c = tiny_config()
  summary = train.train_and_evaluate(c, d)
  return c, d, summary


def test_load_gives_the_final_parameters_and_metrics_of_the_summary(run):
  c, d, summary = run
  t = workdir.load(d)
  assert t.step == 20 and t.summary == summary and t.model_state == {}
  assert t.config.model_kwargs.widths == [8, 8]
  for split in ("train", "test"):
    m = t.metric_fn(t.params, {k: jnp.asarray(v) for k, v in getattr(t.dataset, split).items()})
    np.testing.assert_allclose(m["accuracy"], summary[f"{split}_accuracy"], rtol=1e-6)
    np.testing.assert_allclose(m["loss"], summary[f"{split}_loss"], rtol=1e-5)
  lines = [json.loads(x) for x in open(os.path.join(d, workdir.METRICS))]
  assert [x["step"] for x in lines] == [10, 20]
  assert summary["steps"] == 20 and summary["num_params"] == 2 * 8 + 8 + 8 * 8 + 8 + 8 * 2 + 2


def test_snapshots_hold_every_kth_iterate_and_match_the_checkpoints(run):
  c, d, _ = run
  steps, params = workdir.snapshots(d)
  assert steps.tolist() == [0, 5, 10, 15, 20]
  ds = train.build_dataset(c)
  model = train.build_model(c, ds)
  init = train.init_state(c, model, ds, train.make_optimizer(c))["params"]
  at10 = workdir.load(d, step=10).params
  final = workdir.load(d).params
  for s, p0, p10, p20 in zip(*(jax.tree.leaves(x) for x in (params, init, at10, final))):
    np.testing.assert_array_equal(s[0], p0)
    np.testing.assert_array_equal(s[2], p10)
    np.testing.assert_array_equal(s[4], p20)


def test_finished_workdir_is_not_retrained(run):
  c, d, summary = run
  before = listing(d)
  again = train.train_and_evaluate(tiny_config(), d)
  assert again == summary
  assert listing(d) == before


def test_missing_and_foreign_workdirs(tmp_path):
  with pytest.raises(ValueError, match="does not exist"):
    workdir.load(str(tmp_path / "nope"))
  (tmp_path / "notes.txt").write_text("mine")
  with pytest.raises(ValueError, match="has no config.json"):
    workdir.load(str(tmp_path))
  with pytest.raises(ValueError, match="is not empty and has no config.json"):
    workdir.RunDir.open(str(tmp_path), tiny_config())
  empty = tmp_path / "run"
  empty.mkdir()
  (empty / "config.json").write_text(tiny_config().to_json())
  with pytest.raises(ValueError, match="has no checkpoint"):
    workdir.load(str(empty))
  with pytest.raises(ValueError, match="no parameter snapshots"):
    workdir.snapshots(str(empty))


def test_unsaved_step_and_checkpoint_of_another_model(run, tmp_path):
  c, d, _ = run
  with pytest.raises(ValueError, match="step=7 has no checkpoint.*saved steps: 10, 20"):
    workdir.load(d, step=7)
  # A run directory whose config says a different width than its checkpoints hold.
  other = tmp_path / "other"
  os.system(f"cp -r {d} {other}")
  cfg = json.loads((other / "config.json").read_text())
  cfg["model_kwargs"]["widths"] = [8, 9]
  (other / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(ValueError, match="does not match the config's model") as e:
    workdir.load(str(other))
  assert "\n" not in str(e.value)


def test_a_different_config_is_refused_and_nothing_is_touched(run):
  c, d, _ = run
  before = listing(d)
  with pytest.raises(ValueError, match=r"different config \(model_kwargs"):
    train.train_and_evaluate(tiny_config(model_kwargs={"widths": (8, 9)}), d)
  with pytest.raises(ValueError, match=r"different config \(poison_factor; poison_factor: 0.3"):
    workdir.RunDir.open(d, tiny_config(poison_factor=0.4))
  assert listing(d) == before


def test_good_vs_bad_figure_titles_carry_the_accuracies(run):
  from genviz_jax.plots import decision
  _, d, summary = run
  t = workdir.load(d)
  fig = decision.good_vs_bad_figure(t, t, labels=("good", "bad"))
  titles = [ax.get_title() for ax in fig.axes]
  want = (f"train {100 * summary['train_accuracy']:.1f}%, "
          f"test {100 * summary['test_accuracy']:.1f}%")
  assert titles == [f"good: {want}", f"bad: {want}"]
  # the background is the model's own prediction on the grid
  grid = decision.class_grid(t.model, t.params, t.model_state, (-1, 1, -1, 1), resolution=4)
  pts = np.stack(np.meshgrid(np.linspace(-1, 1, 4), np.linspace(-1, 1, 4)), -1).reshape(-1, 2)
  logits = t.model.apply({"params": t.params}, jnp.asarray(pts, jnp.float32))
  np.testing.assert_array_equal(grid.ravel(), np.argmax(logits, -1))


def test_divergence_stops_with_step_and_quantity_and_keeps_the_last_checkpoint(tmp_path):
  # Adam moves each weight by about the learning rate: 1e-2 for 10 steps, then 1e30 (overflow).
  c = tiny_config(optimizer="adam", learning_rate=0.01, snapshot_every=0,
                  lr_boundaries=(10,), lr_decay=1e32)
  with pytest.raises(train.NonFiniteError,
                     match=r"non-finite (loss|gradient norm|parameters) at step 1\d; last "
                           r"checkpoint: 10"):
    train.train_and_evaluate(c, str(tmp_path))
  assert workdir.load(str(tmp_path)).step == 10
  assert not os.path.exists(tmp_path / workdir.SUMMARY)


def test_half_written_snapshot_files_are_ignored(run, tmp_path):
  """A kill during a snapshot write leaves a temporary file; loading skips it."""
  import shutil
  _, d, _ = run
  copy = str(tmp_path / "copy")
  shutil.copytree(d, copy)
  steps, params = workdir.snapshots(copy)
  for name in ("params_000000025.npz.tmp123", "params_000000025.npz.tmp123.npz"):
    with open(os.path.join(copy, workdir.SNAPSHOTS, name), "wb") as f:
      f.write(b"PK\x03\x04 truncated")
  steps2, params2 = workdir.snapshots(copy)
  assert steps2.tolist() == steps.tolist()
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(params2)):
    np.testing.assert_array_equal(a, b)
