"""experiments.basin and experiments.landscape end to end on tiny trained workdirs.

The workdirs are trained in-process once per module (a few hundred full-batch steps of the
swiss-roll MLP); the binaries run as real processes, one of them killed mid-sweep.
"""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(path, seed):
  from genviz_jax.configs import swissroll
  from genviz_jax import train
  c = swissroll.get_config("quick")
  c.num_steps = 200
  c.log_every = c.eval_every = c.checkpoint_every = 100
  c.lr_boundaries = ()
  c.plot = False
  c.seed = seed
  train.train_and_evaluate(c, path)
  return path


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
  base = tmp_path_factory.mktemp("runs")
  return {"good": _train(str(base / "good"), 0)}


@pytest.fixture(scope="module")
def other_workdir(tmp_path_factory):
  return _train(str(tmp_path_factory.mktemp("runs") / "other"), 1)


def _env():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  return env


def _run(args, **kw):
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=_env(), capture_output=True,
                        text=True, timeout=600, **kw)


def _listing(d):
  return {os.path.join(r, f): os.stat(os.path.join(r, f)).st_mtime_ns
          for r, _, fs in os.walk(d) for f in fs}


_SWEEP = ["--config=experiments/configs/basin.py", "--config.num_directions=512",
          "--config.chunk_size=4", "--config.num_bootstrap=100", "--config.threshold=0.5"]


@pytest.mark.slow
def test_killed_basin_sweep_resumes_to_identical_radii(workdirs, tmp_path):
  from genviz_jax import basin, workdir as workdir_lib
  outdir = str(tmp_path / "basin")
  before = _listing(workdirs["good"])
  cmd = [sys.executable, "-m", "experiments.basin", f"--workdir={workdirs['good']}",
         f"--outdir={outdir}", *_SWEEP]
  proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  chunks = os.path.join(outdir, "chunks")
  store = basin.ChunkStore(chunks)
  deadline = time.time() + 300
  while store.num_chunks() < 2 and proc.poll() is None and time.time() < deadline:
    time.sleep(0.01)
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  done_at_kill = store.num_chunks()
  assert 2 <= done_at_kill < 512 // 4, f"kill landed at {done_at_kill} chunks"
  assert not os.path.exists(os.path.join(outdir, "basin.json"))

  p = _run(["experiments.basin", f"--workdir={workdirs['good']}", f"--outdir={outdir}", *_SWEEP])
  assert p.returncode == 0, p.stderr[-3000:]
  radii = np.load(os.path.join(outdir, "radii.npy"))
  with open(os.path.join(outdir, "basin.json")) as f:
    summary = json.load(f)

  # The uninterrupted sweep, in this process: the same radii, float for float.
  t = workdir_lib.load(workdirs["good"])
  ref = basin.radii(t.metric_fn, t.params, basin.RandomDirections(jax.random.key(0), 512),
                    threshold=0.5, data=t.dataset.train, chunk_size=4)
  np.testing.assert_array_equal(radii, ref.radius)
  for key in ("log10_volume", "log10_volume_ci", "effective_sample_size", "radius_mean",
              "radius_median", "num_directions", "num_censored", "dim", "threshold", "metric",
              "measure"):
    assert key in summary
  assert summary["num_directions"] == 512 and summary["measure"] == "filter-normalized"
  assert summary["radius_median"] == pytest.approx(float(np.median(ref.radius)))
  assert summary["log10_volume"] == pytest.approx(ref.volume(num_bootstrap=0).log10_volume)
  assert summary["dim"] == ref.dim
  with open(os.path.join(outdir, "histogram.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert _listing(workdirs["good"]) == before  # the trained run is untouched


@pytest.mark.parametrize("flag,match", [
    ("--config.r_max=0", "r_max=0"),
    ("--config.threshold=1e-12", "already crossed at the centre"),
    pytest.param("--config.num_directions=0", "num_directions=0", marks=pytest.mark.slow),
    pytest.param("--config.norm=unit", "norm='unit'", marks=pytest.mark.slow),
])
def test_basin_bad_input_is_one_line_exit_2_and_writes_nothing(workdirs, tmp_path, flag, match):
  outdir = tmp_path / "out"
  outdir.mkdir()
  (outdir / "keep.txt").write_text("mine")
  before = _listing(str(tmp_path)) | _listing(workdirs["good"])
  p = _run(["experiments.basin", f"--workdir={workdirs['good']}", f"--outdir={outdir}", flag])
  assert p.returncode == 2, p.stderr[-2000:]
  err = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
  assert len(err) == 1 and match in err[0], p.stderr[-2000:]
  assert _listing(str(tmp_path)) | _listing(workdirs["good"]) == before


@pytest.mark.slow  # ~20 s on a loaded 2-core CPU; the surfaces themselves: test_landscape.py
def test_landscape_binary_writes_surfaces_and_figures(workdirs, other_workdir, tmp_path):
  workdirs = {**workdirs, "other": other_workdir}
  outdir = str(tmp_path / "land")
  p = _run(["experiments.landscape", f"--workdir={workdirs['good']}",
            f"--other_workdir={workdirs['other']}", f"--outdir={outdir}",
            "--config=experiments/configs/landscape.py:quick", "--config.grid_points=5",
            "--config.line_points=11", "--config.interp_points=9"])
  assert p.returncode == 0, p.stderr[-3000:]
  line = np.load(os.path.join(outdir, "line.npz"))
  plane = np.load(os.path.join(outdir, "plane.npz"))
  interp = np.load(os.path.join(outdir, "interpolation.npz"))
  with open(os.path.join(workdirs["good"], "summary.json")) as f:
    good = json.load(f)
  with open(os.path.join(workdirs["other"], "summary.json")) as f:
    other = json.load(f)
  # α = 0 is the trained minimum: the trainer's own evaluation is an independent reference.
  i0 = int(np.argmin(np.abs(line["alphas"])))
  assert line["alphas"][i0] == 0.0
  assert line["a/train/loss"][i0] == pytest.approx(good["train_loss"], rel=1e-4, abs=1e-6)
  assert line["b/test/accuracy"][i0] == pytest.approx(other["test_accuracy"], abs=1e-6)
  assert plane["train/loss"].shape == (5, 5) and plane["axis"].shape == (5,)
  assert plane["train/loss"][2, 2] == pytest.approx(good["train_loss"], rel=1e-4, abs=1e-6)
  ia = list(interp["alphas"])
  assert interp["alphas"][0] == -0.5 and interp["alphas"][-1] == 1.5
  assert interp["test/accuracy"][ia.index(1.0)] == pytest.approx(other["test_accuracy"], abs=1e-6)
  meta = json.loads(str(line["metadata"]))
  assert meta["norm"] == "filter" and meta["seed"] == 0
  for name in ("line", "interpolation", "plane_contour", "plane_contourf", "plane_heatmap",
               "plane_surface3d"):
    with open(os.path.join(outdir, f"{name}.png"), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n", name


def test_landscape_bad_input(workdirs, tmp_path):
  p = _run(["experiments.landscape", f"--workdir={workdirs['good']}",
            f"--outdir={tmp_path / 'x'}", "--config.kinds=interpolation"])
  assert p.returncode == 2 and "needs --other_workdir" in p.stderr
  assert not os.path.exists(tmp_path / "x")
