"""Worker for tests/test_sharding.py: runs the engine on a multi-device (or multi-process) CPU mesh.

Usage (XLA_FLAGS=--xla_force_host_platform_device_count=N must be set by the caller, before jax
is imported):
  python tests/sharding_worker.py OUT.npz                      one process, all local devices
  python tests/sharding_worker.py OUT.npz ADDR NUM_PROC PROC_ID   jax.distributed over 127.0.0.1

Writes (process 0 only) the metrics of `problem()` evaluated several ways: points sharded,
points x data sharded (ragged data), the generic shard_points wrapper, and the streaming path.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def problem():
  """A small MLP on 203 swiss-roll points (odd N: data shards are ragged) and 37 basin points."""
  import jax
  import jax.numpy as jnp

  from genviz_jax import data as data_lib
  from genviz_jax import evaluate
  from genviz_jax import models

  ds = data_lib.swiss_roll(num_train=203)
  train = {k: jnp.asarray(v) for k, v in ds.train.items()}
  model = models.MLP(widths=(16, 16), num_classes=2)
  params = model.init(jax.random.key(0), jnp.ones((1, 2)))["params"]
  radii = jnp.linspace(0.0, 2.0, 37)
  delta_fn = evaluate.direction_delta_fn(jax.random.key(7), params, radii)
  return models.metric_fn(model), params, delta_fn, train


def main(argv):
  out_path = argv[1]
  if len(argv) > 2:
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=argv[2], num_processes=int(argv[3]),
                               process_id=int(argv[4]), initialization_timeout=60)
  import jax
  import jax.numpy as jnp
  import numpy as np

  from genviz_jax import evaluate

  fn, params, delta_fn, train = problem()
  k = 37
  res = {"num_devices": np.array(jax.device_count()),
         "num_processes": np.array(jax.process_count())}
  mesh = evaluate.point_mesh()
  mesh2 = evaluate.point_mesh(data_shards=2)

  def run_sharded(m, data_axis):
    f = jax.jit(lambda idx: evaluate.sharded_point_metrics(
        fn, params, delta_fn, idx, train, mesh=m, data_axis=data_axis, point_batch=3,
        data_batch=40))
    return evaluate.to_host(f(jnp.arange(k)))

  for name, v in run_sharded(mesh, None).items():
    res[f"points_{name}"] = v
  for name, v in run_sharded(mesh2, "data").items():
    res[f"points_data_{name}"] = v

  # The generic wrapper around an arbitrary per-point function (what the basin helper uses).
  def per_point(idx):
    loss = evaluate.point_metrics(fn, params, delta_fn, idx, train, point_batch=2)["loss"]
    return {"twice": 2.0 * loss, "id": idx.astype(jnp.float32)}

  g = jax.jit(evaluate.shard_points(per_point, mesh))
  for name, v in evaluate.to_host(g(jnp.arange(k))).items():
    res[f"generic_{name}"] = v

  # The streaming helper around the same generic function, sharded over the mesh.
  parts = [out["twice"] for _, _, out in evaluate.stream_points(
      lambda idx, _: per_point(idx), k, None, chunk_size=12, unit=2, mesh=mesh)]
  res["generic_stream_twice"] = np.concatenate(parts)

  streamed = evaluate.evaluate_points(fn, params, delta_fn, k - 5, train, start=5, mesh=mesh2,
                                      data_axis="data", point_batch=2, chunk_size=8)
  for name, v in streamed.items():
    res[f"stream_{name}"] = v

  if jax.process_index() == 0:
    np.savez(out_path, **res)
  if len(argv) > 2:
    jax.distributed.shutdown()


if __name__ == "__main__":
  main(sys.argv)
