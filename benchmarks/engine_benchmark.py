"""Throughput of the evaluation engine next to per-point loops (JAX and PyTorch), in one run.

Prints, for (a) the paper's swiss-roll MLP 2->[23,16,26,32,28,31]->2 on its 200 training points
and (b) a 2->512->512->2 MLP on 10,000 points, one table of rows timed in interleaved repeats:

  default path        engine.evaluate_points(fn, params, delta, K, data) with no sizes and no
                      mesh: what a user gets without choosing (batch sizes from the model's size,
                      engine.sizes; points over every CPU device, engine.host)
  engine, one device  the same sizes on one device: mesh=engine.point_mesh(jax.devices()[:1])
  engine, point_batch=P[, data_batch=D]
                      the settings grid (--point_batches x --data_batches) over the default mesh;
                      "(= default)" marks the default sizes. A "best path" line names the fastest
                      engine row, which the directions and surface timings below then use.
  JAX loop            one jitted evaluation per point, θ + Σ α_i d_i formed inside the jit
  PyTorch loop        Li et al.'s loss-landscape code (benchmarks/torch_peer.py): per point,
                      set_weights copies θ + α d1 + β d2 into every parameter, then eval_loss runs
                      the net under torch.no_grad() and copies loss and accuracy to Python floats.
                      Same weights, data, directions and coefficients; float32, torch's default
                      threads. Its losses at the first 3 points must match the engine's within
                      rtol 1e-4 (checked once per case). Skipped, with one line, without torch.
  float32 GEMM        the machine's matrix-product rate

with points/s, model GFLOP/s and the ratios to the GEMM, the JAX loop and the PyTorch loop.
Then the wall time (compile included) of a 10,000-direction evaluation (fresh filter-normalized
directions, one radius each) and of a 51x51 surface on (a), with the best path's settings.

  python -m benchmarks.engine_benchmark                      # CPU, the issue's sizes
  python -m benchmarks.engine_benchmark --platform=gpu      # larger default sizes
  python -m benchmarks.engine_benchmark --cases=a --directions=100000
  pip install -e '.[torch]'                                  # for the PyTorch row

Model FLOPs are XLA's cost analysis of one evaluation (forward pass + loss) times points/s. The
JAX loop is favoured: it dispatches asynchronously and blocks once at the end (peers copy every
loss to the host, as the PyTorch row does). genviz_jax is imported before jax runs anything, so
on a CPU it has already split the host into one XLA device per core (GENVIZ_JAX_HOST_DEVICES=1
turns that off); the loops run on device 0. All rows and the GEMM are timed in interleaved
repeats and the best of --repeats is reported: on a shared machine the absolute numbers move with
the load, the ratios much less.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from typing import Any, Callable, NamedTuple

TORCH_MISSING = "torch not installed: PyTorch row skipped (pip install -e '.[torch]')"
CHECK_POINTS = 3     # points at which the PyTorch and engine losses are compared
CHECK_RTOL = 1e-4


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
  p.add_argument("--torch_batch", type=int, default=0,
                 help="examples per forward pass of the PyTorch row (0: all at once)")
  args = p.parse_args(argv)
  for name in ("points_a", "loop_points_a", "points_b", "loop_points_b", "data_b", "width_b",
               "repeats"):
    if getattr(args, name) is not None and getattr(args, name) <= 0:
      p.error(f"--{name}={getattr(args, name)} must be a positive integer")
  for name in ("directions", "grid", "gemm", "torch_batch"):
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


class Method(NamedTuple):
  """One timed row: `points` parameter points per run() (0: the GEMM)."""
  label: str
  points: int
  run: Callable[[], Any]
  setting: tuple | None = None   # engine rows: (point_batch, data_batch, mesh); None = default


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


def load_torch_peer():
  """benchmarks.torch_peer, or None (after printing TORCH_MISSING) when torch is not installed."""
  try:
    import torch
  except ImportError:
    print(TORCH_MISSING)
    return None
  print(f"torch {torch.__version__}, {torch.get_num_threads()} threads (its default), float32")
  from benchmarks import torch_peer
  return torch_peer


def _model(widths, data):
  """(params, metric fn, model FLOPs of one evaluation over `data`) of an MLP 2->widths->2."""
  import jax
  import jax.numpy as jnp

  from genviz_jax import models
  model = models.MLP(widths=tuple(widths), num_classes=2)
  params = model.init(jax.random.key(0), jnp.ones((1, 2)))["params"]
  fn = models.metric_fn(model)
  ca = jax.jit(fn).lower(params, data).compile().cost_analysis()
  flops = float((ca[0] if isinstance(ca, (list, tuple)) else ca)["flops"])
  return params, fn, flops


def _sizes_text(point_batch, data_batch, n_data):
  data = "all data" if data_batch is None or data_batch >= n_data else f"data_batch={data_batch}"
  return f"point_batch={point_batch}, {data}"


def _engine_methods(fn, params, delta, points, data, args):
  """Rows: the default path, the default sizes on one device, then the settings grid."""
  import jax

  from genviz_jax import engine
  n_data = engine.data_size(data)
  evaluate = functools.partial(engine.evaluate_points, fn, params, delta, points, data)
  one = engine.point_mesh(jax.devices()[:1])
  methods = [Method("default path", points, evaluate, (None, None, None)),
             Method("engine, one device", points, functools.partial(evaluate, mesh=one),
                    (None, None, one))]
  default = (engine.sizes.point_batch_for(params, None),
             engine.sizes.data_batch_for(params, data, None) or n_data)
  for pb in args.point_batches:
    for db in [d for d in args.data_batches if d < n_data]:
      db = db or n_data  # 0: all examples at once (None would mean the default for the model)
      label = "engine, " + _sizes_text(pb, db, n_data) + (" (= default)" if (pb, db) == default
                                                          else "")
      methods.append(Method(label, points, functools.partial(evaluate, point_batch=pb,
                                                             data_batch=db), (pb, db, None)))
  return methods


def _default_text(params, data):
  """What the default path chose: sizes and devices."""
  from genviz_jax import engine
  mesh = engine.default_mesh()
  where = "one device" if mesh is None else f"points over {mesh.size} CPU devices"
  return (_sizes_text(engine.sizes.point_batch_for(params, None),
                      engine.sizes.data_batch_for(params, data, None), engine.data_size(data))
          + ", " + where)


def _jax_loop(fn, params, basis, coeffs, data):
  """run() evaluating every row of coeffs with one jitted call each (results not copied)."""
  import jax
  import jax.numpy as jnp

  @jax.jit
  def one(c):
    p = jax.tree.map(lambda a, d: a + jnp.tensordot(c, d, axes=1), params, basis)
    return fn(p, data)

  rows = list(coeffs)  # device arrays, sliced before timing
  return lambda: [one(c) for c in rows]


def _torch_loop(peer, params, basis, coeffs, loop_points, data, batch_size, jax_loss):
  """run() of the PyTorch set-weights loop over coeffs[:loop_points], after checking its losses
  at the first CHECK_POINTS rows against jax_loss (the engine's at all rows of coeffs)."""
  import jax
  import numpy as np
  net = peer.build_net(params)
  weights = peer.to_torch(params)
  num_dirs = jax.tree.leaves(basis)[0].shape[0]
  dirs = [peer.to_torch(jax.tree.map(lambda d, i=i: d[i], basis)) for i in range(num_dirs)]
  x, y = peer.to_torch_data(data)
  steps = [tuple(float(v) for v in row) for row in np.asarray(coeffs)]
  first = peer.evaluate_loop(net, weights, dirs, steps[:CHECK_POINTS], x, y, batch_size)
  check_losses([loss for loss, _ in first], jax_loss[:len(first)])
  loop_steps = steps[:loop_points]
  return lambda: peer.evaluate_loop(net, weights, dirs, loop_steps, x, y, batch_size)


def check_losses(torch_loss, jax_loss, rtol=CHECK_RTOL):
  """Prints the max relative difference; RuntimeError when above rtol (or not finite)."""
  import numpy as np
  t, j = np.asarray(torch_loss, np.float64), np.asarray(jax_loss, np.float64)
  rel = float(np.max(np.abs(t - j) / np.abs(j)))
  print(f"  PyTorch vs engine loss at the first {len(t)} points: max relative difference "
        f"{rel:.1e} (limit {rtol:g})")
  if not rel <= rtol:
    raise RuntimeError(f"PyTorch losses {t} differ from the engine's {j} (max relative difference {rel:.2e} > "
                       f"{rtol:g}): the two models are not the same")


def time_interleaved(runs, repeats):
  """Best wall time of each run over `repeats` interleaved rounds (after one warm-up each)."""
  import jax
  for run in runs:
    jax.block_until_ready(run())
  best = [float("inf")] * len(runs)
  for _ in range(repeats):
    for i, run in enumerate(runs):
      t0 = time.perf_counter()
      jax.block_until_ready(run())
      best[i] = min(best[i], time.perf_counter() - t0)
  return best


def _print_table(rows, gemm_flops, jax_loop_flops, torch_flops):
  """rows: (label, points/s or None, FLOP/s); ratios are of FLOP/s (the same model per point)."""
  print(f"  {'':44s} {'points/s':>10s} {'GFLOP/s':>8s} {'xGEMM':>6s} {'xJAX loop':>9s} "
        f"{'xtorch loop':>11s}")
  for label, rate, flop_rate in rows:
    points = f"{rate:10.1f}" if rate is not None else f"{'':10s}"
    vs_torch = f"{flop_rate / torch_flops:11.2f}" if torch_flops else f"{'':11s}"
    print(f"  {label:44s} {points} {flop_rate / 1e9:8.2f} {flop_rate / gemm_flops:6.3f} "
          f"{flop_rate / jax_loop_flops:9.2f} {vs_torch}".rstrip())


def _case(name, widths, data, points, loop_points, args, gemm, peer):
  """Times case `name`; returns (params, fn, best engine setting (point_batch, data_batch, mesh))."""
  import jax

  from genviz_jax import directions, engine, trees
  params, fn, flops = _model(widths, data)
  basis = directions.random_directions(jax.random.key(1), params, 2)
  coeffs = jax.random.uniform(jax.random.key(2), (points, 2), minval=-1.0, maxval=1.0)
  print(f"\n({name}) MLP 2->{list(widths)}->2, {trees.num_params(params)} parameters, "
        f"{engine.data_size(data)} examples, {flops / 1e6:.2f} MFLOP per point; default path: "
        f"{_default_text(params, data)}")
  methods = _engine_methods(fn, params, engine.basis_delta(basis, coeffs), points, data, args)
  n_engine = len(methods)
  methods.append(Method("JAX loop, one jit(eval) per point", loop_points,
                        _jax_loop(fn, params, basis, coeffs[:loop_points], data)))
  if peer is not None:
    jax_loss = methods[0].run()["loss"]  # the default path's losses (and its warm-up)
    methods.append(Method("PyTorch loop, set_weights + eval_loss", loop_points,
                          _torch_loop(peer, params, basis, coeffs, loop_points, data,
                                      args.torch_batch or None, jax_loss)))
  gemm_run, gemm_ops = gemm
  methods.append(Method("float32 GEMM", 0, gemm_run))
  # Interleaved repeats, best of each: neighbours' load hits every row, GEMM included, alike.
  best = time_interleaved([m.run for m in methods], args.repeats)
  rates = [m.points / t for m, t in zip(methods, best)]
  flop_rates = [r * flops for r in rates[:-1]] + [gemm_ops / best[-1]]
  rows = [(m.label, r if m.points else None, f) for m, r, f in zip(methods, rates, flop_rates)]
  torch_flops = flop_rates[n_engine + 1] if peer is not None else None
  _print_table(rows, flop_rates[-1], flop_rates[n_engine], torch_flops)
  fastest = max(range(n_engine), key=lambda i: rates[i])
  print(f"  best path: {methods[fastest].label}, {rates[fastest]:.1f} points/s "
        f"({rates[fastest] / rates[0]:.2f}x the default path)")
  return params, fn, methods[fastest].setting


def _directions(fn, params, data, count, setting):
  """Wall time of `count` fresh filter-normalized directions, one radius each."""
  import jax
  import jax.numpy as jnp

  from genviz_jax import engine
  point_batch, data_batch, mesh = setting
  radii = jnp.linspace(0.0, 1.0, count)
  t0 = time.perf_counter()
  engine.evaluate_points(fn, params, engine.direction_delta(jax.random.key(3), params, radii),
                         count, data, point_batch=point_batch, data_batch=data_batch, mesh=mesh)
  t1 = time.perf_counter() - t0
  used = engine.host.resolve_mesh(mesh)
  where = "one device" if used is None or used.size == 1 else f"{used.size} devices"
  print(f"  {count} directions (fresh filter-normalized direction and one radius each, best "
        f"path, {where}), compile included: {t1:.2f} s ({count / t1:.0f} directions/s)")


def _surface(fn, params, data, side, setting):
  """Wall time of a side x side surface on two fresh directions."""
  import jax
  import numpy as np

  from genviz_jax import directions, engine
  point_batch, data_batch, mesh = setting
  g = np.linspace(-1.0, 1.0, side, dtype=np.float32)
  coords = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
  basis = directions.random_directions(jax.random.key(4), params, 2)
  t0 = time.perf_counter()
  out = engine.evaluate_points(fn, params, engine.basis_delta(basis, coords), len(coords), data,
                               point_batch=point_batch, data_batch=data_batch, mesh=mesh)
  print(f"  {side}x{side} surface (best path), compile included: "
        f"{time.perf_counter() - t0:.2f} s (loss range {out['loss'].min():.3f} .. "
        f"{out['loss'].max():.3f})")


def main(argv=None):
  args = _parse(sys.argv[1:] if argv is None else argv)
  if args.platform:
    os.environ["JAX_PLATFORMS"] = args.platform  # read when jax is imported
  # genviz_jax first: importing it configures jax (one XLA CPU device per core) before jax runs
  # anything; nothing else here needs to.
  import genviz_jax  # noqa: F401
  import jax
  import jax.numpy as jnp

  from genviz_jax import data as data_lib

  dev = jax.devices()[0]
  jax.config.update("jax_default_device", dev)
  # Sizes that keep each timed run well above timer noise: accelerators are ~100x faster.
  sizes = _CPU_SIZES if dev.platform == "cpu" else _ACCEL_SIZES
  for name, value in sizes.items():
    if getattr(args, name) is None:
      setattr(args, name, value)
  print(f"jax {jax.__version__}, {jax.device_count()} x {dev.platform} ({dev.device_kind}), "
        f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}")
  peer = load_torch_peer()
  n = args.gemm or (2048 if dev.platform == "cpu" else 8192)
  gemm = gemm_bench(n)
  print(f"float32 GEMM {n}x{n} alone: {gemm[1] / _best_time(gemm[0], args.repeats) / 1e9:.1f} "
        "GFLOP/s (each case re-times it between its own runs; xGEMM uses that figure)")

  train = {k: jnp.asarray(v) for k, v in data_lib.swiss_roll().train.items()}
  if "a" in args.cases:
    params, fn, setting = _case("a", (23, 16, 26, 32, 28, 31), train, args.points_a,
                                args.loop_points_a, args, gemm, peer)
    if args.directions:
      _directions(fn, params, train, args.directions, setting)
    if args.grid:
      _surface(fn, params, train, args.grid, setting)
  if "b" in args.cases:
    x = jax.random.normal(jax.random.key(5), (args.data_b, 2), jnp.float32)
    data_b = {"x": x, "y": (x[:, 0] * x[:, 1] > 0).astype(jnp.int32)}
    _case("b", (args.width_b, args.width_b), data_b, args.points_b, args.loop_points_b, args,
          gemm, peer)


if __name__ == "__main__":
  main()
