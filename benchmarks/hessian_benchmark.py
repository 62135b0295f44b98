"""Cost of curvature: one HVP vs one gradient, and Lanczos steps, on the swiss-roll MLP.

  python -m benchmarks.hessian_benchmark                       # the paper's 200 train points
  python -m benchmarks.hessian_benchmark --num_examples=20000 --data_batch=5000

Prints one line per measurement: median wall time over --repeats (after a compile call), and
the HVP/gradient ratio (target <= 4: forward-over-reverse costs about 2-3 gradients). Not a
test: the numbers depend on the machine and its load.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags

from genviz_jax import data as data_lib
from genviz_jax import hessian
from genviz_jax import models

flags.DEFINE_integer("num_examples", 200, "training points (200 = the paper's train split)")
flags.DEFINE_integer("data_batch", 0, "examples per chunk; 0 = all at once")
flags.DEFINE_list("widths", ["23", "16", "26", "32", "28", "31"], "MLP hidden widths")
flags.DEFINE_integer("repeats", 20, "timed calls per measurement (median reported)")
flags.DEFINE_integer("lanczos_steps", 20, "Lanczos steps to time")
FLAGS = flags.FLAGS


def _median_time(fn, repeats):
  jax.block_until_ready(fn())  # compile
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def main(argv):
  del argv
  if FLAGS.num_examples == 200:
    batch = data_lib.swiss_roll().train
  else:
    batch = data_lib.swiss_roll_sample(jax.random.PRNGKey(0), FLAGS.num_examples)
  data = {"x": jnp.asarray(batch["x"]), "y": jnp.asarray(batch["y"])}
  model = models.MLP([int(w) for w in FLAGS.widths], 2)
  params = model.init(jax.random.PRNGKey(0), data["x"][:1])["params"]
  op = hessian.HessianOperator(models.metric_fn(model), params, data,
                               data_batch=FLAGS.data_batch or None)
  v = jax.random.normal(jax.random.PRNGKey(1), (op.dim,))
  print(f"device={jax.devices()[0].device_kind} params={op.dim} examples={FLAGS.num_examples} "
        f"data_batch={FLAGS.data_batch or FLAGS.num_examples}")
  t_grad = _median_time(op.loss_and_grad, FLAGS.repeats)
  t_hvp = _median_time(lambda: op.matvec(v), FLAGS.repeats)
  print(f"gradient {t_grad * 1e3:.3f} ms  hvp {t_hvp * 1e3:.3f} ms  ratio {t_hvp / t_grad:.2f}")
  m = FLAGS.lanczos_steps
  t0 = time.perf_counter()
  res = hessian.top_eigenpairs(op, k=1, num_steps=m)
  t_first = time.perf_counter() - t0
  t_lanczos = _median_time(
      lambda: hessian.top_eigenpairs(op, k=1, num_steps=m).eigenvalues, max(3, FLAGS.repeats // 5))
  print(f"lanczos {m} steps: {t_lanczos:.3f} s ({t_first:.2f} s with compile), "
        f"top eigenvalue {res.eigenvalues[0]:.6g} (residual {res.residuals[0]:.2g})")


if __name__ == "__main__":
  app.run(main)
