"""Mode connectivity (Garipov et al. 2018): curves between two minima, trained and evaluated.

A curve φ(t), t ∈ [0, 1], joins two trained parameter sets θ_0 = φ(0) and θ_1 = φ(1) through one
trainable bend θ_b (Garipov et al. 2018, Sec. 3.2, with one bend; peer: dnn-mode-connectivity
curves.py, classes Bezier and PolyChain):

  bezier     φ(t) = (1-t)²·θ_0 + 2t(1-t)·θ_b + t²·θ_1          (quadratic Bézier curve)
  polychain  φ(t) = (1-2t)·θ_0 + 2t·θ_b              t ≤ 1/2   (polygonal chain, one bend)
                    (2-2t)·θ_b + (2t-1)·θ_1           t > 1/2

so φ(t) = Σ_j c_j(t)·(θ_0, θ_b, θ_1)_j with the weights c(t) of `curve_coefficients`. The bend is
trained on E_{t~U(0,1)} L(φ(t)) (Garipov et al. Sec. 3.1: the loss integrated over the curve,
estimated with one uniform t per step) with the endpoints fixed (`train_curve`). The straight
line is the same curve with the midpoint bend (`init_bend`, Garipov's linear initialisation).

Evaluation goes through the engine: the points φ(t_k) are engine points around a ZERO centre,
point k = 0 + Σ_j c_j(t_k)·(θ_0, θ_b, θ_1)_j, computed elementwise, so at t = 0 and t = 1 the
point is θ_0 or θ_1 exactly (1·θ_0 + 0·θ_b + 0·θ_1 in floating point) on any backend, and the
endpoint metrics are metric_fn(θ_0) and metric_fn(θ_1) themselves.

BatchNorm models: a curve point is not a trained network, so the running statistics of neither
endpoint fit it; they must be recomputed at every point before evaluating (Garipov's
utils.update_bn; dnn-mode-connectivity issue #8). `evaluate_curve_bn` does that per point:
state(t) = the size-weighted mean of per-batch statistics over a stats set (the training set),
which is what update_bn computes with its cumulative momentum b / (n + b).

`barrier` reduces a metric along a path to one number: its maximum minus the mean of the two
endpoint values.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from genviz_jax import engine

PyTree = Any
CURVE_KINDS = ("bezier", "polychain")


# ----------------------------------------------------------------------------------- validation


def _check_kind(kind) -> str:
  if kind not in CURVE_KINDS:
    raise ValueError(f"kind={kind!r} is not a curve kind; allowed: {', '.join(CURVE_KINDS)}")
  return kind


def _check_ts(ts) -> np.ndarray:
  """ts as float64 (K,), K >= 1, every t finite and in [0, 1]."""
  t = np.asarray(ts, np.float64)
  if t.ndim != 1:
    raise ValueError(f"ts have shape {t.shape}; need a 1-D array (K,) of positions in [0, 1]")
  if t.shape[0] == 0:
    raise ValueError("ts are empty; need at least one position in [0, 1]")
  if not np.all(np.isfinite(t)):
    raise ValueError(f"ts contain a non-finite value ({t[~np.isfinite(t)][0]}); need t in [0, 1]")
  if np.any((t < 0) | (t > 1)):
    bad = t[(t < 0) | (t > 1)][0]
    raise ValueError(f"ts contain t={bad}, outside [0, 1]")
  return t


def _check_like(tree: PyTree, start: PyTree, what: str) -> None:
  """ValueError naming the first leaf where `tree` differs from `start` in path or shape."""
  t_leaves, t_def = jax.tree_util.tree_flatten_with_path(tree)
  s_leaves, s_def = jax.tree_util.tree_flatten_with_path(start)
  t_paths = [jax.tree_util.keystr(p) for p, _ in t_leaves]
  s_paths = [jax.tree_util.keystr(p) for p, _ in s_leaves]
  if t_paths != s_paths or t_def != s_def:
    missing = sorted(set(s_paths) - set(t_paths))
    extra = sorted(set(t_paths) - set(s_paths))
    where = (f"lacks leaf {missing[0]}" if missing else f"has extra leaf {extra[0]}" if extra
             else f"has structure {t_def}")
    raise ValueError(f"{what} tree differs from start: {what} {where}")
  for (path, a), (_, b) in zip(t_leaves, s_leaves):
    if np.shape(a) != np.shape(b):
      raise ValueError(f"{what} leaf {jax.tree_util.keystr(path)} has shape {np.shape(a)}; "
                       f"start has {np.shape(b)}")


def _check_endpoints(start, bend, end) -> None:
  if not jax.tree.leaves(start):
    raise ValueError("start has no arrays; a curve needs parameters")
  _check_like(end, start, "end")
  if bend is not None:
    _check_like(bend, start, "bend")


# ----------------------------------------------------------------------------------- the curve


def _weights(kind: str, t, xp):
  """(c_0, c_b, c_1)(t) for xp = numpy (tables) or jax.numpy (traced t); see the module doc."""
  if kind == "bezier":
    return (1 - t) * (1 - t), 2 * t * (1 - t), t * t
  first = t <= 0.5
  zero = xp.zeros_like(t)
  return (xp.where(first, 1 - 2 * t, zero), xp.where(first, 2 * t, 2 - 2 * t),
          xp.where(first, zero, 2 * t - 1))


def curve_coefficients(kind: str, ts) -> np.ndarray:
  """(K, 3) float64 weights of (θ_0, θ_b, θ_1) at the positions ts (K,) in [0, 1].

  bezier: the Bernstein basis of degree 2, ((1-t)², 2t(1-t), t²) (Garipov et al. 2018, Sec. 3.2;
  peer curves.Bezier with 3 points). polychain: the hat functions of the one-bend chain,
  (1-2t, 2t, 0) for t ≤ 1/2 and (0, 2-2t, 2t-1) after (peer curves.PolyChain). Rows sum to 1;
  t = 0 gives (1, 0, 0) and t = 1 gives (0, 0, 1) exactly.
  """
  kind = _check_kind(kind)
  t = _check_ts(ts)
  return np.stack(_weights(kind, t, np), axis=1)


def _combine(c0, cb, c1, a, b, e):
  """c0·a + cb·b + c1·e, elementwise (never a dot product: exact for 0/1 weights everywhere)."""
  dt = jnp.result_type(a)
  return (c0.astype(dt) * a + cb.astype(dt) * b + c1.astype(dt) * e).astype(dt)


def curve_point(kind: str, start: PyTree, bend: PyTree, end: PyTree, t) -> PyTree:
  """φ(t) = c_0(t)·θ_0 + c_b(t)·θ_b + c_1(t)·θ_1 leaf by leaf. TRACEABLE in t and the trees.

  kind: "bezier" or "polychain" (static). t: a scalar in [0, 1] (not checked: it may be traced).
  At t = 0 the result equals start and at t = 1 end (the other weights are exactly 0). Leaves
  keep start's dtype.
  """
  kind = _check_kind(kind)
  t = jnp.asarray(t, jnp.result_type(float))
  c0, cb, c1 = _weights(kind, t, jnp)
  return jax.tree.map(lambda a, b, e: _combine(c0, cb, c1, jnp.asarray(a), b, e),
                      start, bend, end)


def init_bend(start: PyTree, end: PyTree) -> PyTree:
  """(θ_0 + θ_1) / 2: the bend that makes either curve the straight line (1-t)·θ_0 + t·θ_1.

  Garipov et al.'s initialisation (peer curves.CurveNet.init_linear with one bend).
  """
  _check_endpoints(start, None, end)
  return jax.tree.map(lambda a, e: ((jnp.asarray(a) + e) / 2).astype(jnp.result_type(a)),
                      start, end)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class CurveDelta:
  """Engine delta: point k = 0 + Σ_j coeffs[k, j]·basis_j, basis leaves (3, *leaf.shape) holding
  (θ_0, θ_b, θ_1) and coeffs (K, 3). Like engine.BasisDelta, but elementwise instead of a
  tensordot (a TF32/bf16 matmul would round 1·θ_0, losing the exact endpoints)."""
  basis: PyTree
  coeffs: jax.Array

  def __call__(self, idx):
    c = self.coeffs[idx]

    def leaf(d):
      rows = lambda j: c[:, j].reshape((-1,) + (1,) * (d.ndim - 1))
      return _combine(rows(0), rows(1), rows(2), d[0], d[1], d[2])

    return jax.tree.map(leaf, self.basis)


def curve_delta(kind: str, start: PyTree, bend: PyTree, end: PyTree, ts):
  """(zero centre, CurveDelta, K): the curve points φ(ts[k]) as engine points around 0."""
  _check_endpoints(start, bend, end)
  coeffs = curve_coefficients(kind, ts)
  stack = lambda a, b, e: jnp.stack([jnp.asarray(x, jnp.result_type(a)) for x in (a, b, e)])
  basis = jax.tree.map(stack, start, bend, end)
  centre = jax.tree.map(lambda a: jnp.zeros(np.shape(a), jnp.result_type(a)), start)
  return centre, CurveDelta(basis, jnp.asarray(coeffs, jnp.result_type(float))), coeffs.shape[0]


# ------------------------------------------------------------------------------------- training


class CurveFit(NamedTuple):
  """train_curve's result: the trained bend and the training loss of every step (num_steps,)."""
  bend: PyTree
  losses: np.ndarray


