"""The main job (genviz_jax.paper, run by experiments.paper): phases, resume, claims, report.

The claims are checked against synthetic phase results placed at, and just past, the numbers
Huang et al. 2019 published (independent of this implementation): the good swiss-roll minimum
100% train / 100% test, the bad one 100% train / 7-8% test, the minefield's bad minima at most
53% test with the good run ending at 98.5%, top Hessian eigenvalues ~300 (clean) and ~4000
(poisoned).
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from genviz_jax import paper
from genviz_jax.configs import paper as paper_cfg

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


@pytest.mark.slow
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
  by_key = {c["key"]: c for c in summary["claims"]}
  assert by_key["good_minimum"]["holds"] is None  # the decision phase did not run
  for name in ("fig1_minefield.png", "fig8_circles.png", "fig6_gap_grid.png",
               "fig6_gap_vs_measures.png"):
    assert (ref / "figures" / name).stat().st_size > 5000



def _published() -> dict:
  """Phase results at the paper's published numbers (and clear orderings where it gives none)."""
  run = {"train_loss": 0.01, "steps": 100, "wall_time_s": 1.0}
  return {
      "decision": {"good": {"train_accuracy": 1.0, "test_accuracy": 1.0, **run},
                   "bad": {"train_accuracy": 1.0, "test_accuracy": 0.075, **run}},
      "minefield": {"bad_test_accuracy_max": 0.53, "final_good_test_accuracy": 0.985,
                    "bad_train_accuracy_min": 1.0, "poison_source": "sampler"},
      "optimizers": {"rows": [{"dataset": "swissroll", "optimizer": o, "train_accuracy": 1.0,
                               "test_accuracy": 1.0, "learning_rate": 0.1, "steps": 100}
                              for o in ("sgd", "adam")]},
      "basin": {"good": {"log10_volume": -100.0, "log10_volume_ci": [-101.0, -99.0],
                         "radius_mean": 0.2, "measure": "filter-normalized", "dim": 2000},
                "bad": {"log10_volume": -900.0, "log10_volume_ci": [-901.0, -899.0],
                        "radius_mean": 0.08, "measure": "filter-normalized", "dim": 2000}},
      "sharpness": {"good": {"top_eigenvalue": 300.0}, "bad": {"top_eigenvalue": 4000.0},
                    "measures": ["hessian.top_eigenvalue", "hessian.trace"],
                    "ranked_sharper_by": ["hessian.top_eigenvalue", "hessian.trace"]},
      "gap_sweep": {"spearman_gap_vs_poison": 0.95, "spearman_gap_vs_log10_volume": -0.9,
                    "spearman_gap_vs_top_eigenvalue": 0.8},
      "circles": {"sharp": {"train_accuracy": 1.0, "test_accuracy": 0.7, "margin": 0.001},
                  "wide": {"train_accuracy": 1.0, "test_accuracy": 1.0, "margin": 0.3}},
  }


def _verdicts(results) -> dict:
  return {c.key: c.holds for c in paper.claims(results)}


def test_the_papers_own_numbers_make_every_claim_hold():
  v = _verdicts(_published())
  assert len(v) == 13 and all(h is True for h in v.values()), v


@pytest.mark.parametrize("path,value,key", [
    # The bad minimum generalizes after all (a clean-run test accuracy).
    (("decision", "bad", "test_accuracy"), 0.97, "bad_minimum"),
    # The poisoned objective failed to fit the training set.
    (("decision", "bad", "train_accuracy"), 0.6, "bad_minimum"),
    # The clean run does not generalize.
    (("decision", "good", "test_accuracy"), 0.6, "good_minimum"),
    # A bad minimum in the minefield that generalizes like the good run.
    (("minefield", "bad_test_accuracy_max"), 0.985, "minefield"),
    # The eigenvalues of the authors' notes, swapped: the bad minimum is the flat one.
    (("sharpness", "bad", "top_eigenvalue"), 299.0, "sharpness"),
    # Volumes swapped in order.
    (("basin", "bad", "log10_volume"), -99.0, "volume"),
    (("basin", "bad", "radius_mean"), 0.21, "radius"),
    # The gap falls as the poison factor rises.
    (("gap_sweep", "spearman_gap_vs_poison"), -0.5, "gap_grows"),
    (("gap_sweep", "spearman_gap_vs_log10_volume"), 0.3, "gap_vs_volume"),
    (("gap_sweep", "spearman_gap_vs_top_eigenvalue"), -0.3, "gap_vs_sharpness"),
    # The sharp circles generalize as well as the wide ones.
    (("circles", "sharp", "test_accuracy"), 1.0, "circles"),
])
def test_a_result_against_the_paper_breaks_exactly_its_claim(path, value, key):
  results = _published()
  node = results
  for k in path[:-1]:
    node = node[k]
  node[path[-1]] = value
  v = _verdicts(results)
  assert v[key] is False
  assert all(h is True for k, h in v.items() if k not in (key, "volume_vs_radius")), v


