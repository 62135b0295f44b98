"""Throughput of the evaluation engine next to a plain Python loop, in one run.

Prints, for (a) the paper's swiss-roll MLP 2->[23,16,26,32,28,31]->2 on its 200 training points
and (b) a 2->512->512->2 MLP on 10,000 points: parameter points per second and model FLOP/s of
the engine (engine.evaluate_points as a user calls it, at several point batches, and sharded
over host devices) next to a plain Python loop of one
jitted evaluation per point (what peer toolkits do), the machine's float32 GEMM FLOP/s, and the
GEMM-relative figure; then the wall time (compile included) of a 10,000-direction evaluation
(fresh filter-normalized directions, one radius each) and of a 51x51 surface on (a).

  python -m benchmarks.engine_benchmark                      # CPU, the issue's sizes
  python -m benchmarks.engine_benchmark --platform=gpu      # larger default sizes
  python -m benchmarks.engine_benchmark --cases=a --directions=100000

Model FLOPs are XLA's cost analysis of one evaluation (forward pass + loss) times points/s.
The loop baseline is favoured: it dispatches asynchronously and blocks once at the end (peers
also copy every loss to the host). On CPU the host is split into one XLA device per core
(--host_devices) and the engine is also timed sharded over them; the loop and the single-device
rows use device 0. All methods and the GEMM are timed in interleaved repeats and the best of
--repeats is reported: on a shared machine the absolute numbers move with the load.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time


def _parse(argv):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--platform", default=None, help="cpu, gpu or tpu (default: jax's default)")
  p.add_argument("--cases", default="a,b", help="comma list of a, b")
  p.add_argument("--points_a", type=int, default=None, help="engine points for case a")
  p.add_argument("--loop_points_a", type=int, default=None, help="loop points for case a")
  p.add_argument("--points_b", type=int, default=None, help="engine points for case b")
  p.add_argument("--loop_points_b", type=int, default=None, help="loop points for case b")
  p.add_argument("--data_b", type=int, default=10000, help="examples for case b")
  p.add_argument("--width_b", type=int, default=512, help="hidden width for case b")
  p.add_argument("--directions", type=int, default=10000, help="directions on case a (0: skip)")
  p.add_argument("--grid", type=int, default=51, help="surface grid side on case a (0: skip)")
  p.add_argument("--gemm", type=int, default=0, help="GEMM size (0: 2048 on CPU, 8192 else)")
  p.add_argument("--repeats", type=int, default=3, help="timed repeats (best is reported)")
  p.add_argument("--point_batches", default="1,4,8,16",
                 help="comma list of engine point_batch values to time")
  p.add_argument("--data_batches", default="0,2048",
                 help="comma list of engine data_batch values (0: all examples at once) timed "
                      "with each point batch, where smaller than the data")
  p.add_argument("--host_devices", type=int, default=0,
                 help="CPU only: split the host into this many XLA devices and also time the "
                      "engine sharded over them (0: one per core; 1: off)")
  args = p.parse_args(argv)
  for name in ("points_a", "loop_points_a", "points_b", "loop_points_b", "data_b", "width_b",
               "repeats"):
    if getattr(args, name) is not None and getattr(args, name) <= 0:
      p.error(f"--{name}={getattr(args, name)} must be a positive integer")
  for name in ("directions", "grid", "gemm", "host_devices"):
    if getattr(args, name) < 0:
      p.error(f"--{name}={getattr(args, name)} must be >= 0")
  cases = [c for c in args.cases.split(",") if c]
  if not cases or any(c not in ("a", "b") for c in cases):
    p.error(f"--cases={args.cases!r} must be a comma list of a, b")
  args.cases = cases
  for name, lo in (("point_batches", 1), ("data_batches", 0)):
    text = getattr(args, name)
    try:
      values = [int(v) for v in text.split(",") if v]
    except ValueError:
      values = []
    if not values or min(values) < lo:
      p.error(f"--{name}={text!r} must be a comma list of integers >= {lo}")
    setattr(args, name, values)
  return args


_CPU_SIZES = {"points_a": 8192, "loop_points_a": 1000, "points_b": 32, "loop_points_b": 8}
_ACCEL_SIZES = {"points_a": 262144, "loop_points_a": 2000, "points_b": 2048,
                "loop_points_b": 256}


def _best_time(fn, repeats):
  import jax
  jax.block_until_ready(fn())  # compile / warm up
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    best = min(best, time.perf_counter() - t0)
  return best


def gemm_bench(n):
  """(run, FLOPs of one run) for an n x n float32 matrix product."""
  import jax
  import jax.numpy as jnp
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
  f = jax.jit(lambda a, b: a @ b)
  return (lambda: f(a, b)), 2.0 * n ** 3


def _case(name, widths, data, points, loop_points, args, gemm):
  import jax
  import jax.numpy as jnp
  import numpy as np

  from genviz_jax import directions, engine, models, trees

  model = models.MLP(widths=tuple(widths), num_classes=2)
  params = model.init(jax.random.key(0), jnp.ones((1, 2)))["params"]
  fn = models.metric_fn(model)
  basis = directions.random_directions(jax.random.key(1), params, 2)
  coeffs = jax.random.uniform(jax.random.key(2), (points, 2), minval=-1.0, maxval=1.0)
  ca = jax.jit(fn).lower(params, data).compile().cost_analysis()
  flops = float((ca[0] if isinstance(ca, (list, tuple)) else ca)["flops"])
  n_params = trees.num_params(params)
  print(f"\n({name}) MLP 2->{list(widths)}->2, {n_params} parameters, "
        f"{engine.data_size(data)} examples, {flops / 1e6:.2f} MFLOP per point")

  # Plain loop: one jitted evaluation per point, θ + Σ α_i d_i formed inside the jit.
  @jax.jit
  def one(c):
    p = jax.tree.map(lambda a, d: a + jnp.tensordot(c, d, axes=1), params, basis)
    return fn(p, data)

  loop_rows = list(coeffs[:loop_points])  # device arrays, sliced before timing
  methods = [("python loop of jit(eval)", loop_points, lambda: [one(c) for c in loop_rows], None)]
  delta = engine.basis_delta(basis, coeffs)
  n_data = engine.data_size(data)
  settings = [(f"engine.evaluate_points, point_batch={pb}" + (f", data_batch={db}" if db else ""),
               (pb, db or None), None)
              for pb in args.point_batches for db in args.data_batches if db < n_data]
  cpus = [d for d in jax.devices() if d.platform == "cpu"]
  if jax.devices()[0].platform == "cpu" and len(cpus) > 1:
    settings.append((f"engine, points over {len(cpus)} host devices, point_batch=8", (8, None),
                     engine.point_mesh(cpus)))
  for label, (pb, db), mesh in settings:
    # As a user calls it: the whole table in one call, results copied to the host.
    run = functools.partial(engine.evaluate_points, fn, params, delta, points, data,
                            point_batch=pb, data_batch=db, chunk_size=points, mesh=mesh)
    methods.append((label, points, run, (pb, db, mesh)))
  # Interleaved repeats, best of each: neighbours' load hits every method, GEMM included, alike.
  gemm_run, gemm_ops = gemm
  methods.append(("float32 GEMM", 1, gemm_run, None))
  for _, _, run, _ in methods:
    jax.block_until_ready(run())
  best = [float("inf")] * len(methods)
  for _ in range(args.repeats):
    for i, (_, _, run, _) in enumerate(methods):
      t0 = time.perf_counter()
      jax.block_until_ready(run())
      best[i] = min(best[i], time.perf_counter() - t0)
  gemm_rate = gemm_ops / best[-1]
  methods, best = methods[:-1], best[:-1]
  print(f"  float32 GEMM in the same repeats: {gemm_rate / 1e9:.1f} GFLOP/s")
  gemm = gemm_rate
  rates = [m[1] / t for m, t in zip(methods, best)]
  rows = [(m[0], r, m[3]) for m, r in zip(methods, rates)]
  loop_rate = rates[0]
  print(f"  {'method':66s} {'points/s':>10s} {'GFLOP/s':>8s} {'xGEMM':>6s} {'xloop':>6s}")
  for label, rate, _ in rows:
    print(f"  {label:66s} {rate:10.1f} {rate * flops / 1e9:8.2f} {rate * flops / gemm:6.3f} "
          f"{rate / loop_rate:6.2f}")
  point_batch, data_batch, mesh = max(rows[1:], key=lambda r: r[1])[2]
  return params, fn, (point_batch, data_batch), mesh


def main(argv=None):
  args = _parse(sys.argv[1:] if argv is None else argv)
  if args.platform:
    os.environ["JAX_PLATFORMS"] = args.platform
  host_devices = args.host_devices or os.cpu_count() or 1
  if host_devices > 1 and args.platform in (None, "cpu"):
    # Must precede the jax import. One XLA CPU device runs one op at a time on small models
    # (measured: 1.0 core busy); one device per core lets the engine shard points over cores.
    # The loop and the single-device engine run on device 0 as before. Ignored on GPU/TPU.
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={host_devices}")
  import jax
  import jax.numpy as jnp
  import numpy as np

  from genviz_jax import data as data_lib
  from genviz_jax import directions, engine

  dev = jax.devices()[0]
  jax.config.update("jax_default_device", dev)
  # Sizes that keep each timed run well above timer noise: accelerators are ~100x faster.
  sizes = _CPU_SIZES if dev.platform == "cpu" else _ACCEL_SIZES
  for name, value in sizes.items():
    if getattr(args, name) is None:
      setattr(args, name, value)
  print(f"jax {jax.__version__}, {jax.device_count()} x {dev.platform} ({dev.device_kind}), "
        f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}")
  n = args.gemm or (2048 if dev.platform == "cpu" else 8192)
  gemm = gemm_bench(n)
  print(f"float32 GEMM {n}x{n} alone: {gemm[1] / _best_time(gemm[0], args.repeats) / 1e9:.1f} "
        "GFLOP/s (each case re-times it between its own runs; xGEMM uses that figure)")

  train = {k: jnp.asarray(v) for k, v in data_lib.swiss_roll().train.items()}
  if "a" in args.cases:
    params, fn, (point_batch, data_batch), mesh = _case("a", (23, 16, 26, 32, 28, 31), train, args.points_a,
                                args.loop_points_a, args, gemm)
    if args.directions:
      radii = jnp.linspace(0.0, 1.0, args.directions)
      t0 = time.perf_counter()
      out = engine.evaluate_points(
          fn, params, engine.direction_delta(jax.random.key(3), params, radii),
          args.directions, train, point_batch=point_batch, data_batch=data_batch, mesh=mesh)
      t1 = time.perf_counter() - t0
      where = "one device" if mesh is None else f"{mesh.size} devices"
      print(f"  {args.directions} directions (fresh filter-normalized direction and one radius "
            f"each, best setting, {where}), compile included: {t1:.2f} s ({args.directions / t1:.0f} directions/s)")
    if args.grid:
      g = np.linspace(-1.0, 1.0, args.grid, dtype=np.float32)
      coords = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
      basis = directions.random_directions(jax.random.key(4), params, 2)
      t0 = time.perf_counter()
      out = engine.evaluate_points(fn, params, engine.basis_delta(basis, coords),
                                   len(coords), train, point_batch=point_batch,
                                   data_batch=data_batch, mesh=mesh)
      print(f"  {args.grid}x{args.grid} surface (best setting), compile included: "
            f"{time.perf_counter() - t0:.2f} s (loss range {out['loss'].min():.3f} .. "
            f"{out['loss'].max():.3f})")
  if "b" in args.cases:
    x = jax.random.normal(jax.random.key(5), (args.data_b, 2), jnp.float32)
    data_b = {"x": x, "y": (x[:, 0] * x[:, 1] > 0).astype(jnp.int32)}
    _case("b", (args.width_b, args.width_b), data_b, args.points_b, args.loop_points_b, args,
          gemm)


if __name__ == "__main__":
  main()
