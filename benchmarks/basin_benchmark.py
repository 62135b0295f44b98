"""Time of a basin-radius sweep (and a 51x51 surface) on the paper's swiss-roll MLP.

  python benchmarks/basin_benchmark.py                       # 10,000 directions
  python benchmarks/basin_benchmark.py --num_directions=1000 --chunk_size=500

Trains the swiss-roll MLP 2 -> [23, 16, 26, 32, 28, 31] -> 2 on its 200 training points (clean,
full-batch Adam, a few thousand steps) and then times, separately from compilation:
  - basin.radii along 10,000 filter-normalized directions, train loss crossing 1.0 (the authors'
    threshold), bracketing + bisection to rtol 1e-4;
  - landscape.plane: a 51x51 grid of train loss and accuracy.
Prints one line per measurement: wall seconds, directions/s, parameter points/s (every
bracketing/bisection evaluation is one point over the 200 examples) and model GFLOP/s
(2 FLOPs per multiply-add of the forward pass).
Issue 3 target: the 10,000-direction sweep in under 20 s on the 2-core CPU.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from genviz_jax import basin, data, landscape, models, objectives  # noqa: E402

WIDTHS = (23, 16, 26, 32, 28, 31)


def train_minimum(steps: int, seed: int = 0):
  ds = data.swiss_roll()
  model = models.MLP(widths=WIDTHS, num_classes=2)
  params = model.init(jax.random.key(seed), ds.train["x"][:1])["params"]
  tx = optax.chain(optax.clip_by_global_norm(8.0), optax.adam(0.005))
  x, y = jnp.asarray(ds.train["x"]), jnp.asarray(ds.train["y"])

  def loss(p):
    return jnp.mean(objectives.cross_entropy(model.apply({"params": p}, x), y))

  @jax.jit
  def run(p):
    def step(carry, _):
      p, s = carry
      g = jax.grad(loss)(p)
      u, s = tx.update(g, s, p)
      return (optax.apply_updates(p, u), s), None
    (p, _), _ = jax.lax.scan(step, (p, tx.init(p)), None, length=steps)
    return p

  params = run(params)
  return ds, model, params


def forward_flops(params, num_examples: int) -> float:
  """2 · (multiply-adds of the Dense layers) per example, times the examples."""
  macs = sum(int(np.prod(l.shape)) for l in jax.tree.leaves(params) if np.ndim(l) == 2)
  return 2.0 * macs * num_examples


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--num_directions", type=int, default=10000)
  ap.add_argument("--chunk_size", type=int, default=2048)
  ap.add_argument("--point_batch", type=int, default=8)
  ap.add_argument("--threshold", type=float, default=1.0)
  ap.add_argument("--train_steps", type=int, default=3000)
  ap.add_argument("--grid", type=int, default=51)
  ap.add_argument("--skip_surface", action="store_true")
  args = ap.parse_args()

  t = time.time()
  ds, model, params = train_minimum(args.train_steps)
  fn = models.metric_fn(model)
  centre = basin.centre_metrics(fn, params, ds.train)
  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}; trained "
        f"{args.train_steps} steps in {time.time() - t:.1f} s: train loss {centre['loss']:.2e}, "
        f"accuracy {centre['accuracy']:.3f}; {sum(np.size(l) for l in jax.tree.leaves(params))} "
        "parameters", flush=True)

  flops = forward_flops(params, len(ds.train["y"]))
  kw = dict(threshold=args.threshold, data=ds.train, chunk_size=args.chunk_size,
            point_batch=args.point_batch)
  # Compile (and warm up) on one chunk of other directions, then time the sweep itself.
  t = time.time()
  basin.radii(fn, params, basin.RandomDirections(jax.random.key(99), args.chunk_size), **kw)
  compile_s = time.time() - t
  t = time.time()
  res = basin.radii(fn, params, basin.RandomDirections(jax.random.key(0), args.num_directions),
                    **kw)
  wall = time.time() - t
  points = int(np.sum(res.num_evals))
  vol = res.volume(num_bootstrap=200)
  print(f"basin sweep: {args.num_directions} directions in {wall:.2f} s (+{compile_s:.1f} s "
        f"compile and first chunk), {args.num_directions / wall:.0f} directions/s, "
        f"{points / wall:.0f} points/s ({points} evaluations, {points / res.num_directions:.1f} "
        f"per direction), {points * flops / wall / 1e9:.1f} model GFLOP/s; chunk "
        f"{args.chunk_size}, point_batch {args.point_batch}", flush=True)
  print(f"  radius median {np.median(res.radius):.4f}, censored {res.num_censored}, "
        f"log10 V = {vol.log10_volume:.1f} ({vol.measure}), ESS {vol.effective_sample_size:.2f}",
        flush=True)

  if not args.skip_surface:
    basis = landscape.random_basis(jax.random.key(1), params, 2)
    g = args.grid
    landscape.plane(fn, params, basis, num=g, data=ds.train)  # compile
    t = time.time()
    landscape.plane(fn, params, basis, num=g, data=ds.train)
    wall = time.time() - t
    print(f"surface {g}x{g}: {wall:.2f} s, {g * g / wall:.0f} points/s, "
          f"{g * g * flops / wall / 1e9:.1f} model GFLOP/s", flush=True)


if __name__ == "__main__":
  main()
