"""experiments.train end to end: a real process killed and resumed, reruns, bad input, configs."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from genviz_jax import train
from genviz_jax import workdir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWISSROLL = os.path.join(ROOT, "experiments", "configs", "swissroll.py")
# The poisoned quick swiss roll (fresh poison sample per step, β schedule), long enough that a
# kill lands mid-run: the first checkpoint comes after 500 of 6000 steps.
KILL_STEPS = 6000
KILL_FLAGS = [f"--config={SWISSROLL}:poisoned_quick", f"--config.num_steps={KILL_STEPS}",
              "--config.log_every=100", "--config.checkpoint_every=500",
              "--config.eval_every=1000", "--config.lr_boundaries=(3000,)",
              "--config.snapshot_every=200", "--config.plot=False"]


def _env():
  env = dict(os.environ)
  env.setdefault("JAX_PLATFORMS", "cpu")  # as conftest: CPU unless the caller chose
  return env


def run_train(args, **kw):
  env = _env()
  return subprocess.run([sys.executable, "-m", "experiments.train", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600, **kw)


def listing(d):
  return sorted((os.path.relpath(os.path.join(r, f), d), os.path.getmtime(os.path.join(r, f)))
                for r, _, fs in os.walk(d) for f in fs)


def saved_steps(d):
  ck = os.path.join(d, "checkpoints")
  return sorted(int(n) for n in os.listdir(ck) if n.isdigit()) if os.path.isdir(ck) else []


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
  """(resumed workdir, uninterrupted workdir): the first was SIGKILLed mid-run, then rerun."""
  base = tmp_path_factory.mktemp("kill")
  killed, whole = str(base / "killed"), str(base / "whole")
  env = _env()
  proc = subprocess.Popen([sys.executable, "-m", "experiments.train", *KILL_FLAGS,
                           f"--workdir={killed}"], cwd=ROOT, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + 300
  # Kill between checkpoints: after the first one, while later steps are being computed.
  while time.time() < deadline and proc.poll() is None:
    if saved_steps(killed):
      break
    time.sleep(0.02)
  assert proc.poll() is None, "the run ended before it could be killed; raise num_steps"
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  at_kill = saved_steps(killed)
  assert not os.path.exists(os.path.join(killed, "summary.json"))
  resumed = run_train([*KILL_FLAGS, f"--workdir={killed}"])
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  assert "resuming" in resumed.stderr
  # The reference: the same command, uninterrupted.
  full = run_train([*KILL_FLAGS, f"--workdir={whole}"])
  assert full.returncode == 0, full.stderr[-2000:]
  return killed, whole, at_kill


@pytest.mark.slow
def test_killed_and_resumed_run_ends_bit_identical(killed_and_resumed):
  killed, whole, at_kill = killed_and_resumed
  assert at_kill and max(at_kill) < KILL_STEPS
  a, b = workdir.load(killed), workdir.load(whole)
  assert a.step == b.step == KILL_STEPS
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    assert np.asarray(x).tobytes() == np.asarray(y).tobytes()
  # metrics past the kill were recomputed, not duplicated
  ma = open(os.path.join(killed, "metrics.jsonl")).read()
  assert ma == open(os.path.join(whole, "metrics.jsonl")).read()
  sa, sb = (json.load(open(os.path.join(d, "summary.json"))) for d in (killed, whole))
  for k in ("train_accuracy", "test_accuracy", "train_loss", "test_loss", "num_params", "steps",
            "seed", "poison_factor"):
    assert sa[k] == sb[k], k  # same seed, same command: identical numbers
  sa_steps, sa_params = workdir.snapshots(killed)
  sb_steps, sb_params = workdir.snapshots(whole)
  assert sa_steps.tolist() == sb_steps.tolist() == list(range(0, KILL_STEPS + 1, 200))
  for x, y in zip(jax.tree.leaves(sa_params), jax.tree.leaves(sb_params)):
    np.testing.assert_array_equal(x, y)


def test_rerunning_a_finished_workdir_does_not_retrain(killed_and_resumed):
  _, whole, _ = killed_and_resumed
  before = listing(whole)
  summary = open(os.path.join(whole, "summary.json")).read()
  again = run_train([*KILL_FLAGS, f"--workdir={whole}"])
  assert again.returncode == 0, again.stderr[-2000:]
  assert "already finished" in again.stderr
  assert listing(whole) == before
  assert open(os.path.join(whole, "summary.json")).read() == summary


def _one_line_error(result, *fragments):
  assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
  lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")]
  assert len(lines) == 1, result.stderr[-2000:]
  for f in fragments:
    assert f in lines[0], lines[0]


def test_bad_input_exits_2_and_leaves_the_workdir_alone(killed_and_resumed, tmp_path):
  _, whole, _ = killed_and_resumed
  before = listing(whole)
  r = run_train([*KILL_FLAGS, f"--workdir={whole}", "--config.poison_factor=1.5"])
  _one_line_error(r, "poison_factor=1.5", "[0, 1]")
  mine = tmp_path / "mine"
  mine.mkdir()
  (mine / "notes.txt").write_text("keep me")
  r = run_train([f"--config={SWISSROLL}:quick", f"--workdir={mine}",
                 "--config.optimizer=adadelta"])
  _one_line_error(r, "optimizer='adadelta'", "sgd, momentum")
  r = run_train([f"--config={SWISSROLL}:quick", f"--workdir={mine}"])
  _one_line_error(r, str(mine), "not empty and has no config.json")
  assert listing(whole) == before
  assert sorted(os.listdir(mine)) == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"


@pytest.mark.slow
@pytest.mark.parametrize("flags,fragments", [
    (["--config.dataset=imagenet"], ["imagenet", "allowed"]),
    (["--config.model=transformer"], ["transformer", "allowed"]),
    (["--config.num_steps=0"], ["num_steps=0", "positive integer"]),
    (["--config.batch_size=-1"], ["batch_size=-1"]),
    (["--config.poison_warmup_factor=-0.5"], ["poison_warmup_factor=-0.5", "[0, 1]"]),
    (["--config.dataset=mnist", "--config.dataset_kwargs={}", "--config.data_dir=/nonexistent"],
     ["data_dir='/nonexistent' does not exist"]),
])
def test_more_bad_input(tmp_path, flags, fragments):
  r = run_train([f"--config={SWISSROLL}:quick", f"--workdir={tmp_path / 'w'}", *flags])
  _one_line_error(r, *fragments)
  assert not os.path.exists(tmp_path / "w")


def _load_config(path, variant):
  import importlib.util
  spec = importlib.util.spec_from_file_location("cfg", os.path.join(ROOT, path))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(variant)


def test_train_job_draws_the_boundary_of_2d_runs_once(tmp_path):
  from genviz_jax.configs import swissroll
  from genviz_jax.jobs import train as train_job
  c = swissroll.get_config("quick")
  c.num_steps, c.lr_boundaries = 200, ()
  c.log_every = c.eval_every = c.checkpoint_every = 100
  s = train_job.run(c, str(tmp_path))
  png = tmp_path / "decision_boundary.png"
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  before = listing(str(tmp_path))
  assert train_job.run(c, str(tmp_path)) == s  # finished: nothing retrained or redrawn
  assert listing(str(tmp_path)) == before


def test_digits_poisoned_quick_trains_with_fixed_poison_minibatches(tmp_path):
  from genviz_jax.jobs import train as train_job
  c = _load_config("experiments/configs/digits.py", "poisoned_quick")
  s = train_job.run(c, str(tmp_path))
  assert s["steps"] == 40 and s["poison_factor"] == 0.5
  assert 0 <= s["test_accuracy"] <= 1 and np.isfinite(s["train_loss"])
  assert not os.path.exists(tmp_path / "decision_boundary.png")  # not 2-D data


# svhn covers BatchNorm and the `extra` poison split; VGG (cifar10) adds only compile time on a
# 2-core CPU, so it runs with -m slow.
@pytest.mark.parametrize("path,variant", [
    ("experiments/configs/mnist.py", "quick"),
    ("experiments/configs/svhn.py", "quick"),
    pytest.param("experiments/configs/cifar10.py", "quick", marks=pytest.mark.slow),
])
def test_image_configs_run_on_mock_tfds(tmp_path, path, variant):
  tfds = pytest.importorskip("tensorflow_datasets")
  c = _load_config(path, variant)
  c.data_dir = str(tmp_path / "data")
  os.makedirs(c.data_dir)
  with tfds.testing.mock_data(num_examples=64, policy=tfds.testing.MockPolicy.USE_CODE):
    s = train.train_and_evaluate(c, str(tmp_path / "run"))
    t = workdir.load(str(tmp_path / "run"))
  assert s["steps"] == c.num_steps and np.isfinite(s["train_loss"])
  if c.model.startswith(("resnet", "vgg")):
    assert set(t.model_state) == {"batch_stats"}  # BatchNorm statistics were trained and saved
    m = t.metric_fn(t.params, {k: v for k, v in t.dataset.test.items()})
    np.testing.assert_allclose(m["accuracy"], s["test_accuracy"], rtol=1e-6)