def test_an_optimizer_that_fits_but_does_not_generalize_breaks_the_claim():
  results = _published()
  results["optimizers"]["rows"].append({"dataset": "digits", "optimizer": "lbfgs",
                                        "train_accuracy": 1.0, "test_accuracy": 0.5,
                                        "learning_rate": 1.0, "steps": 40})
  assert _verdicts(results)["optimizers"] is False
  # One that never fits the training set is reported, not counted against the claim.
  results["optimizers"]["rows"][-1]["train_accuracy"] = 0.5
  claim = {c.key: c for c in paper.claims(results)}["optimizers"]
  assert claim.holds is True and "digits/lbfgs" in claim.detail


def test_phases_that_did_not_run_are_not_run_claims():
  results = _published()
  del results["basin"], results["decision"]
  v = _verdicts(results)
  for key in ("volume", "radius", "volume_vs_radius", "good_minimum", "bad_minimum"):
    assert v[key] is None, key
  assert v["minefield"] is True and v["circles"] is True


def test_resume_skips_finished_phases_and_refuses_another_config(tmp_path):
  calls = []

  def fake(name, value):
    def fn(cfg, workdir):
      calls.append(name)
      return {"value": value, "seed": int(cfg.seed)}
    return fn

  cfg = paper_cfg.get_config("quick")
  cfg.phases = "circles,minefield"
  fns = {"minefield": fake("minefield", 1.5), "circles": fake("circles", 2.5)}
  first = paper.run(cfg, str(tmp_path), phase_fns=fns)
  assert calls == ["minefield", "circles"]  # the order of PHASES, not of cfg.phases
  os.remove(tmp_path / "phases" / "circles.json")  # as if killed during the second phase
  again = paper.run(cfg, str(tmp_path), phase_fns=fns)
  assert calls == ["minefield", "circles", "circles"]
  assert again["minefield"] == first["minefield"]
  assert again["minefield"]["value"] == 1.5 and again["circles"]["value"] == 2.5
  other = paper_cfg.get_config("quick")
  other.seed = 1
  with pytest.raises(ValueError, match="another config .*seed"):
    paper.run(other, str(tmp_path), phase_fns=fns)
  assert calls == ["minefield", "circles", "circles"]


def test_report_shows_each_verdict_and_embeds_figures(tmp_path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  results = _published()
  results["circles"]["sharp"]["test_accuracy"] = 1.0  # breaks the circles claim
  del results["basin"]
  (tmp_path / "figures").mkdir()
  fig, ax = plt.subplots()
  ax.plot([0, 1], [1, 0])
  fig.savefig(tmp_path / "figures" / "fig8_circles.png")
  plt.close(fig)
  results["circles"]["figure"] = os.path.join("figures", "fig8_circles.png")
  cfg = paper_cfg.get_config("quick")
  paths = paper.write_outputs(cfg, str(tmp_path), results)
  html = open(paths["report"]).read()
  assert html.count("data:image/png;base64,") == 1
  assert html.count("class='no'>NO<") == 1 and html.count("class='na'>not run<") == 3
  summary = json.loads(open(paths["summary"]).read())
  assert summary["claims_hold"] == 9 and summary["claims_total"] == 13
  assert summary["results"]["circles"]["sharp"]["test_accuracy"] == 1.0


def test_sweep_grid_is_the_papers():
  cfg = paper_cfg.get_config("")
  vals = paper.sweep_values(cfg)
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
  assert set(summary["phase_wall_time_s"]) == set(paper.PHASES)
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
