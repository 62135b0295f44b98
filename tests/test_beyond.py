"""The connectivity and trajectory jobs and binaries, and the beyond job (quick: -m slow).

Tiny swiss-roll runs are trained in-process once per module (a few hundred full-batch steps);
the binaries run as real processes. Numbers are checked against direct evaluation of the trained
models, not against the jobs' own formulas.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(path, seed, snapshots=0):
  from genviz_jax.configs import swissroll
  from genviz_jax import train
  c = swissroll.scaled_config("clean", 300, seed=seed, snapshots=snapshots)
  c.lr_boundaries = ()
  c.plot = False
  train.train_and_evaluate(c, path)
  return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  base = tmp_path_factory.mktemp("runs")
  return {"a": _train(str(base / "a"), 0, snapshots=30), "b": _train(str(base / "b"), 1)}


def _run(args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=600)


def _one_line_error(r, *fragments):
  assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-2000:]
  for f in fragments:
    assert f in lines[0], lines[0]


def _quick_connectivity(**overrides):
  from genviz_jax.configs import connectivity
  c = connectivity.get_config("quick")
  c.num_steps, c.num_t, c.num_directions, c.radius_ts = 50, 5, 8, "0.5"
  c.update(overrides)
  return c


@pytest.mark.slow
def test_connectivity_job_endpoints_are_the_trained_models(runs, tmp_path):
  from genviz_jax import workdir
  from genviz_jax.jobs import connectivity
  out = connectivity.run(_quick_connectivity(), runs["a"], runs["b"], str(tmp_path / "c"))
  z = np.load(tmp_path / "c" / "curves.npz")
  ta, tb = workdir.load(runs["a"]), workdir.load(runs["b"])
  for path in ["line"] + out["kinds"]:
    for split in ("train", "test"):
      data = getattr(ta.dataset, split)
      ea, eb = ta.metric_fn(ta.params, data), tb.metric_fn(tb.params, data)
      for m in ("loss", "accuracy"):
        v = z[f"{path}/{split}/{m}"]
        np.testing.assert_allclose(v[0], ea[m], rtol=1e-5)
        np.testing.assert_allclose(v[-1], eb[m], rtol=1e-5)
  # The line's midpoint is the average of the two minima, evaluated directly.
  mid = jax.tree.map(lambda x, y: 0.5 * (x + y), ta.params, tb.params)
  np.testing.assert_allclose(z["line/train/loss"][2], ta.metric_fn(mid, ta.dataset.train)["loss"],
                             rtol=1e-4)
  # Barrier: max along the path minus the endpoints' mean, read off the stored values.
  v = z["line/train/loss"]
  assert out["linear_barrier"] == pytest.approx(v.max() - 0.5 * (v[0] + v[-1]), rel=1e-6)
  assert (tmp_path / "c" / "connectivity.png").exists()
  assert len(out["radius_along_curve"]["rows"]) == 1


def test_trajectory_job_projects_the_snapshots(runs, tmp_path):
  from genviz_jax import workdir
  from genviz_jax.jobs import trajectory
  from genviz_jax.configs import trajectory as cfg
  c = cfg.get_config("quick")
  c.grid_points = 5
  out = trajectory.run(c, runs["a"], str(tmp_path / "t"))
  steps, _ = workdir.snapshots(runs["a"])
  z = np.load(tmp_path / "t" / "trajectory.npz")
  assert out["num_iterates"] == len(steps) == z["coords"].shape[0]
  ev = z["explained_variance"]
  assert 0 < ev[1] <= ev[0] and ev.sum() <= 1 + 1e-6
  # The last snapshot is the final parameters: its coordinates are the origin.
  assert steps[-1] == workdir.load(runs["a"]).step
  np.testing.assert_allclose(z["coords"][-1], 0.0, atol=1e-6)
  assert z["train/loss"].shape == (5, 5) and (tmp_path / "t" / "trajectory.png").exists()


@pytest.mark.parametrize("args,fragments", [
    (["experiments.connectivity", "--workdir=W"], ["other_workdir"]),
    (["experiments.connectivity", "--workdir=W", "--other_workdir=W", "--config.kinds=spline"],
     ["kinds='spline'", "bezier", "polychain"]),
    (["experiments.connectivity", "--workdir=W", "--other_workdir=W", "--config.radius_ts=0,2"],
     ["radius_ts='0,2'", "[0, 1]"]),
    (["experiments.trajectory", "--workdir=W", "--config.grid_points=2"],
     ["grid_points=2", "integer >= 3"]),
    (["experiments.beyond", "--workdir=W", "--config.phases=minima,curves"],
     ["'curves'", "connectivity"]),
    (["experiments.beyond", "--workdir=W", "--config.skip.grid_points=abc"],
     ["grid_points=abc"]),
])
def test_bad_input_is_one_line_exit_2(args, fragments, tmp_path):
  w = str(tmp_path / "w")
  os.makedirs(w)
  _one_line_error(_run([a.replace("=W", f"={w}") for a in args]), *fragments)


def test_trajectory_without_snapshots_is_one_line_exit_2(runs, tmp_path):
  _one_line_error(_run(["experiments.trajectory", f"--workdir={runs['b']}",
                        f"--outdir={tmp_path / 't'}"]), "no parameter snapshots",
                  "snapshot_every")
  assert not (tmp_path / "t").exists()


def test_beyond_claims_read_the_phase_results():
  from genviz_jax import beyond
  results = {
      "connectivity": {"good_good": {"curve_barrier": 0.05, "linear_barrier": 1.0,
                                     "kinds": ["bezier"]}},
      "trajectory": {"good": {"explained_variance_top2": 0.3, "num_iterates": 10}},
  }
  got = {c.key: c.holds for c in beyond.claims(results)}
  assert got == {"connectivity": True, "trajectory": False, "skip": None}
  results["connectivity"]["good_good"]["curve_barrier"] = 0.2
  assert not beyond.claims(results)[0].holds


@pytest.mark.slow
def test_quick_beyond_job_end_to_end_and_resume(tmp_path):
  w = str(tmp_path / "b")
  r = _run(["experiments.beyond", "--config=experiments/configs/beyond.py:quick",
            f"--workdir={w}"])
  assert r.returncode == 0, r.stderr[-3000:]
  with open(os.path.join(w, "paper_summary.json")) as f:
    s = json.load(f)
  res = s["results"]
  for pair in ("good_good", "good_bad"):
    assert {"linear_barrier", "curve_barrier"} <= set(res["connectivity"][pair])
  for run in ("good", "bad"):
    assert len(res["trajectory"][run]["explained_variance"]) == 2
  for k in ("with_skip", "without_skip"):
    assert 0.0 <= res["skip"][k]["negative_share"] <= 1.0
  html = open(os.path.join(w, "report.html")).read()
  for title in ("Mode connectivity", "Training trajectories", "Skip connections"):
    assert title in html
  before = {p: os.stat(os.path.join(w, "phases", p)).st_mtime_ns
            for p in os.listdir(os.path.join(w, "phases"))}
  r = _run(["experiments.beyond", "--config=experiments/configs/beyond.py:quick",
            f"--workdir={w}"])
  assert r.returncode == 0, r.stderr[-3000:]
  after = {p: os.stat(os.path.join(w, "phases", p)).st_mtime_ns
           for p in os.listdir(os.path.join(w, "phases"))}
  assert before == after  # every phase was found done and skipped


def test_connectivity_job_recomputes_batchnorm_statistics_at_each_point():
  """The job's BatchNorm statistics are the batch mean and variance of the layer's input, computed
  by hand here, and the evaluated curve at t = 0 is the start model with those statistics."""
  import types
  import flax.linen as nn
  import jax.numpy as jnp
  from genviz_jax import objectives
  from genviz_jax.jobs import connectivity

  class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
      h = nn.Dense(4)(x)
      h = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(h)
      return nn.Dense(3)(nn.relu(h))

  model = Net()
  rng = np.random.RandomState(0)
  batch = {"x": jnp.asarray(rng.randn(64, 5), jnp.float32),
           "y": jnp.asarray(rng.randint(0, 3, 64), jnp.int32)}
  va = model.init(jax.random.key(0), batch["x"])
  vb = model.init(jax.random.key(1), batch["x"])
  trained = types.SimpleNamespace(model=model, model_state={"batch_stats": va["batch_stats"]},
                                  metric_fn=None)
  m = connectivity._Model(trained)
  assert m.bn
  stats = m.stats_fn(va["params"], batch)["BatchNorm_0"]
  k = va["params"]["Dense_0"]
  h = np.asarray(batch["x"], np.float64) @ np.asarray(k["kernel"]) + np.asarray(k["bias"])
  np.testing.assert_allclose(stats["mean"], h.mean(0), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(stats["var"], h.var(0), rtol=1e-4, atol=1e-6)
  res = m.evaluate("bezier", va["params"], connectivity.connectivity.init_bend(
      va["params"], vb["params"]), vb["params"], np.array([0.0, 0.5, 1.0]), batch, batch, None, 1)
  logits = model.apply({"params": va["params"], "batch_stats": {"BatchNorm_0": stats}},
                       batch["x"], train=False)
  ce = float(jnp.mean(objectives.cross_entropy(logits, batch["y"])))
  np.testing.assert_allclose(res["loss"][0], ce, rtol=1e-5)
