"""Every evaluator gives the same numbers on 1 device, 4 simulated CPU devices and 2 processes.

The device-count flag must be set before jax is imported, so the sharded runs happen in
subprocesses (tests/sharding_worker.py); this process computes the single-device reference with
the same code and mesh=None.
"""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from genviz_jax import engine

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sharding_worker  # noqa: E402

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_WORKER = os.path.join(_ROOT, "tests", "sharding_worker.py")
# float32 sums in another order (points: none; data split over devices: psum) differ by rounding.
_RTOL = {"hvp": 1e-5, "top_eigenvalues": 1e-5, "trace_samples": 1e-5, "eps_per_start": 1e-5}


def _env(devices):
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  return env


@pytest.fixture(scope="module")
def reference():
  """One device, no mesh: what a user without a mesh gets."""
  return sharding_worker.evaluate_all(None, None)


def _check(res, ref):
  for name, want in ref.items():
    got = res[name]
    assert got.shape == want.shape, name
    np.testing.assert_allclose(got, want, rtol=_RTOL.get(name, 1e-6), atol=1e-6, err_msg=name)
  # The engine streams were started at point 5: the same points as the full evaluation.
  np.testing.assert_allclose(ref["stream_loss"], ref["points_loss"][5:], rtol=1e-6)


def test_reference_is_not_trivial(reference):
  """The compared numbers move: a sharding bug could not hide behind constant outputs."""
  for name in ("points_loss", "plane", "radii", "hvp", "ensemble_loss", "boundary"):
    assert np.ptp(reference[name]) > 0, name
  assert np.all(reference["radii"] > 0)
  assert reference["top_eigenvalues"][0] >= reference["top_eigenvalues"][1]


def test_four_simulated_devices_match_single_device(tmp_path, reference):
  out = tmp_path / "four.npz"
  proc = subprocess.run([sys.executable, _WORKER, str(out)], env=_env(4), cwd=_ROOT,
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  res = np.load(out)
  assert int(res["num_devices"]) == 4
  _check(res, reference)


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_single_device(tmp_path, reference):
  """jax.distributed on 127.0.0.1 (gloo CPU collectives), 2 processes x 2 devices."""
  out = tmp_path / "two.npz"
  addr = f"127.0.0.1:{_free_port()}"
  procs = [subprocess.Popen([sys.executable, _WORKER, str(out), addr, "2", str(i)], env=_env(2),
                            cwd=_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  try:
    errs = [p.communicate(timeout=900)[1] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, e in zip(procs, errs):
    assert p.returncode == 0, e[-3000:]
  res = np.load(out)
  assert int(res["num_processes"]) == 2 and int(res["num_devices"]) == 4
  _check(res, reference)


def test_mesh_errors():
  with pytest.raises(ValueError, match="data_shards=3"):
    engine.point_mesh(jax.devices() * 2, data_shards=3)
  with pytest.raises(ValueError, match="not a jax.sharding.Mesh"):
    engine.check_mesh("points")
  mesh = jax.make_mesh((1,), ("pts",), axis_types=(jax.sharding.AxisType.Auto,))
  with pytest.raises(ValueError, match="no 'points' axis"):
    engine.check_mesh(mesh)
