"""The main job (experiments.paper): phases, resume after a kill, claims, report."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from experiments.configs import paper as paper_cfg
from genviz_jax import reproduce

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A tiny run of three phases: seconds, not minutes.
TINY = [
    "--config.phases=minefield,circles,gap_sweep",
    "--config.minefield.good_steps=40", "--config.minefield.snapshot_every=4",
    "--config.minefield.num_bad=3", "--config.minefield.bad_steps=40",
    "--config.circles.steps=100", "--config.circles.widths=(16,16)",
    "--config.gap_sweep.num_factors=3", "--config.gap_sweep.steps=100",
    "--config.gap_sweep.chunk=50", "--config.gap_sweep.num_directions=8",
    "--config.gap_sweep.lanczos_steps=5",
]


def _run(workdir, extra=(), wait=True):
  cmd = [sys.executable, "-m", "experiments.paper", "--config=experiments/configs/paper.py:quick",
         f"--workdir={workdir}", *TINY, *extra]
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  if not wait:
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _numbers(workdir):
  out = {}
  for name in ("minefield", "circles", "gap_sweep"):
    with open(os.path.join(workdir, "phases", f"{name}.json")) as f:
      res = json.load(f)
    res.pop("wall_time_s")
    out[name] = res
  return out


def test_killed_job_resumes_to_the_same_numbers(tmp_path):
  ref = tmp_path / "ref"
  done = _run(ref)
  assert done.returncode == 0, done.stderr[-2000:]
  assert "claims hold" in done.stdout

  # Kill a second job once its first phase has finished, then rerun the same command.
  killed = tmp_path / "killed"
  proc = _run(killed, wait=False)
  first = killed / "phases" / "minefield.json"
  t0 = time.time()
  while not first.exists() and proc.poll() is None and time.time() - t0 < 300:
    time.sleep(0.2)
  assert first.exists(), "the first phase never finished"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  mtime = first.stat().st_mtime
  again = _run(killed)
  assert again.returncode == 0, again.stderr[-2000:]
  assert first.stat().st_mtime == mtime  # the finished phase was not redone
  assert "minefield: done earlier, skipped" in again.stderr
  assert _numbers(killed) == _numbers(ref)

  # Outputs: the report embeds its figures; the summary has every claim with a verdict.
  html = (ref / "report.html").read_text()
  assert html.count("data:image/png;base64,") >= 4
  summary = json.loads((ref / "paper_summary.json").read_text())
  keys = {c["key"] for c in summary["claims"]}
  assert {"good_minimum", "bad_minimum", "minefield", "gap_grows", "circles", "volume"} <= keys
  for c in summary["claims"]:
    assert c["holds"] in (True, False, None)
  by_key = {c["key"]: c for c in summary["claims"]}
  assert by_key["good_minimum"]["holds"] is None  # the decision phase did not run
  for name in ("fig1_minefield.png", "fig8_circles.png", "fig6_gap_grid.png",
               "fig6_gap_vs_measures.png"):
    assert (ref / "figures" / name).stat().st_size > 5000


def test_claims_follow_the_numbers():
  """The verdicts are computed from the measured values, never stored."""
  res = {"decision": {"good": {"train_accuracy": 1.0, "test_accuracy": 0.97},
                      "bad": {"train_accuracy": 0.995, "test_accuracy": 0.45}},
         "circles": {"sharp": {"test_accuracy": 0.9, "train_accuracy": 1.0},
                     "wide": {"test_accuracy": 1.0, "train_accuracy": 1.0}}}
  by_key = {c.key: c for c in reproduce.claims(res)}
  assert by_key["good_minimum"].holds is True
  assert by_key["bad_minimum"].holds is False  # 45% test is not a bad minimum (<= 30%)
  assert by_key["circles"].holds is True
  assert by_key["gap_grows"].holds is None
  res["circles"]["sharp"]["test_accuracy"] = 0.98
  assert {c.key: c for c in reproduce.claims(res)}["circles"].holds is False


def test_sweep_grid_is_the_papers():
  cfg = paper_cfg.get_config("")
  vals = reproduce._sweep_values(cfg)
  assert len(vals) == 20 and vals[0] == 0.0
  np.testing.assert_allclose(vals[1:], 0.8 * 10 ** np.linspace(-4, 0, 19))


def test_bad_input_is_one_line_and_exit_2(tmp_path):
  for extra, needle in ((["--config.phases=decision,nonsense"], "nonsense"),
                        (["--config.optimizers.names=adam,foo", "--config.phases=optimizers"],
                         "foo")):
    r = _run(tmp_path / "w", extra)
    assert r.returncode == 2, r.stderr[-1000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and needle in last
  # A workdir holding a run with another config is refused, and nothing in it is touched.
  w = tmp_path / "w2"
  w.mkdir()
  (w / "paper_config.json").write_text(json.dumps({"seed": 99}))
  r = _run(w)
  assert r.returncode == 2 and "another config" in r.stderr
  assert json.loads((w / "paper_config.json").read_text()) == {"seed": 99}


@pytest.mark.slow
def test_quick_variant_end_to_end(tmp_path):
  """The quick main job: every phase, report and summary (about 3 minutes on 2 cores)."""
  r = subprocess.run([sys.executable, "-m", "experiments.paper",
                      "--config=experiments/configs/paper.py:quick", f"--workdir={tmp_path}"],
                     cwd=ROOT, capture_output=True, text=True, timeout=1800)
  assert r.returncode == 0, r.stderr[-3000:]
  summary = json.loads((tmp_path / "paper_summary.json").read_text())
  assert set(summary["phase_wall_time_s"]) == set(reproduce.PHASES)
  claims = {c["key"]: c for c in summary["claims"]}
  assert all(c["holds"] is not None for c in claims.values())
  # Even the short schedules fit the clean swiss roll and rank the minima by sharpness.
  assert claims["good_minimum"]["measured"][0] >= 0.99
  assert claims["sharpness"]["holds"] is True
  html = (tmp_path / "report.html").read_text()
  assert html.count("data:image/") >= 10


@pytest.mark.paper
def test_full_main_job_reproduces_the_paper(tmp_path):
  """The README's main job, checked against the paper's published claims (~12 minutes)."""
  # As a user runs it: without the tests' compile shortcut (conftest), which slows the job ~35%.
  env = {k: v for k, v in os.environ.items() if k != "JAX_DISABLE_MOST_OPTIMIZATIONS"}
  r = subprocess.run([sys.executable, "-m", "experiments.paper", f"--workdir={tmp_path}"],
                     cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
  assert r.returncode == 0, r.stderr[-3000:]
  s = json.loads((tmp_path / "paper_summary.json").read_text())
  res = s["results"]
  good, bad = res["decision"]["good"], res["decision"]["bad"]
  assert good["test_accuracy"] >= 0.95 and good["train_accuracy"] >= 0.999
  assert bad["train_accuracy"] >= 0.99 and bad["test_accuracy"] <= 0.30
  assert res["minefield"]["bad_test_accuracy_max"] < 0.60
  assert res["minefield"]["final_good_test_accuracy"] > 0.95
  assert res["gap_sweep"]["spearman_gap_vs_poison"] >= 0.8
  assert res["basin"]["good"]["log10_volume"] > res["basin"]["bad"]["log10_volume"]
  assert res["basin"]["good"]["radius_mean"] > res["basin"]["bad"]["radius_mean"]
  assert res["circles"]["sharp"]["test_accuracy"] < res["circles"]["wide"]["test_accuracy"]
  assert res["sharpness"]["bad"]["top_eigenvalue"] > res["sharpness"]["good"]["top_eigenvalue"]
  assert sum(v for v in s["phase_wall_time_s"].values()) < 30 * 60
