"""Sharded engine == single device: 4 simulated CPU devices, and two processes over 127.0.0.1.

The device-count flag must be set before jax is imported, so the sharded runs happen in
subprocesses (tests/sharding_worker.py); this process computes the single-device reference.
"""

import os
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genviz_jax import evaluate

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sharding_worker  # noqa: E402

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_WORKER = os.path.join(_ROOT, "tests", "sharding_worker.py")
_RTOL = 1e-6


def _env(devices):
  env = dict(os.environ)
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  return env


@pytest.fixture(scope="module")
def reference():
  """Single device, one data chunk, one point group at a time: the plain evaluation."""
  fn, params, delta_fn, train = sharding_worker.problem()
  out = evaluate.point_metrics(fn, params, delta_fn, jnp.arange(37), train, point_batch=1)
  return {k: np.asarray(v) for k, v in out.items()}


def _check(res, ref):
  for prefix in ("points", "points_data"):
    for name in ("loss", "accuracy"):
      np.testing.assert_allclose(res[f"{prefix}_{name}"], ref[name], rtol=_RTOL, atol=1e-7,
                                 err_msg=f"{prefix}_{name}")
  np.testing.assert_allclose(res["generic_twice"], 2.0 * ref["loss"], rtol=_RTOL)
  np.testing.assert_array_equal(res["generic_id"], np.arange(37))
  np.testing.assert_allclose(res["generic_stream_twice"], 2.0 * ref["loss"], rtol=_RTOL)
  np.testing.assert_allclose(res["stream_loss"], ref["loss"][5:], rtol=_RTOL)
  np.testing.assert_allclose(res["stream_accuracy"], ref["accuracy"][5:], rtol=_RTOL, atol=1e-7)


def test_four_simulated_devices_match_single_device(tmp_path, reference):
  out = tmp_path / "four.npz"
  proc = subprocess.run([sys.executable, _WORKER, str(out)], env=_env(4), cwd=_ROOT,
                        capture_output=True, text=True, timeout=300)
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
  out = tmp_path / "two.npz"
  addr = f"127.0.0.1:{_free_port()}"
  procs = [subprocess.Popen([sys.executable, _WORKER, str(out), addr, "2", str(i)], env=_env(2),
                            cwd=_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  try:
    errs = [p.communicate(timeout=240)[1] for p in procs]
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
    evaluate.point_mesh(jax.devices() * 2, data_shards=3)
  mesh = evaluate.point_mesh()
  with pytest.raises(ValueError, match="no axis 'pts'"):
    evaluate.shard_points(lambda i: {"x": i}, mesh, point_axis="pts")
