"""One XLA CPU device per core by default (genviz_jax.engine.host) and batch sizes from the
model's size (engine.sizes).

Each case runs in a fresh subprocess, since the device count is fixed when jax starts:
  default       import genviz_jax -> one device per usable core; default_mesh over them
  count         GENVIZ_JAX_HOST_DEVICES=3 -> 3 devices; a surface and basin radii with the
                default mesh equal a one-device run (surface rtol 1e-6, bisection radii exactly),
                and so does the top Hessian eigenvalue with the data split over the mesh
                (rtol 1e-4), with parameters committed to device 0 (as a restored checkpoint's are)
  user's choice XLA_FLAGS' device count wins; jax already started -> nothing changes
  bad value     GENVIZ_JAX_HOST_DEVICES=abc -> ValueError naming the value
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from genviz_jax.engine import host, sizes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code: str, **env_overrides):
  env = {k: v for k, v in os.environ.items() if k not in ("GENVIZ_JAX_HOST_DEVICES", "XLA_FLAGS")}
  env.update(env_overrides)
  return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300)


def test_default_is_one_device_per_usable_core():
  proc = _run("import genviz_jax, jax\n"
              "from genviz_jax.engine import host\n"
              "m = host.default_mesh()\n"
              "print(jax.local_device_count(), host.usable_cores(), 0 if m is None else m.size)")
  assert proc.returncode == 0, proc.stderr
  devices, cores, mesh = map(int, proc.stdout.split())
  assert devices == cores
  assert mesh == (cores if cores > 1 else 0)


_SAME_NUMBERS = r"""
import genviz_jax, jax, jax.numpy as jnp, numpy as np
from genviz_jax import basin, directions, engine, landscape, models, data
assert jax.local_device_count() == 3, jax.devices()
ds = data.swiss_roll()
model = models.MLP(widths=(16, 16), num_classes=2)
params = model.init(jax.random.key(0), jnp.ones((1, 2)))["params"]
params = jax.device_put(params, jax.devices()[0])  # committed, as restored checkpoints are
fn = models.metric_fn(model)
one = engine.point_mesh(jax.devices()[:1])
basis = directions.random_directions(jax.random.key(1), params, 2)
g = np.linspace(-1, 1, 7, dtype=np.float32)
coeffs = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
delta = engine.basis_delta(basis, coeffs)
a = engine.evaluate_points(fn, params, delta, len(coeffs), ds.train)
b = engine.evaluate_points(fn, params, delta, len(coeffs), ds.train, mesh=one)
np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-6)
spec = basin.RandomDirections(jax.random.key(2), 10)
kw = dict(threshold=float(a["loss"].min()) + 1.0, data=ds.train, chunk_size=2)
ra = basin.radii(fn, params, spec, **kw)
rb = basin.radii(fn, params, spec, mesh=one, **kw)
np.testing.assert_array_equal(ra.radius, rb.radius)
np.testing.assert_array_equal(ra.num_evals, rb.num_evals)
from genviz_jax import hessian  # data split over a mesh, params committed to device 0
top = lambda mesh: hessian.top_eigenpairs(hessian.HessianOperator(fn, params, ds.train, mesh=mesh),
                                          k=1, num_steps=20).eigenvalues
np.testing.assert_allclose(top(engine.default_mesh()), top(None), rtol=1e-4)
print("ok", engine.default_mesh().size)
"""


def test_three_devices_give_the_one_device_numbers():
  proc = _run(_SAME_NUMBERS, GENVIZ_JAX_HOST_DEVICES="3", JAX_PLATFORMS="cpu")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.split() == ["ok", "3"]


def test_the_users_choice_wins():
  proc = _run("import genviz_jax, jax; print(jax.local_device_count())",
              GENVIZ_JAX_HOST_DEVICES="3", XLA_FLAGS="--xla_force_host_platform_device_count=2")
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.strip() == "2"
  proc = _run("import jax; jax.numpy.ones(1).block_until_ready()\n"
              "import genviz_jax; print(jax.local_device_count())", GENVIZ_JAX_HOST_DEVICES="3")
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.strip() == "1"


def test_a_bad_setting_is_one_clear_error():
  proc = _run("import genviz_jax", GENVIZ_JAX_HOST_DEVICES="abc")
  assert proc.returncode != 0
  assert "ValueError: GENVIZ_JAX_HOST_DEVICES='abc'; allowed: auto, or a positive integer" in \
      proc.stderr
  with pytest.raises(ValueError, match="GENVIZ_JAX_HOST_DEVICES='0'"):
    host.requested_devices("0")
  assert host.requested_devices("auto") == host.usable_cores()
  assert host.requested_devices(" 5 ") == 5


def test_batch_sizes_follow_the_model_size():
  small = {"w": jnp.zeros((64, 64))}
  large = {"w": jnp.zeros((512, 512))}
  data = {"x": jnp.zeros((10_000, 2))}
  assert sizes.point_batch_for(small, None) == 8 and sizes.point_batch_for(large, None) == 1
  assert sizes.point_batch_for(large, 4) == 4
  assert sizes.data_batch_for(small, data, None) is None
  assert sizes.data_batch_for(large, data, None) == 2048
  assert sizes.data_batch_for(large, {"x": jnp.zeros((3000, 2))}, None) is None
  assert sizes.data_batch_for(large, data, 100) == 100
  with pytest.raises(ValueError, match="point_batch=0"):
    sizes.point_batch_for(small, 0)
