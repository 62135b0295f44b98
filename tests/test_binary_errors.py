"""Bad input on the command line of every binary: one line `error: ...`, exit status 2.

Each case runs the binary as a user does (a subprocess from the repository root) and checks
stderr holds exactly one line, that it names the bad value and what is allowed, and that no
traceback was printed. None of these cases gets as far as computing anything.
"""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, cwd=ROOT):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=300)


def _one_line_error(r, *fragments) -> str:
  assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
  assert "Traceback" not in r.stderr, r.stderr[-2000:]
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-2000:]
  for f in fragments:
    assert f in lines[0], lines[0]
  return lines[0]


@pytest.fixture(scope="module")
def bad_configs(tmp_path_factory):
  d = tmp_path_factory.mktemp("configs")
  (d / "broken.py").write_text("import no_such_module_here\n")
  (d / "no_get.py").write_text("x = 1\n")
  return d


@pytest.mark.parametrize("binary", ["experiments.landscape", "experiments.train"])
def test_missing_config_file(binary, tmp_path):
  r = _run([binary, "--config=experiments/configs/no_such.py", f"--workdir={tmp_path / 'w'}"])
  _one_line_error(r, "no_such.py", "no such config file", "get_config")
  assert not os.path.exists(tmp_path / "w")


def test_config_file_that_fails_to_import(bad_configs, tmp_path):
  r = _run(["experiments.basin", f"--config={bad_configs / 'broken.py'}",
            f"--workdir={tmp_path}"])
  _one_line_error(r, "broken.py", "fails to import", "no_such_module_here")


def test_config_file_without_get_config(bad_configs, tmp_path):
  r = _run(["experiments.sharpness", f"--config={bad_configs / 'no_get.py'}",
            f"--workdir={tmp_path}"])
  _one_line_error(r, "no_get.py", "has no get_config()")


def test_unknown_variant(tmp_path):
  r = _run(["experiments.train", "--config=experiments/configs/swissroll.py:fast",
            f"--workdir={tmp_path / 'w'}"])
  _one_line_error(r, "'fast'", "quick", "poisoned")


def test_override_of_a_key_the_config_does_not_have(tmp_path):
  r = _run(["experiments.landscape", f"--workdir={tmp_path}", "--config.num=0"])
  line = _one_line_error(r, "config.num", "allowed keys:")
  assert "grid_points" in line and "line_points" in line  # the keys that do exist
  r = _run(["experiments.sharpness", f"--workdir={tmp_path}", "--config.hessian.topk=2"])
  _one_line_error(r, "config.hessian.topk", "top_k")


@pytest.mark.parametrize("flag,fragments", [
    ("--config.grid_points=abc", ["grid_points=abc", "int"]),
    ("--config.grid_points=0", ["grid_points=0", "integer >= 2"]),
    ("--config.norm=unit", ["norm='unit'", "filter"]),
])
def test_override_with_a_bad_value(flag, fragments, tmp_path):
  r = _run(["experiments.landscape", f"--workdir={tmp_path}", flag])
  _one_line_error(r, *fragments)


def test_required_flag_and_stray_arguments(tmp_path):
  _one_line_error(_run(["experiments.train", f"--workdir={tmp_path}"]), "--config is required")
  _one_line_error(_run(["experiments.basin", f"--workdir={tmp_path}", "extra"]),
                  "unexpected arguments: extra")


def test_workdir_that_does_not_exist(tmp_path):
  missing = str(tmp_path / "nope")
  _one_line_error(_run(["experiments.basin", f"--workdir={missing}"]), repr(missing),
                  "does not exist")
  assert not os.path.exists(missing)


def test_workdir_without_a_checkpoint(tmp_path):
  from genviz_jax.configs import swissroll
  wd = tmp_path / "run"
  wd.mkdir()
  (wd / "config.json").write_text(swissroll.get_config("quick").to_json(sort_keys=True))
  r = _run(["experiments.landscape", f"--workdir={wd}", f"--outdir={tmp_path / 'out'}"])
  _one_line_error(r, str(wd), "checkpoint")
  assert sorted(os.listdir(wd)) == ["config.json"] and not os.path.exists(tmp_path / "out")
