"""Which devices a job shards its parameter points over.

A job shards when its config allows it (`config.shard`), this process sees several local devices,
and it is the only process (a multi-process run builds its own mesh and calls the evaluators).
"""

from __future__ import annotations

import jax


def point_mesh_for(config):
  """A mesh over every local device, or None (one device, sharding off, or several processes)."""
  if not (bool(config.get("shard", True)) and jax.local_device_count() > 1
          and jax.process_count() == 1):
    return None
  from genviz_jax import engine
  return engine.point_mesh()

