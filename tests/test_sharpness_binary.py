"""The sharpness job (genviz_jax.jobs.sharpness, run by experiments.sharpness) on a tiny trained
swiss-roll workdir (seconds, not minutes)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from experiments import common
from genviz_jax import files
from genviz_jax.configs import sharpness as sharpness_config
from genviz_jax.configs import swissroll as swissroll_config
from genviz_jax.jobs import sharpness as binary

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_run(workdir, poisoned=False, steps=300):
  from genviz_jax import train
  c = swissroll_config.get_config("poisoned_quick" if poisoned else "quick")
  c.model_kwargs.widths = (8, 8)
  c.num_steps = steps
  c.lr_boundaries = ()
  c.log_every = 100
  c.eval_every = steps
  c.checkpoint_every = steps
  c.poison_warmup_steps = 0
  c.plot = False
  train.train_and_evaluate(c, str(workdir))
  return str(workdir)


@pytest.fixture(scope="module")
def tiny_workdir(tmp_path_factory):
  return _tiny_run(tmp_path_factory.mktemp("tiny") / "run")


def _listing(workdir):
  out = {}
  for root, _, files in os.walk(workdir):
    for f in files:
      p = os.path.join(root, f)
      out[os.path.relpath(p, workdir)] = os.stat(p).st_mtime_ns
  return out


def _quick():
  c = sharpness_config.get_config("quick")
  c.hessian.lanczos_steps = 30
  return c


@pytest.mark.slow
def test_binary_writes_every_measure_and_leaves_trainer_files_alone(tiny_workdir):
  before = _listing(tiny_workdir)
  s = binary.compute(_quick(), tiny_workdir)
  after = _listing(tiny_workdir)
  assert {k: v for k, v in after.items() if not k.startswith("sharpness" + os.sep)} == before
  out = os.path.join(tiny_workdir, "sharpness")
  for name in ("sharpness.json", "slq.npz", "eigen_vs_random.png", "spectral_density.png",
               "boundary_animation.gif"):
    assert os.path.getsize(os.path.join(out, name)) > 0, name
  with open(os.path.join(out, "sharpness.json")) as f:
    js = json.load(f)
  assert js == json.loads(json.dumps(s, default=files._json_default))
  for key in ("hessian.top_eigenvalue", "hessian.trace", "pacbayes.flatness",
              "pacbayes.mag.flatness", "pacbayes.orig", "pacbayes.init", "pacbayes.mag.orig",
              "pacbayes.mag.init", "eps_sharpness.0.001"):
    assert np.isfinite(js["measures"][key]), key
  assert js["pacbayes"]["sigma"]["num_samples"] == 8
  assert len(js["pacbayes"]["sigma"]["history"]) == 2 + 4 or js["pacbayes"]["sigma"]["censored"]
  assert js["hessian"]["trace"]["ci"][0] <= js["hessian"]["trace"]["estimate"]
  assert js["settings"]["hessian"]["trace_samples"] == 10
  # Independent check of the plumbing: the top eigenvalue is that of the dense Hessian of the
  # loaded net's train loss.
  from genviz_jax import workdir as workdir_lib
  t = workdir_lib.load(tiny_workdir)
  flat, unravel = ravel_pytree(t.params)
  data = {"x": jnp.asarray(t.dataset.train["x"]), "y": jnp.asarray(t.dataset.train["y"])}
  dense = jax.hessian(lambda v: t.metric_fn(unravel(v), data)["loss"])(flat)
  top = np.linalg.eigvalsh(np.asarray(dense, np.float64))[-1]
  assert js["hessian"]["top_eigenvalues"][0] == pytest.approx(top, rel=1e-3, abs=1e-6)


def _exit_message(capsys, fn):
  with pytest.raises(SystemExit) as e:
    common.run_guarded(fn)
  err = capsys.readouterr().err.strip().splitlines()
  return e.value.code, err


@pytest.mark.parametrize("key,value,message", [
    ("hessian.top_k", 10**6, "hessian.top_k=1000000 must be an integer in [1, 114]"),
    ("pacbayes.sigma_min", -1.0, "pacbayes.sigma_min=-1.0 must be a finite number > 0"),
    ("pacbayes.sigma_max", 1e-6, "pacbayes sigma range [1e-05, 1e-06] is empty"),
])
def test_bad_config_is_one_line_exit_2_and_writes_nothing(tiny_workdir, capsys, key, value,
                                                           message, tmp_path):
  import shutil
  wd = str(tmp_path / "copy")
  shutil.copytree(tiny_workdir, wd, ignore=shutil.ignore_patterns("sharpness"))
  before = _listing(wd)
  c = _quick()
  section, name = key.split(".")
  with c.unlocked():
    c[section][name] = value
  code, err = _exit_message(capsys, lambda: binary.compute(c, wd))
  assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
  assert _listing(wd) == before


def test_non_finite_hessian_is_one_line_exit_2(tiny_workdir, capsys, monkeypatch):
  from genviz_jax import workdir as workdir_lib
  real = workdir_lib.load

  def poisoned_load(*a, **k):
    t = real(*a, **k)
    t.params = jax.tree_util.tree_map(lambda x: x * jnp.inf, t.params)
    return t

  monkeypatch.setattr(workdir_lib, "load", poisoned_load)
  code, err = _exit_message(capsys, lambda: binary.compute(_quick(), tiny_workdir))
  assert code == 2 and len(err) == 1 and "non-finite Hessian-vector product" in err[0], err


def test_cli_missing_workdir(tmp_path):
  missing = str(tmp_path / "nope")
  r = subprocess.run([sys.executable, "-m", "experiments.sharpness", f"--workdir={missing}"],
                     cwd=REPO, capture_output=True, text=True, timeout=300)
  assert r.returncode == 2, r.stderr
  assert r.stderr.strip().splitlines()[-1] == f"error: workdir={missing!r} does not exist"
  assert not os.path.exists(missing)


@pytest.mark.slow
def test_bad_minimum_is_sharper_by_every_measure(tmp_path):
  """The paper's pair (clean 20k steps, poisoned 100k steps; a few minutes on 2 cores)."""
  from genviz_jax import train
  runs = {}
  for name, variant in (("clean", ""), ("poisoned", "poisoned")):
    wd = str(tmp_path / name)
    c = swissroll_config.get_config(variant)
    c.plot = False
    train.train_and_evaluate(c, wd)
    cfg = sharpness_config.get_config()
    cfg.figures.enabled = False
    runs[name] = binary.compute(cfg, wd)["measures"]
  for key, good in runs["clean"].items():
    assert runs["poisoned"][key] > good, (key, good, runs["poisoned"][key])
