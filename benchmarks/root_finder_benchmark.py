"""Basin radii by bisection vs interpolation (method="chandrupatla") on the paper's swiss-roll MLP.

  python benchmarks/root_finder_benchmark.py                    # 10,000 directions
  python benchmarks/root_finder_benchmark.py --num_directions=2000 --train_steps=2000

Trains the swiss-roll MLP 2 -> [23, 16, 26, 32, 28, 31] -> 2 on its 200 training points in-process
(benchmarks/basin_benchmark.train_minimum: full-batch Adam), then sweeps the same filter-normalized
directions with each root finder (train loss crossing 1.0, r_init 0.125, r_max 64, rtol 1e-4),
each timed after a compile-and-warm-up sweep of one chunk of other directions. Prints, per method,
evaluations per direction (mean, max) and wall time; then the largest relative radius difference
and the log10-volume difference between the methods (each radius is within rtol above its
crossing, so log V differs by at most about n·rtol/ln 10).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from basin_benchmark import train_minimum  # noqa: E402
from genviz_jax import basin, models  # noqa: E402

METHODS = ("bisection", "chandrupatla")


def sweep(fn, params, data, method: str, args) -> tuple[basin.Radii, float]:
  """(radii, wall seconds) of the timed sweep, after a warm-up sweep of one other chunk."""
  kw = dict(threshold=args.threshold, data=data, chunk_size=args.chunk_size,
            point_batch=args.point_batch, rtol=args.rtol, method=method)
  basin.radii(fn, params, basin.RandomDirections(jax.random.key(99), args.chunk_size), **kw)
  t = time.time()
  res = basin.radii(fn, params, basin.RandomDirections(jax.random.key(0), args.num_directions),
                    **kw)
  return res, time.time() - t


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--num_directions", type=int, default=10000)
  ap.add_argument("--chunk_size", type=int, default=2048)
  ap.add_argument("--point_batch", type=int, default=8)
  ap.add_argument("--threshold", type=float, default=1.0)
  ap.add_argument("--rtol", type=float, default=1e-4)
  ap.add_argument("--train_steps", type=int, default=3000)
  args = ap.parse_args()

  t = time.time()
  ds, model, params = train_minimum(args.train_steps)
  fn = models.metric_fn(model)
  centre = basin.centre_metrics(fn, params, ds.train)
  print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}; trained "
        f"{args.train_steps} steps in {time.time() - t:.1f} s: train loss {centre['loss']:.2e}; "
        f"{args.num_directions} directions, chunk {args.chunk_size}, rtol {args.rtol:g}",
        flush=True)
  res = {}
  for method in METHODS:
    r, wall = sweep(fn, params, ds.train, method, args)
    res[method] = r
    e = r.num_evals
    print(f"{method:>12}: {e.mean():.2f} evaluations per direction (max {e.max()}), "
          f"{wall:.2f} s, {args.num_directions / wall:.0f} directions/s, censored "
          f"{r.num_censored}, unconverged {int(np.sum(~r.converged))}", flush=True)
  old, new = res["bisection"], res["chandrupatla"]
  rel = np.abs(new.radius.astype(np.float64) / old.radius - 1)
  v_old, v_new = (r.volume(num_bootstrap=0).log10_volume for r in (old, new))
  print(f"evaluations ratio {new.num_evals.mean() / old.num_evals.mean():.3f}; max relative radius "
        f"difference {rel.max():.2e} (mean {rel.mean():.2e}); log10 V bisection {v_old:.3f}, "
        f"chandrupatla {v_new:.3f}, difference {v_new - v_old:+.3f} (n = {new.dim}, "
        f"n·log10(1 + rtol) = {new.dim * np.log10(1 + args.rtol):.3f})", flush=True)


if __name__ == "__main__":
  main()
