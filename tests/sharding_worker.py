"""Worker for tests/test_sharding.py: every evaluator on a multi-device (or multi-process) CPU mesh.

Usage (XLA_FLAGS=--xla_force_host_platform_device_count=N must be set by the caller, before jax
is imported):
  python tests/sharding_worker.py OUT.npz                      one process, all local devices
  python tests/sharding_worker.py OUT.npz ADDR NUM_PROC PROC_ID   jax.distributed over 127.0.0.1

`evaluate_all(mesh, data_mesh)` runs the engine and every public evaluator (landscape, basin radii,
Hessian eigenvalues / trace / HVP, PAC-Bayes σ', ε-sharpness, ensemble evaluation, decision
boundaries); the test runs it once with mesh=None in its own process (the single-device
reference) and compares. Process 0 writes the results.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def problem():
  """A small MLP on 203 swiss-roll points (odd N: data shards are ragged) and 37 basin points."""
  import jax
  import jax.numpy as jnp

  from genviz_jax import data as data_lib
  from genviz_jax import engine
  from genviz_jax import models

  ds = data_lib.swiss_roll(num_train=203)
  train = {k: jnp.asarray(v) for k, v in ds.train.items()}
  model = models.MLP(widths=(16, 16), num_classes=2)
  params = model.init(jax.random.key(0), jnp.ones((1, 2)))["params"]
  radii = jnp.linspace(0.0, 2.0, 37)
  delta_fn = engine.direction_delta(jax.random.key(7), params, radii)
  return model, models.metric_fn(model), params, delta_fn, train


def _engine(fn, params, delta_fn, train, mesh, data_mesh):
  from genviz_jax import engine
  out = {}
  for name, m in (("points", mesh), ("points_data", data_mesh)):
    res = engine.evaluate_points(fn, params, delta_fn, 37, train, point_batch=3, data_batch=40,
                                 chunk_size=12, mesh=m)
    out.update({f"{name}_{k}": v for k, v in res.items()})
  res = engine.evaluate_points(fn, params, delta_fn, 32, train, start=5, mesh=data_mesh,
                               point_batch=2, chunk_size=8)
  out.update({f"stream_{k}": v for k, v in res.items()})
  return out


def _evaluators(model, fn, params, train, mesh, data_mesh):
  import jax
  import jax.numpy as jnp
  import numpy as np

  from genviz_jax import basin, boundary, directions, ensemble, hessian, landscape, sharpness
  out = {}
  d2 = directions.random_directions(jax.random.key(1), params, 2)
  out["plane"] = landscape.plane(fn, params, d2, num=5, data=train, mesh=data_mesh)[1]["loss"]
  r = basin.radii(fn, params, basin.RandomDirections(jax.random.key(5), 12), threshold=0.5,
                  relative=True, data=train, two_sided=True, chunk_size=2, mesh=mesh)
  out["radii"], out["radii_norm"] = r.radius, r.direction_norm
  r = basin.radii(fn, params, basin.RandomDirections(jax.random.key(5), 6), threshold=0.5,
                  relative=True, data=train, chunk_size=2, cache_directions=False, mesh=mesh)
  out["radii_regenerated"] = r.radius
  op = hessian.HessianOperator(fn, params, train, data_batch=40, mesh=mesh)
  out["top_eigenvalues"] = hessian.top_eigenpairs(op, 2, num_steps=20).eigenvalues
  out["trace_samples"] = hessian.hutchinson_trace(op, 4).samples
  v = jax.random.normal(jax.random.key(3), (op.dim,))
  out["hvp"] = np.asarray(op.matvec(v))
  s = sharpness.flatness_sigma(fn, params, train, num_samples=8, num_bisection=3, mesh=mesh)
  out["sigma_history"] = np.asarray([h[1] for h in s.history])
  e = sharpness.eps_sharpness(fn, params, train, num_steps=3, num_random_starts=1, mesh=mesh)
  out["eps_per_start"] = e.per_start
  stacked = jax.tree.map(lambda p, d: jnp.stack([p, p + 0.3 * d[0], p - 0.2 * d[1]]), params, d2)
  many = ensemble.evaluate_many(model, stacked, train, mesh=mesh)
  out["ensemble_loss"], out["ensemble_accuracy"] = many["loss"], many["accuracy"]
  logits = boundary.flax_logits(model, {})
  out["boundary"] = boundary.predictions(logits, stacked, (-3.0, 3.0, -3.0, 3.0), resolution=9,
                                         stacked=True, mesh=mesh)
  return out


def evaluate_all(mesh=None, data_mesh=None) -> dict:
  """{name: np.ndarray} of the engine and every evaluator on `problem()`."""
  import numpy as np
  model, fn, params, delta_fn, train = problem()
  out = _engine(fn, params, delta_fn, train, mesh, data_mesh)
  out.update(_evaluators(model, fn, params, train, mesh, data_mesh))
  return {k: np.asarray(v) for k, v in out.items()}


def main(argv):
  out_path = argv[1]
  if len(argv) > 2:
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=argv[2], num_processes=int(argv[3]),
                               process_id=int(argv[4]), initialization_timeout=60)
  import jax
  import numpy as np

  from genviz_jax import engine
  res = evaluate_all(engine.point_mesh(), engine.point_mesh(data_shards=2))
  res["num_devices"] = np.array(jax.device_count())
  res["num_processes"] = np.array(jax.process_count())
  if jax.process_index() == 0:
    np.savez(out_path, **res)
  if len(argv) > 2:
    jax.distributed.shutdown()


if __name__ == "__main__":
  main(sys.argv)
