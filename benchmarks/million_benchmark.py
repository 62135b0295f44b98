"""A million-direction basin sweep on the paper's swiss-roll minimum, with its checks.

  python benchmarks/million_benchmark.py                          # 10^6 directions
  python benchmarks/million_benchmark.py --num_directions=100000  # peak memory at 10^5, to compare
  python benchmarks/million_benchmark.py --store=runs/million     # resumable (rerun to resume)

Trains the swiss-roll MLP 2 -> [23, 16, 26, 32, 28, 31] -> 2 on its 200 training points
(basin_benchmark.train_minimum, 3000 full-batch Adam steps), then, with the library's defaults
(one XLA CPU device per core, points over all of them, the engine's batch sizes):
  1. analytic check: L(θ) = ½||θ||² along Gaussian directions d, threshold τ: the radius is
     sqrt(2τ)/||d||; both root finders must land within rtol 1e-4 of it (printed: the largest
     relative error of each);
  2. the sweep: basin.radii along --num_directions filter-normalized directions, train loss
     crossing 1.0, rtol 1e-4, method "chandrupatla" (safeguarded interpolation), chunks stored in
     a basin.ChunkStore; prints progress, wall time (and the time of the first chunk, which
     includes compilation), evaluations per direction, directions/s and the peak resident memory;
  3. agreement: bisection on the first --compare directions (the same directions: direction k is
     a function of (key, k)), started from the library's default r_init 0.125; prints the largest
     relative radius difference.
"A bracket started from the radii seen so far": --pilot directions are solved first (other
directions, inside the timed wall) and their median radius becomes r_init of the sweep, so the
first bracketing radius lands near the typical root.
Peak memory is the process's maximum RSS (it holds the result arrays, 22 bytes per direction);
compare it across --num_directions to see what grows.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import genviz_jax  # noqa: E402,F401  (configures one XLA CPU device per core before jax runs)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from basin_benchmark import train_minimum  # noqa: E402
from genviz_jax import basin, models  # noqa: E402


def peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def analytic_errors(num: int, rtol: float) -> dict[str, float]:
  """Largest relative error of each method against sqrt(2τ)/||d|| on L = ½||θ||²."""
  params = {"w": jnp.zeros((40, 30)), "b": jnp.zeros((30,))}
  loss = lambda p: 0.5 * sum(jnp.sum(x ** 2) for x in jax.tree.leaves(p))
  tau = 0.5
  out = {}
  for method in ("bisection", "chandrupatla"):
    r = basin.radii(loss, params, basin.RandomDirections(jax.random.key(7), num, norm="none",
                                                         ignore_1d=False),
                    threshold=tau, rtol=rtol, r_init=0.125, method=method)
    exact = np.sqrt(2 * tau) / r.direction_norm.astype(np.float64)
    out[method] = float(np.max(np.abs(r.radius / exact - 1)))
  return out


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--num_directions", type=int, default=1_000_000)
  ap.add_argument("--compare", type=int, default=10_000, help="directions re-solved by bisection")
  ap.add_argument("--chunk_size", type=int, default=2048, help="directions per chunk and device")
  ap.add_argument("--store", default="", help="ChunkStore folder (default: a temporary one)")
  ap.add_argument("--pilot", type=int, default=2048,
                  help="directions of a pilot sweep (other directions, timed with the sweep) whose "
                       "median radius becomes the sweep's first bracketing radius r_init; 0: "
                       "r_init 0.125, the library's default")
  ap.add_argument("--train_steps", type=int, default=3000)
  args = ap.parse_args()
  for name in ("num_directions", "compare", "chunk_size", "train_steps"):
    if getattr(args, name) <= 0:
      ap.error(f"--{name}={getattr(args, name)} must be a positive integer")
  if args.pilot < 0:
    ap.error(f"--pilot={args.pilot} must be >= 0")
  rtol = 1e-4
  print(f"jax {jax.__version__}, {jax.device_count()} x {jax.devices()[0].device_kind}, "
        f"{os.cpu_count()} cores", flush=True)
  errs = analytic_errors(2000, rtol)
  print("analytic quadratic (2000 directions, rtol 1e-4): largest relative radius error " +
        ", ".join(f"{m} {e:.2e}" for m, e in errs.items()), flush=True)

  t = time.time()
  ds, model, params = train_minimum(args.train_steps)
  fn = models.metric_fn(model)
  print(f"trained {args.train_steps} steps in {time.time() - t:.1f} s; peak RSS "
        f"{peak_rss_mb():.0f} MB before the sweep", flush=True)

  store_dir = args.store or tempfile.mkdtemp(prefix="million_")
  k = args.num_directions
  kw = dict(threshold=1.0, data=ds.train, rtol=rtol, chunk_size=args.chunk_size)
  marks = {"first": None, "next": 0.1}
  t0 = time.time()
  if args.pilot:
    pilot = basin.radii(fn, params, basin.RandomDirections(jax.random.key(1), args.pilot),
                        method="chandrupatla", **kw)
    kw["r_init"] = float(np.median(pilot.radius))
    print(f"pilot: {args.pilot} directions in {time.time() - t0:.1f} s (compilation included), "
          f"{pilot.num_evals.mean():.2f} evaluations per direction; r_init = median radius "
          f"{kw['r_init']:.4f}", flush=True)

  def progress(done, total, arrays):
    if marks["first"] is None:
      marks["first"] = time.time() - t0
    if done / total >= marks["next"] or done == total:
      print(f"  {done}/{total} directions, {time.time() - t0:.0f} s", flush=True)
      marks["next"] = done / total + 0.1

  r = basin.radii(fn, params, basin.RandomDirections(jax.random.key(0), k), method="chandrupatla",
                  store=basin.ChunkStore(store_dir), on_chunk=progress, **kw)
  wall = time.time() - t0
  e = r.num_evals
  print(f"chandrupatla, {k} directions: {wall:.1f} s ({marks['first']:.1f} s to the first chunk, "
        f"compilation and pilot included), {k / wall:.0f} directions/s, "
        f"{e.mean():.2f} evaluations per direction (max {e.max()}), censored {r.num_censored}, unconverged "
        f"{int(np.sum(~r.converged))}; peak RSS {peak_rss_mb():.0f} MB", flush=True)

  m = min(args.compare, k)
  t = time.time()
  default_init = {key: v for key, v in kw.items() if key != "r_init"}
  b = basin.radii(fn, params, basin.RandomDirections(jax.random.key(0), m), method="bisection",
                  **default_init)
  rel = np.abs(r.radius[:m].astype(np.float64) / b.radius - 1)
  print(f"bisection on the first {m} directions ({time.time() - t:.1f} s, "
        f"{b.num_evals.mean():.2f} evaluations per direction): largest relative radius "
        f"difference {rel.max():.2e} (mean {rel.mean():.2e}; rtol {rtol:g})", flush=True)
  v = r.volume(num_bootstrap=0)
  print(f"log10 volume (filter-normalized, n = {r.dim}) {v.log10_volume:.2f}, ESS "
        f"{v.effective_sample_size:.1f}", flush=True)


if __name__ == "__main__":
  main()