def _minibatch(key, step, data, batch_size: int):
  """Examples of `step` when every epoch visits a fresh permutation (from fold_in(key, epoch))
  in N // batch_size batches (the last N mod batch_size of each permutation are skipped)."""
  n = engine.data_size(data)
  per_epoch = n // batch_size
  perm = jax.random.permutation(jax.random.fold_in(key, step // per_epoch), n)
  idx = lax.dynamic_slice(perm, ((step % per_epoch) * batch_size,), (batch_size,))
  return jax.tree.map(lambda a: a[idx], data)


def _curve_loss(loss_fn, kind, start, bend, end, ts, batch, data_batch):
  """Mean over ts of the scalar loss at φ(t) on `batch` (None: loss_fn(params)), the batch
  visited in chunks of data_batch examples (engine.chunked_mean: the exact batch mean)."""
  def one(t):
    p = curve_point(kind, start, bend, end, t)
    if batch is None:
      return engine.scalar_loss(loss_fn(p))
    return engine.chunked_mean(lambda b: engine.scalar_loss(loss_fn(p, b)), batch, data_batch)

  return jnp.mean(jax.vmap(one)(ts))


def _train_steps(loss_fn, update, bend, opt_state, start, end, data, key, first, *, kind,
                 num_steps, batch_size, data_batch, ts_per_step):
  """num_steps optimizer steps from step number `first` under lax.scan; -> (bend, state, losses)."""
  t_key, batch_key = jax.random.split(key)

  def step(carry, s):
    b, st = carry
    ts = jax.random.uniform(jax.random.fold_in(t_key, s), (ts_per_step,))
    batch = data if data is None or batch_size is None else _minibatch(batch_key, s, data,
                                                                         batch_size)
    loss, grad = jax.value_and_grad(
        lambda bb: _curve_loss(loss_fn, kind, start, bb, end, ts, batch, data_batch))(b)
    updates, st = update(grad, st, b)
    return (optax.apply_updates(b, updates), st), loss

  steps = first + jnp.arange(num_steps, dtype=jnp.int32)
  (bend, opt_state), losses = lax.scan(step, (bend, opt_state), steps)
  return bend, opt_state, losses


def train_curve(loss_fn: Callable, start: PyTree, end: PyTree, data: PyTree | None = None, *,
                kind: str = "bezier", optimizer: optax.GradientTransformation, num_steps: int,
                key: jax.Array, bend: PyTree | None = None, batch_size: int | None = None,
                data_batch: int | None = None, ts_per_step: int = 1, steps_per_call: int = 100,
                progress: Callable[[int, int], None] | None = None) -> CurveFit:
  """Trains the bend of a curve from start to end on E_{t~U(0,1)} loss(φ(t)), endpoints fixed.

  Garipov et al. 2018, Sec. 3.1 (peer train.py with --curve): each step draws t ~ U(0, 1) and
  takes an optimizer step on ∇_{θ_b} L(φ_{θ_b}(t)). Step s is a pure function of (key, s): t from
  fold_in(split(key)[0], s) and, with batch_size, the minibatch from a permutation per epoch
  (fold_in(split(key)[1], epoch)); steps_per_call steps run in one compiled lax.scan.

  Args:
    loss_fn: loss_fn(params, batch) (or loss_fn(params) when data is None) -> a scalar
      batch-mean loss or a dict with a scalar "loss".
    start, end: the fixed endpoints θ_0, θ_1 (same tree and shapes).
    data: pytree of (N, ...) arrays, or None.
    kind: "bezier" or "polychain".
    optimizer: an optax transformation for the bend (e.g. optax.adam(1e-2)).
    num_steps: steps >= 1.
    key: PRNG key.
    bend: the initial bend; None: init_bend(start, end), the straight line.
    batch_size: examples per step (<= N); None: all of data every step.
    data_batch: a step's examples are visited in chunks of this many (the same exact mean and
      gradient, memory for one chunk); None: all at once.
    ts_per_step: t samples per step; the loss is their mean (1 as in Garipov et al.).
    steps_per_call: steps per compiled call.
    progress: progress(steps_done, num_steps) after each call.

  Returns:
    CurveFit(bend, losses (num_steps,) float32), unpackable as (bend, losses).

  Raises:
    ValueError: bad kind or sizes, trees unlike start, a non-finite loss (naming its step).
  """
  kind = _check_kind(kind)
  _check_endpoints(start, bend, end)
  num_steps = engine.metrics.positive_int("num_steps", num_steps)
  ts_per_step = engine.metrics.positive_int("ts_per_step", ts_per_step)
  steps_per_call = engine.metrics.positive_int("steps_per_call", steps_per_call)
  batch_size = engine.metrics.optional_positive_int("batch_size", batch_size)
  data_batch = engine.metrics.optional_positive_int("data_batch", data_batch)
  if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
    raise ValueError(f"optimizer={optimizer!r} is not an optax GradientTransformation")
  if data is None and batch_size is not None:
    raise ValueError(f"batch_size={batch_size} needs data; data is None")
  if data is not None and batch_size is not None and batch_size > engine.data_size(data):
    raise ValueError(f"batch_size={batch_size} exceeds the N={engine.data_size(data)} examples")
  bend = init_bend(start, end) if bend is None else jax.tree.map(
      lambda b, a: jnp.asarray(b, jnp.result_type(a)), bend, start)
  opt_state = optimizer.init(bend)
  args = jax.device_put((start, end, data, key))
  losses, done = [], 0
  while done < num_steps:
    n = min(steps_per_call, num_steps - done)
    run = engine.cached_jit(
        engine.Bound(_train_steps, kind=kind, num_steps=n, batch_size=batch_size,
                     data_batch=data_batch, ts_per_step=ts_per_step), (loss_fn, optimizer.update))
    start_, end_, data_, key_ = args
    bend, opt_state, chunk = run(bend, opt_state, start_, end_, data_, key_, jnp.int32(done))
    chunk = np.asarray(chunk)
    bad = np.flatnonzero(~np.isfinite(chunk))
    if bad.size:
      raise ValueError(f"curve training loss is {chunk[bad[0]]} at step {done + bad[0]}; "
                       "lower the learning rate or check loss_fn")
    losses.append(chunk)
    done += n
    if progress is not None:
      progress(done, num_steps)
  return CurveFit(bend, np.concatenate(losses))


# ----------------------------------------------------------------------------------- evaluation


def evaluate_curve(metric_fn: Callable, start: PyTree, bend: PyTree, end: PyTree, ts,
                   data: PyTree | None = None, *, kind: str = "bezier", mesh=None,
                   point_batch: int | None = None, data_batch: int | None = None, chunk_size: int = 256,
                   progress: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
  """Metrics at the curve points φ(ts[k]) (through the engine, points sharded over `mesh`).

  Point k is 0 + c_0(t_k)·θ_0 + c_b(t_k)·θ_b + c_1(t_k)·θ_1 (curve_coefficients), so the metrics
  at t = 0 and 1 are metric_fn(θ_0, data) and metric_fn(θ_1, data) exactly. The straight line
  is bend = init_bend(start, end).

  Args:
    metric_fn: metric_fn(params, batch) (metric_fn(params) when data is None) -> a scalar
      batch-mean loss ("loss") or a dict of batch means (engine.metrics).
    start, bend, end: θ_0, θ_b, θ_1 (same tree and shapes).
    ts: (K,) positions in [0, 1].
    data: pytree of (N, ...) arrays (exact means over all N), or None.
    kind: "bezier" or "polychain".
    mesh, point_batch, data_batch, chunk_size, progress: as engine.evaluate_points.

  Returns:
    dict name -> (K, ...) float32.
  """
  centre, delta, k = curve_delta(kind, start, bend, end, ts)
  chunk_size = engine.metrics.positive_int("chunk_size", chunk_size)
  return engine.evaluate_points(metric_fn, centre, delta, k, data, mesh=mesh,
                                point_batch=point_batch, data_batch=data_batch,
                                chunk_size=chunk_size, progress=progress)


def _bn_impl(metric_fn, stats_fn, idx, args, *, point_batch, data_batch, stats_batch):
  """Metrics at the points delta(idx) with state recomputed at each point. TRACEABLE.

  Points run in vmapped groups of point_batch under lax.map (as engine.core); at each point θ:
  state = chunked_mean(stats_fn(θ, ·), stats_data), then chunked_mean(metric_fn(θ, state, ·), data).
  """
  delta, data, stats_data = args
  k = idx.shape[0]
  pb = min(point_batch, k)
  pad = (-k) % pb
  groups = jnp.concatenate([idx, jnp.broadcast_to(idx[:1], (pad,))]).reshape(-1, pb)

  def one(theta):
    state = engine.chunked_mean(lambda b: stats_fn(theta, b), stats_data, stats_batch)
    return engine.chunked_mean(lambda b: engine.as_metric_dict(metric_fn(theta, state, b)),
                               data, data_batch)

  out = lax.map(lambda ids: jax.vmap(one)(delta(ids)), groups)
  return {name: v.reshape((-1,) + v.shape[2:])[:k] for name, v in out.items()}


def evaluate_curve_bn(metric_fn_with_state: Callable, stats_fn: Callable, start: PyTree,
                      bend: PyTree, end: PyTree, ts, data: PyTree, stats_data: PyTree, *,
                      kind: str = "bezier", mesh=None, point_batch: int | None = None,
                      data_batch: int | None = None, stats_batch: int | None = None,
                      chunk_size: int = 256,
                      progress: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
  """Metrics along a curve of a model with BatchNorm, its statistics recomputed at every point.

  At each φ(t) (Garipov's utils.update_bn before every evaluation; dnn-mode-connectivity #8):

    state(t)   = Σ_c (n_c / N_s) · stats_fn(φ(t), stats_batch_c)     (precise BN)
    metrics(t) = Σ_c (n_c / N)   · metric_fn_with_state(φ(t), state(t), data_batch_c)

  The first is update_bn's cumulative average (momentum b / (n + b)): the exact population mean
  of the activations and the size-weighted mean of the per-batch variances. With stats_batch
  None the stats set is one batch, so the variances are the population variances.

  Args:
    metric_fn_with_state: fn(params, state, batch) -> scalar or dict of batch means, the model
      in inference mode with BatchNorm statistics `state`.
    stats_fn: stats_fn(params, batch) -> pytree of this batch's statistics (e.g. a Flax model's
      "batch_stats" after apply(..., train=True, mutable=["batch_stats"]) with momentum 0, or
      means and variances computed directly).
    start, bend, end, ts, kind: the curve (as evaluate_curve).
    data: the evaluation set, (N, ...) arrays. stats_data: the set the statistics come from
      (the training set), (N_s, ...) arrays.
    mesh: points sharded over its "points" axis (data is not split here); None: as
      engine.evaluate_points (every local CPU device on a CPU).
    point_batch: points vmapped together (None: engine.sizes' default).
    data_batch / stats_batch: examples per chunk of data
      / per statistics batch (the BatchNorm batch size; None: the whole set).
    chunk_size, progress: as engine.evaluate_points.

  Returns:
    dict name -> (K, ...) float32.
  """
  _, delta, k = curve_delta(kind, start, bend, end, ts)
  point_batch = engine.sizes.point_batch_for(start, point_batch)
  engine.check_mesh(mesh)
  mesh = engine.host.resolve_mesh(mesh)
  data_batch = engine.metrics.optional_positive_int("data_batch", data_batch)
  stats_batch = engine.metrics.optional_positive_int("stats_batch", stats_batch)
  chunk_size = engine.metrics.positive_int("chunk_size", chunk_size)
  for name, d in (("data", data), ("stats_data", stats_data)):
    if d is None:
      raise ValueError(f"{name} is None; evaluate_curve_bn needs a dataset of (N, ...) arrays")
    engine.data_size(d)
  impl = engine.Bound(_bn_impl, point_batch=point_batch, data_batch=data_batch,
                      stats_batch=stats_batch)
  args = engine.sharding.place((delta, data, stats_data), mesh)
  parts: dict[str, list[np.ndarray]] = {}
  for _, _, out in engine.stream(impl, (metric_fn_with_state, stats_fn), k, args,
                                 chunk_size=chunk_size, unit=point_batch, mesh=mesh,
                                 progress=progress):
    for name, v in out.items():
      parts.setdefault(name, []).append(v)
  return {name: np.concatenate(v) for name, v in parts.items()}


# -------------------------------------------------------------------------------------- barrier


def barrier(values_along_path) -> float:
  """max_k v_k − (v_0 + v_{K-1}) / 2: the height of a path above the mean of its endpoints.

  values_along_path: (K,) a metric (e.g. the train loss) at positions running from t = 0 to
  t = 1 (first and last entries are the endpoints). Garipov et al. 2018 compare the loss along
  a path with the endpoints'; this is the issue's "maximum along the path minus the mean of the
  endpoints" (Frankle et al. 2020 subtract the linear interpolation of the endpoint values
  instead; the two agree when the endpoints are equal). The maximum includes the endpoints, so
  the barrier is never below |v_0 − v_{K-1}| / 2: a path rising monotonically from one end to
  the other has that barrier, not 0.
  """
  v = np.asarray(values_along_path, np.float64)
  if v.ndim != 1 or v.shape[0] < 2:
    raise ValueError(f"values_along_path have shape {v.shape}; need (K,) with K >= 2 "
                     "(the endpoints first and last)")
  if not np.all(np.isfinite(v)):
    raise ValueError("values_along_path contain a non-finite value")
  return float(v.max() - (v[0] + v[-1]) / 2)
