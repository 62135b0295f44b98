"""Every CPU core at work by default: one XLA CPU device per core, and the mesh the engine uses.

Why: one XLA CPU device runs a small model's batched matmuls on one core. Measured on a 2-core
CPU (benchmarks/engine_benchmark.py, one run), swiss-roll MLP 2->[23,16,26,32,28,31]->2 on 200
points: 17.6k points/s on one device, 30.7k with the points split over two devices (one per
core), against a float32 GEMM of 113 GFLOP/s (1.47 MFLOP per point: 0.23 -> 0.40 of GEMM).
Large fused ops (a 2048² GEMM) are threaded either way.

jax makes one CPU device per process unless `jax_num_cpu_devices` (or XLA_FLAGS'
--xla_force_host_platform_device_count) is set before its backends start. `configure()` runs when
genviz_jax is imported and sets it to the number of usable cores, unless

  - the environment variable GENVIZ_JAX_HOST_DEVICES says otherwise ("auto": the default; a
    positive integer: that many devices; "1" turns the split off),
  - the user already chose (XLA_FLAGS names the device count, or jax_num_cpu_devices is set), or
  - jax has already run something (its backends are up; then nothing changes).

Devices other than the first are used only by code that asks for them: jit still runs on device 0,
and the engine's point evaluations (`default_mesh`) split points over the local CPU devices when
the default backend is the CPU and this is the only process. On a GPU or TPU nothing changes.
"""

from __future__ import annotations

import functools
import os

import jax

from genviz_jax.engine import sharding

ENV = "GENVIZ_JAX_HOST_DEVICES"
_FLAG = "xla_force_host_platform_device_count"


def usable_cores() -> int:
  """CPU cores this process may run on (its affinity mask where the OS has one)."""
  try:
    return max(1, len(os.sched_getaffinity(0)))
  except AttributeError:  # macOS, Windows
    return max(1, os.cpu_count() or 1)


def requested_devices(setting: str | None = None) -> int:
  """Host devices asked for by GENVIZ_JAX_HOST_DEVICES (or `setting`): 'auto' -> usable_cores().

  Raises:
    ValueError: a value that is neither 'auto' nor a positive integer.
  """
  text = (os.environ.get(ENV, "auto") if setting is None else setting).strip()
  if text.lower() == "auto" or text == "":
    return usable_cores()
  try:
    value = int(text)
  except ValueError:
    value = 0
  if value <= 0:
    raise ValueError(f"{ENV}={text!r}; allowed: auto, or a positive integer (1 turns it off)")
  return value


def user_chose() -> bool:
  """True when XLA_FLAGS or jax_num_cpu_devices already fix the CPU device count."""
  if _FLAG in os.environ.get("XLA_FLAGS", ""):
    return True
  return int(getattr(jax.config, "jax_num_cpu_devices", -1)) > 0


def configure() -> int | None:
  """Ask jax for one CPU device per core (module docstring). Returns the count set, or None
  when it left jax as it was (the user chose, one device wanted, or jax already started)."""
  count = requested_devices()
  if count <= 1 or user_chose():
    return None
  try:
    jax.config.update("jax_num_cpu_devices", count)
  except RuntimeError:  # backends already initialized: the device count is fixed now
    return None
  return count


@functools.lru_cache(maxsize=None)
def _cpu_mesh(devices: tuple):
  return sharding.point_mesh(list(devices))


def default_mesh():
  """The mesh point evaluations use when the caller passes none: every local CPU device when the
  default backend is the CPU, there are several and this is the only process; else None (one
  device). Pass mesh=engine.point_mesh(jax.devices()[:1]) to evaluate on one device."""
  if jax.process_count() != 1 or jax.default_backend() != "cpu":
    return None
  devices = tuple(jax.local_devices(backend="cpu"))
  return _cpu_mesh(devices) if len(devices) > 1 else None


def resolve_mesh(mesh):
  """`mesh`, or default_mesh() when it is None."""
  return default_mesh() if mesh is None else mesh
