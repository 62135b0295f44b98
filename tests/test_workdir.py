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
  from genviz_jax import boundary
  from genviz_jax.plots import decision
  _, d, summary = run
  t = workdir.load(d)
  panels = [boundary.trained_panel(t, "good", resolution=8),
            boundary.trained_panel(t, "bad", resolution=8)]
  fig = decision.good_vs_bad_figure(panels)
  titles = [ax.get_title() for ax in fig.axes]
  want = (f"train {100 * summary['train_accuracy']:.1f}%, "
          f"test {100 * summary['test_accuracy']:.1f}%")
  assert titles == [f"good: {want}", f"bad: {want}"]
  # the background is the model's own prediction on the grid over the data's extent
  x0, x1, y0, y1 = panels[0]["extent"]
  pts = np.stack(np.meshgrid(np.linspace(x0, x1, 8), np.linspace(y0, y1, 8)), -1).reshape(-1, 2)
  logits = t.model.apply({"params": t.params}, jnp.asarray(pts, jnp.float32))
  np.testing.assert_array_equal(panels[0]["grid"].ravel(), np.argmax(logits, -1))
  np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), panels[0]["grid"])


def _break_step(d, step):
  """Deletes the array data of checkpoint `step` (its metadata stays): an unreadable step."""
  import shutil
  state = os.path.join(d, workdir.CHECKPOINTS, str(step), "state")
  gone = [os.path.join(r, x) for r, dirs, _ in os.walk(state) for x in dirs if x == "d"]
  assert gone, os.listdir(state)
  for g in gone:
    shutil.rmtree(g)


def _copy(run, tmp_path, name="copy"):
  import shutil
  copy = str(tmp_path / name)
  shutil.copytree(run[1], copy)
  return copy


def test_unreadable_latest_checkpoint_falls_back_with_a_warning(run, tmp_path, caplog):
  copy = _copy(run, tmp_path)
  _break_step(copy, 20)
  with caplog.at_level("WARNING"):
    t = workdir.load(copy)
  assert t.step == 10
  assert any("checkpoint 20" in r.getMessage() and "unreadable" in r.getMessage() and
             "step 10, the last readable one" in r.getMessage() for r in caplog.records)
  for a, b in zip(jax.tree.leaves(t.params), jax.tree.leaves(workdir.load(run[1], step=10).params)):
    np.testing.assert_array_equal(a, b)


def test_unreadable_requested_step_names_the_readable_ones(run, tmp_path):
  copy = _copy(run, tmp_path)
  _break_step(copy, 20)
  with pytest.raises(ValueError, match=r"checkpoint step=20 in .* is unreadable \(.*\); "
                                       r"readable steps: 10$") as e:
    workdir.load(copy, step=20)
  assert "\n" not in str(e.value)
  _break_step(copy, 10)
  with pytest.raises(ValueError, match=r"workdir=.*copy' has no readable checkpoint") as e:
    workdir.load(copy)
  assert "\n" not in str(e.value)


def test_training_resumes_from_the_last_readable_checkpoint(run, tmp_path):
  c, d, summary = run
  copy = _copy(run, tmp_path)
  _break_step(copy, 20)
  os.remove(os.path.join(copy, workdir.SUMMARY))
  again = train.train_and_evaluate(tiny_config(), copy)
  # steps 10..20 run again from checkpoint 10: the same parameters, bit for bit
  for a, b in zip(jax.tree.leaves(workdir.load(copy).params), jax.tree.leaves(
      workdir.load(d).params)):
    np.testing.assert_array_equal(a, b)
  assert {k: again[k] for k in ("train_accuracy", "test_loss", "steps")} == {
      k: summary[k] for k in ("train_accuracy", "test_loss", "steps")}


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
