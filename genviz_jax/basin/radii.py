"""Basin radius along many random directions (Huang et al. 2019), through the engine.

Radius: along direction d_k, the smallest r > 0 at which the chosen metric of θ* + r·d_k crosses a
threshold τ (train loss above τ, or train accuracy below τ). All directions of a chunk are solved
together inside one `lax.while_loop` (basin.bisection): geometric bracketing, then bisection of the
bracket (default) or safeguarded interpolation (method="chandrupatla"), each direction with
its own convergence mask; the radius returned is the smallest radius actually
EVALUATED past the threshold, so r* <= radius <= r*·(1 + rtol) for a metric that crosses once.
Directions still inside at r_max are censored: flagged, counted, reported with radius r_max, never
dropped. Chunks of directions stream through the engine (engine.stream): one compiled function,
sharded over a mesh's devices, each device running its own while_loop on its share; finished
chunks can be stored (basin.store) so a killed sweep resumes with identical radii.

References: Huang et al., arXiv 1906.03291 (radii along filter-normalized directions, Li et al.
arXiv 1712.09913); the volume of basin.volume.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from genviz_jax import directions as directions_lib
from genviz_jax import engine
from genviz_jax import trees
from genviz_jax.basin import bisection
from genviz_jax.basin.gaussian import GaussianMass, log_gaussian_mass
from genviz_jax.basin.sampling import (RandomDirections, _check_preconditioner, _check_same_tree)
from genviz_jax.basin.store import ChunkStore, fingerprint
from genviz_jax.basin.volume import VolumeEstimate, log_volume

PyTree = Any
# Root finders of the bracket (basin.bisection): halving, or safeguarded interpolation.
METHODS = tuple(bisection.METHODS)
# Rays in flight per chunk and device: this many point groups (bisection.refill). A chunk then
# costs about its rays' mean evaluations, plus its slowest ray's at the end, spread over
# SLOTS_PER_GROUP·point_batch slots.
SLOTS_PER_GROUP = 8


@dataclasses.dataclass(frozen=True)
class Radii:
  """Basin radii of K directions (numpy). Leading axis K; a trailing axis of 2 (+d, -d) if two-sided.

  radius: coefficient r_k along d_k (θ* + r_k·d_k is the first evaluated point past the threshold),
    in units of the direction (for filter-normalized directions: of ||θ||, filter by filter); r_max
    where censored.
  censored: never crossed up to r_max. converged: bracket narrowed to rtol (False: max_iter hit).
  value: the metric at `radius`. num_evals: evaluations each direction used.
  direction_norm: (K,) ||d_k|| over all coordinates (Euclidean radius = radius·direction_norm).
  base_norm: (K,) ||g_k|| of the Gaussian before preconditioning, or None.
  dim: n, perturbed coordinates. measure: the measure `volume()` reports in (module docstring).
  threshold: absolute threshold used; centre_value: the metric at θ*.
  """
  radius: np.ndarray
  censored: np.ndarray
  converged: np.ndarray
  value: np.ndarray
  num_evals: np.ndarray
  direction_norm: np.ndarray
  base_norm: np.ndarray | None
  dim: int
  measure: str
  metric: str
  crossing: str
  threshold: float
  centre_value: float
  rtol: float
  r_max: float

  @property
  def num_directions(self) -> int:
    return int(self.radius.shape[0])

  @property
  def num_censored(self) -> int:
    return int(np.sum(self.censored))

  def euclidean(self) -> np.ndarray:
    """Radii in parameter-space length: radius · ||d_k||, same shape as radius (float64)."""
    norm = np.asarray(self.direction_norm, np.float64)
    return np.asarray(self.radius, np.float64) * (norm[:, None] if self.radius.ndim == 2 else norm)

  def volume(self, **kwargs) -> VolumeEstimate:
    """log_volume in this result's measure (isotropic: Euclidean radii and importance weights).

    Keyword arguments go to `log_volume` (num_bootstrap, confidence, seed).
    """
    log_w = None
    if self.measure == "isotropic":
      r = self.euclidean()
      log_w = self._log_weights(r)
    else:
      r = np.asarray(self.radius, np.float64)
    if np.any(r <= 0):
      raise ValueError("a radius is 0 (a zero direction?); volumes need every radius > 0")
    return log_volume(r, self.dim, log_weights=log_w, censored=self.censored, measure=self.measure,
                      **kwargs)

  def _log_weights(self, r: np.ndarray) -> np.ndarray | None:
    """Importance log-weights -n·log(||P g_k|| / ||g_k||) of preconditioned directions
    (basin.sampling), shaped like r; None for plain directions."""
    if self.base_norm is None:
      return None
    lw = -self.dim * (np.log(np.asarray(self.direction_norm, np.float64))
                      - np.log(np.asarray(self.base_norm, np.float64)))
    return np.broadcast_to(lw[:, None] if r.ndim == 2 else lw, r.shape)

  def gaussian_mass(self, sigma: float, **kwargs) -> GaussianMass:
    """log prior mass of the basin under N(μ, σ² I_n) (basin.gaussian): Euclidean radii and the
    importance weights exactly as `volume()` uses them.

    Keyword arguments go to `log_gaussian_mass` (projection and offset_norm for a prior centred
    away from θ*, from basin.gaussian.offset_projections; num_bootstrap, confidence, seed).
    Only isotropic sweeps (norm="none") have Euclidean radii.
    """
    if self.measure != "isotropic":
      raise ValueError(f"gaussian_mass needs Euclidean radii (norm='none', measure 'isotropic'); "
                       f"this sweep's measure is {self.measure!r}")
    r = self.euclidean()
    if np.any(r <= 0):
      raise ValueError("a radius is 0 (a zero direction?); masses need every radius > 0")
    return log_gaussian_mass(r, self.dim, sigma, log_weights=self._log_weights(r),
                             censored=self.censored, **kwargs)

  def arrays(self) -> dict[str, np.ndarray]:
    out = {k: getattr(self, k) for k in ("radius", "censored", "converged", "value", "num_evals",
                                         "direction_norm")}
    if self.base_norm is not None:
      out["base_norm"] = self.base_norm
    return out


def _check_positive(name: str, value) -> float:
  try:
    v = float(value)
  except (TypeError, ValueError):
    raise ValueError(f"{name}={value!r} must be a number > 0") from None
  if not (v > 0) or math.isinf(v):
    raise ValueError(f"{name}={value!r} must be a finite number > 0")
  return v


def _check_count(name: str, value) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
    raise ValueError(f"{name}={value!r} must be a positive integer")
  return int(value)


def centre_metrics(loss_fn, params: PyTree, data: PyTree | None = None, *,
                   data_batch: int | None = None, mesh=None) -> dict[str, float]:
  """The metrics at θ* (floats): the engine at the single point δ = 0."""
  out = engine.evaluate_points(loss_fn, params, engine.centre_delta(params), 1, data, point_batch=1,
                               data_batch=data_batch, mesh=mesh)
  return {k: float(v[0]) for k, v in out.items() if np.ndim(v) == 1}


def _resolve_threshold(centre: Mapping[str, float], metric: str, threshold, crossing,
                       relative: bool) -> tuple[float, str]:
  if metric not in centre:
    raise ValueError(f"metric={metric!r} is not returned by loss_fn; it returns "
                     f"{', '.join(sorted(centre))}")
  if crossing is None:
    crossing = "below" if "acc" in metric else "above"
  if crossing not in ("above", "below"):
    raise ValueError(f"crossing={crossing!r}; allowed: above, below")
  try:
    tau = float(threshold)
  except (TypeError, ValueError):
    raise ValueError(f"threshold={threshold!r} must be a finite number") from None
  if not math.isfinite(tau):
    raise ValueError(f"threshold={threshold!r} must be a finite number")
  c = centre[metric]
  if relative:
    if tau <= 0:
      raise ValueError(f"threshold={threshold!r} relative to the centre must be > 0")
    tau = c + tau if crossing == "above" else c - tau
  crossed = c > tau if crossing == "above" else c < tau
  if crossed or c == tau:
    raise ValueError(f"threshold {metric} {'>' if crossing == 'above' else '<'} {tau:g} is already "
                     f"crossed at the centre ({metric}={c:g}); choose a threshold the minimum is "
                     "inside of")
  return tau, crossing


@dataclasses.dataclass(frozen=True)
class _Sweep:
  """What a sweep draws: K, n, the measure, and the arrays that define direction k."""
  num: int
  dim: int
  measure: str
  spec: tuple | None          # (norm, ignore_1d, filter_axes) of generated directions, or None
  material: Any               # (key, preconditioner) or the stacked given directions


def _sweep_of(directions, params) -> _Sweep:
  if isinstance(directions, RandomDirections):
    spec = directions
    num = _check_count("num directions (K)", spec.num)
    directions_lib._check_norm(spec.norm)
    if spec.preconditioner is not None:
      if spec.norm != "none":
        raise ValueError(f"a preconditioner needs norm='none' (got norm={spec.norm!r}): it "
                         "replaces the normalization")
      _check_preconditioner(spec.preconditioner, params, spec.ignore_1d)
    axes = directions_lib.filter_axes(params, spec.filter_axis)
    dim = directions_lib.num_perturbed(params, spec.ignore_1d, norm=spec.norm, filter_axis=axes)
    measure = {"none": "isotropic", "filter": "filter-normalized",
               "layer": "layer-normalized"}[spec.norm]
    return _Sweep(num, dim, measure, (spec.norm, bool(spec.ignore_1d), axes),
                  (spec.key, spec.preconditioner))
  leaves = jax.tree.leaves(directions)
  if not leaves:
    raise ValueError("directions has no arrays; pass a stacked pytree like params or "
                     "RandomDirections")
  num = _check_count("num directions (K)", _check_same_tree(directions, params, "directions",
                                                            stacked=True))
  dim = sum(int(np.count_nonzero(np.any(np.asarray(l) != 0, axis=0))) for l in leaves)
  return _Sweep(num, dim, "given-directions", None, jax.tree.map(jnp.asarray, directions))


def _spec_json(spec, params) -> dict:
  """The sweep's direction settings for its fingerprint (filter_axis only when not the default,
  so sweeps stored before it existed still resume)."""
  out = dict(norm=spec[0], ignore_1d=spec[1])
  if spec[2] != directions_lib.filter_axes(params):
    out["filter_axis"] = list(spec[2])
  return out


def _direction(spec, material, params, k):
  """Direction k (pytree like params) and ||g_k|| of the Gaussian before preconditioning."""
  if spec is None:
    return jax.tree.map(lambda x: x[k], material), jnp.zeros((), jnp.float32)
  key, precond = material
  d = directions_lib.random_direction(key, params, k, norm=spec[0], ignore_1d=spec[1],
                                     filter_axis=spec[2])
  if precond is None:
    return d, jnp.zeros((), jnp.float32)
  return jax.tree.map(lambda a, p: a * p.astype(a.dtype), d, precond), trees.tree_norm(d)


def _solve_chunk(loss_fn, indices, args, *, spec, metric, two_sided, crossing, method, r_init,
                 r_max, rtol, max_iter, dtype, point_batch, data_batch, cache):
  """Radii of the directions `indices` (B,): one lax.while_loop over the chunk, SLOTS_PER_GROUP
  point groups of rays at a time, each slot taking the next ray when its own is done
  (bisection.refill). Ray j is direction j % B, along -d for j >= B (two-sided). TRACEABLE."""
  params, data, (tau, centre), material = args
  b = indices.shape[0]
  num_rays = 2 * b if two_sided else b
  one = lambda k: _direction(spec, material, params, k)
  dirs, base = jax.vmap(one)(indices) if cache else (None, None)
  slots = min(num_rays, SLOTS_PER_GROUP * point_batch)

  def metric_at(ray, r):
    signed = jnp.where(ray < b, r, -r)

    def delta_fn(ids):
      j = ray[ids] % b
      d = jax.tree.map(lambda x: x[j], dirs) if cache else jax.vmap(
          lambda i: one(indices[i])[0])(j)
      return engine.scale_rows(d, signed[ids])
    out = engine.point_metrics(loss_fn, params, delta_fn, jnp.arange(slots), data,
                               point_batch=point_batch, data_batch=data_batch)
    return out[metric]

  above = crossing == "above"
  is_crossed = lambda v: ~(v <= tau) if above else ~(v >= tau)
  cfg = bisection.Config(is_crossed, lambda v: bisection.log_score(v, tau, centre), r_init,
                         r_max, rtol, dtype)
  res = bisection.refill(metric_at, num_rays, slots, method, cfg, max_iter)
  if two_sided:
    res = {k: jnp.stack([v[:b], v[b:]], axis=1) for k, v in res.items()}
  if cache:
    res["direction_norm"] = jax.vmap(trees.tree_norm)(dirs)
  else:  # one direction at a time: the norms must not need the whole chunk in memory either
    norms = lambda k: (lambda d, g: (trees.tree_norm(d), g))(*one(k))
    res["direction_norm"], base = jax.lax.map(norms, indices)
  if spec is not None and material[1] is not None:
    res["base_norm"] = base
  return res


def _check_settings(params, r_init, r_max, rtol, chunk_size, point_batch, mesh) -> tuple:
  r_max = _check_positive("r_max", r_max)
  r_init = _check_positive("r_init", r_init)
  if r_init > r_max:
    raise ValueError(f"r_init={r_init!r} is larger than r_max={r_max!r}")
  if not 0 < float(rtol) < 1:
    raise ValueError(f"rtol={rtol!r} must be in (0, 1)")
  _check_count("chunk_size", chunk_size)
  if point_batch is not None:
    _check_count("point_batch", point_batch)
  engine.check_mesh(mesh)
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
      raise ValueError(f"params leaf {jax.tree_util.keystr(path)} has dtype "
                       f"{jnp.result_type(leaf)}; need floating point")
  return r_init, r_max, float(rtol)


def _run_chunks(solve, owners, args, num: int, step: int, mesh, store, on_chunk) -> list[dict]:
  """Every chunk of `step` directions: found in the store, or streamed through the engine."""
  parts: dict[int, dict] = {}
  starts = list(range(0, num, step))
  missing = []
  for start in starts:
    got = store.get(start) if store is not None else None
    if got is None:
      missing.append(start)
    else:
      parts[start] = got
      if on_chunk is not None:
        on_chunk(min(start + step, num), num, {**got, "resumed": True})
  runs = []  # maximal runs of consecutive missing chunks: one stream each
  for start in missing:
    if runs and runs[-1][1] == start:
      runs[-1][1] = min(start + step, num)
    else:
      runs.append([start, min(start + step, num)])
  for lo, hi in runs:
    for c_lo, c_hi, got in engine.stream(solve, owners, hi - lo, args, start=lo, chunk_size=step,
                                         exact_chunk=True, mesh=mesh):
      got = {k: np.asarray(v) for k, v in got.items()}
      if store is not None:
        store.put(c_lo, got)
      parts[c_lo] = got
      if on_chunk is not None:
        on_chunk(c_hi, num, {**got, "resumed": False})
  return [parts[s] for s in starts]


def radii(loss_fn, params: PyTree, directions, *, threshold: float, data: PyTree | None = None,
          metric: str = "loss", crossing: str | None = None, relative: bool = False,
          r_init: float = 0.125, r_max: float = 64.0, rtol: float = 1e-4,
          max_iter: int | None = None, two_sided: bool = False, chunk_size: int = 512,
          point_batch: int | None = None, data_batch: int | None = None,
          cache_directions: bool | None = None,
          mesh=None, store: ChunkStore | None = None,
          on_chunk: Callable[[int, int, dict], None] | None = None,
          method: str = "bisection") -> Radii:
  """Basin radius of θ* = params along K directions (module docstring).

  Args:
    loss_fn: `loss_fn(params, batch)` (or `loss_fn(params)` when data is None) returning a scalar
      batch-mean loss or a dict of batch-mean metrics; any callable, hashable or not.
    params: θ*, a pytree of float arrays.
    directions: a stacked pytree like params with leaves (K, *leaf.shape), or `RandomDirections`
      (generated chunk by chunk: memory for one chunk only).
    threshold: τ. On the metric's absolute value; with relative=True, on its change from the
      centre (loss above centre + τ, accuracy below centre - τ).
    data: the batch the metric is computed on (all of it: exact means), e.g. the train set.
    metric: which metric of loss_fn's dict ("loss" for a scalar loss_fn).
    crossing: "above" or "below"; default "below" for metrics whose name contains "acc",
      else "above". NaN/inf metrics count as crossed.
    r_init, r_max: first bracketing radius and the largest radius tried, in units of the direction.
    rtol: relative tolerance: r* <= radius <= r*·(1 + rtol) for a metric that crosses once.
      (In high dimension this bounds log-volume's bias by n·log(1 + rtol) nats.)
    max_iter: evaluation cap per ray; default covers bracketing plus bisection to rtol plus 30
      (either method).
    two_sided: also the radius along -d_k (radius gets a trailing axis (+, -)).
    chunk_size: directions per compiled call and device (fewer when K is smaller); each device
      keeps SLOTS_PER_GROUP·point_batch rays in flight, a slot taking the next ray of its chunk
      when its own is done.
    point_batch, data_batch: the engine's chunking (engine.point_metrics); None: engine.sizes'
      defaults (8 points and all examples for models up to 2^16 parameters).
    cache_directions: build a chunk's directions once per chunk (chunk·|θ| floats) rather than in
      every bisection step; default when that is under 256 MB.
    mesh: a jax.sharding.Mesh (engine.point_mesh()): chunks are sharded over its points axis,
      each device bisecting its own share; same radii on any device count. None: every local
      CPU device on a CPU (engine.host.default_mesh), else one device.
    store: a ChunkStore: finished chunks are saved and found again (resumable sweeps).
    on_chunk: called as on_chunk(done, K, arrays) after every chunk (progress); arrays: the
      chunk's results (num_evals counts the points it evaluated; a chunk found in `store`
      comes with arrays["resumed"] = True).
    method: how the bracket is refined, both to the same rtol from the same bracket:
      "bisection" (default): halving (bracket_and_bisect); radii depend on the metric only
      through crossed / not crossed, so they are bit-identical for any chunk_size, point_batch,
      device count or resume. "chandrupatla": safeguarded interpolation of
      g = log((m - m(θ*)) / (τ - m(θ*))) in log r (bracket_and_interpolate; Chandrupatla 1997,
      Brent 1973): about 0.4x the evaluations on smooth losses (6.2 vs 15.7 per direction on
      the swiss-roll MLP), at most about one more on step-like metrics. Its radii use the
      metric's values, so they are bit-identical across chunk sizes, device counts and resumes
      at a fixed point_batch / data_batch, but move within rtol when those change the last bits
      of the metric (XLA's batched kernels). Stores record a method other than bisection.

  Returns:
    Radii (numpy).

  Raises:
    ValueError: trees unlike params, K <= 0, r_max <= 0, r_init outside (0, r_max], rtol outside
      (0, 1), a threshold the centre already crosses, non-finite metrics at the centre, an
      unknown method.
  """
  if method not in METHODS:
    raise ValueError(f"method={method!r}; allowed: {', '.join(METHODS)}")
  r_init, r_max, rtol = _check_settings(params, r_init, r_max, rtol, chunk_size, point_batch,
                                        mesh)
  point_batch = engine.sizes.point_batch_for(params, point_batch)
  data_batch = engine.sizes.data_batch_for(params, data, data_batch)
  mesh = engine.host.resolve_mesh(mesh)
  sweep = _sweep_of(directions, params)
  if sweep.dim == 0:
    raise ValueError("directions move no coordinate (n = 0): nothing to measure")
  centre = centre_metrics(loss_fn, params, data, data_batch=data_batch)
  bad = {k: v for k, v in centre.items() if not math.isfinite(v)}
  if bad:
    raise ValueError(f"non-finite metric at the centre: {bad}; the centre must be a finite minimum")
  tau, crossing = _resolve_threshold(centre, metric, threshold, crossing, relative)
  dtype = jnp.result_type(*jax.tree.leaves(params))
  if max_iter is None:
    max_iter = int(math.ceil(math.log2(r_max / r_init))) + 2 + \
        int(math.ceil(math.log2(1.0 / rtol))) + 30
  if cache_directions is None:
    cache_directions = chunk_size * trees.num_params(params) * 4 <= 256 * 2 ** 20
  solve = engine.Bound(_solve_chunk, spec=sweep.spec, metric=metric, two_sided=bool(two_sided),
                       crossing=crossing, method=method, r_init=r_init, r_max=r_max, rtol=rtol,
                       max_iter=int(max_iter), dtype=jnp.dtype(dtype), point_batch=int(point_batch),
                       data_batch=data_batch, cache=bool(cache_directions))
  devices = engine.sharding.axis_size(mesh, engine.sharding.POINT_AXIS)
  # Fewer directions than a full chunk per device: one chunk of just enough (padding is work).
  step = min(int(chunk_size), -(-sweep.num // devices)) * devices
  if store is not None:
    store.bind(fingerprint(
        params=params, data=data, directions=sweep.material, num=sweep.num,
        spec=None if sweep.spec is None else _spec_json(sweep.spec, params),
        threshold=tau, metric=metric, crossing=crossing, r_init=r_init, r_max=r_max, rtol=rtol,
        max_iter=max_iter, two_sided=bool(two_sided), step=step, point_batch=point_batch,
        data_batch=data_batch, **({} if method == "bisection" else {"method": method})))
  levels = (jnp.asarray(tau, dtype), jnp.asarray(centre[metric], dtype))
  args = engine.sharding.place((params, data, levels, sweep.material), mesh)
  parts = _run_chunks(solve, (loss_fn,), args, sweep.num, step, mesh, store, on_chunk)
  res = {k: np.concatenate([p[k] for p in parts])[:sweep.num] for k in parts[0]}
  return Radii(radius=res["radius"], censored=res["censored"], converged=res["converged"],
               value=res["value"], num_evals=res["num_evals"],
               direction_norm=res["direction_norm"], base_norm=res.get("base_norm"),
               dim=int(sweep.dim), measure=sweep.measure, metric=metric, crossing=crossing,
               threshold=tau, centre_value=centre[metric], rtol=rtol, r_max=r_max)
