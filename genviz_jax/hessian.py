"""Curvature of the training loss: Hessian-vector products, top eigenpairs, trace, spectral density.

Everything is matrix-free. The operator is the Hessian H of the dataset-mean loss

  L(θ) = (1/N) Σ_n ℓ(θ; x_n, y_n)

at fixed parameters θ, applied to flat vectors of length n = number of parameters (the pytree is
flattened with `jax.flatten_util.ravel_pytree`). Data are processed in chunks of `data_batch`
examples by the engine's one exact chunked mean (engine.chunked_mean: chunk results weighted by
their size B_c / N, so a ragged last chunk still gives the EXACT full-dataset value); with a
mesh the examples are split over its devices and the sums psum-reduced (engine.sharded_mean).

`loss_fn(params, batch)` returns the batch-mean loss as a scalar or a dict with a "loss" entry
(the engine's metric contract), e.g. `models.metric_fn(model, model_state)`, which runs BatchNorm in inference mode with
its running statistics held fixed; `loss_fn(params)` when `data` is None.

Algorithms (sources):
- HVP by forward-over-reverse differentiation, jvp(grad L) (Pearlmutter 1994; JAX autodiff
  cookbook): one HVP costs a small multiple of one gradient.
- Top eigenpairs: Lanczos (1950) with full re-orthogonalization (classical Gram-Schmidt applied
  twice, "twice is enough", Giraud et al. 2005). On breakdown (the Krylov space is invariant, as it
  is for any matrix with fewer distinct eigenvalues than steps) the iteration restarts from a random
  vector orthogonal to the basis, so every Ritz value stays an eigenvalue estimate; matfree 0.6.3,
  the library considered, returns spurious Ritz values in that case.
- Trace: Hutchinson (1989) with Rademacher probes; a Student-t interval on the probe mean.
- Spectral density: stochastic Lanczos quadrature (Golub & Meurant 1994; Ubaru, Chen & Saad 2017;
  as in PyHessian, Yao et al. 2020): per run, nodes = Ritz values, weights = squared first
  components of the eigenvectors of the tridiagonal matrix; Gaussian-smoothed.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from genviz_jax import engine

LossFn = Callable[..., Any]


# --------------------------------------------------------------------------- loss, grad, HVP

def _mean(fn: Callable, data, data_batch: int | None, mesh):
  """fn(None) without data; else the exact dataset mean of fn(batch) (engine: chunked, and split
  over every device of `mesh` when given)."""
  if data is None:
    return fn(None)
  return engine.sharded_mean(fn, data, mesh=mesh, data_batch=data_batch)


def _call(f: LossFn, params, batch):
  return f(params) if batch is None else f(params, batch)


def _scalar(loss_fn: LossFn) -> LossFn:
  """loss_fn with its result reduced to the scalar "loss" (engine.scalar_loss)."""
  return lambda p, *b: engine.scalar_loss(loss_fn(p, *b))


def loss_and_grad(loss_fn: LossFn, params, data=None, *, data_batch: int | None = None,
                  mesh=None):
  """(L(θ), ∇L(θ)) of the dataset-mean loss, exact under chunking. Traceable.

  Args:
    loss_fn: `loss_fn(params, batch)` -> scalar or {"loss": scalar, ...}; `loss_fn(params)` when
      data is None.
    params: pytree θ.
    data: pytree of arrays with leading axis N, or None.
    data_batch: examples per chunk (None: all at once).
    mesh: a jax.sharding.Mesh: the examples are split over all its devices (sums psum-reduced).
  Returns:
    (scalar, pytree like params).
  """
  f = _scalar(loss_fn)
  return _mean(lambda batch: jax.value_and_grad(lambda p: _call(f, p, batch))(params), data,
               data_batch, mesh)


def hvp(loss_fn: LossFn, params, vector, data=None, *, data_batch: int | None = None, mesh=None):
  """H(θ)·v for the dataset-mean loss by forward-over-reverse (jvp of grad). Traceable.

  Args:
    loss_fn, params, data, data_batch, mesh: as in `loss_and_grad`.
    vector: pytree like params.
  Returns:
    pytree like params.
  """
  f = _scalar(loss_fn)

  def chunk_hvp(batch):
    return jax.jvp(jax.grad(lambda p: _call(f, p, batch)), (params,), (vector,))[1]

  return _mean(chunk_hvp, data, data_batch, mesh)


class HessianOperator:
  """The Hessian of the dataset-mean loss at `params` as a linear map on flat (n,) vectors.

  The data and the flat parameters are arguments of every compiled function (never baked in as
  constants), so a large dataset does not bloat the compiled program. Each algorithm below
  compiles once per operator and size. The operator holds the loss only as long as it lives.

  Args:
    loss_fn, params, data, data_batch, mesh: as in `loss_and_grad` (with a mesh, every
      Hessian-vector product splits the examples over the mesh's devices; same numbers up to
      float32 summation order).
    matmul_precision: jax.default_matmul_precision while tracing ("highest": full float32
      products on GPUs/TPUs, which otherwise use TF32/bf16 passes); None keeps the default.

  Attributes:
    dim: n, the number of parameters.
    dtype: dtype of the flat parameter vector.
    unravel: flat (n,) -> params pytree.
    flat_params: (n,) θ.
  """

  def __init__(self, loss_fn: LossFn, params, data=None, *, data_batch: int | None = None,
               matmul_precision: str | None = "highest", mesh=None):
    self.loss_fn = _scalar(loss_fn)
    # GPUs default to TF32 products for float32; measured on an H100, that moved the top
    # eigenvalue of the swiss-roll MLP by 0.4%. A measurement wants full float32.
    self.matmul_precision = matmul_precision
    self.flat_params, self.unravel = ravel_pytree(params)
    self.dim = int(self.flat_params.shape[0])
    self.dtype = self.flat_params.dtype
    if self.dim == 0:
      raise ValueError("params has 0 parameters; the Hessian needs at least 1")
    if data is not None:
      engine.data_size(data)
    engine.metrics.optional_positive_int("data_batch", data_batch)
    engine.check_mesh(mesh)
    # Uncommitted (engine.sharding.place): parameters restored from a checkpoint sit on device 0
    # and would not join a computation over the mesh's devices.
    self.flat_params, self._data = engine.sharding.place((self.flat_params, data), mesh)
    self.data_batch = data_batch
    self.mesh = mesh
    self._cache: dict = {}
    self._matvec_jit = jax.jit(self._precise(self.matvec_fn))
    self._grad_jit = jax.jit(self._precise(self.loss_and_grad_fn))

  def _precise(self, fn):
    if self.matmul_precision is None:
      return fn

    def wrapped(*args):
      with jax.default_matmul_precision(self.matmul_precision):
        return fn(*args)
    return wrapped

  def matvec_fn(self, flat, data, v):
    """H(flat)·v, (n,) -> (n,), with data = the operator's data. Traceable."""
    def chunk_hvp(batch):
      g = lambda x: ravel_pytree(jax.grad(lambda p: _call(self.loss_fn, p, batch))(
          self.unravel(x)))[0]
      return jax.jvp(g, (flat,), (v.astype(flat.dtype),))[1]

    return _mean(chunk_hvp, data, self.data_batch, self.mesh)

  def loss_and_grad_fn(self, flat, data):
    """(L, ∇L) at flat, (n,) -> (scalar, (n,)). Traceable."""
    def chunk(batch):
      return jax.value_and_grad(lambda x: _call(self.loss_fn, self.unravel(x), batch))(flat)
    return _mean(chunk, data, self.data_batch, self.mesh)

  def matvec(self, v: jax.Array) -> jax.Array:
    """H·v for a flat (n,) vector (compiled once)."""
    v = jnp.asarray(v)
    if v.shape != (self.dim,):
      raise ValueError(f"vector shape {v.shape} does not match the parameter count ({self.dim},)")
    return self._matvec_jit(self.flat_params, self._data, engine.sharding.place(v, self.mesh))

  def loss_and_grad(self):
    """(L(θ), ∇L(θ) flat (n,)) over the whole dataset (compiled once)."""
    return self._grad_jit(self.flat_params, self._data)

  def compiled(self, name: str, build: Callable[["BoundOps"], Callable]):
    """jit(build(ops)) taking (*args), cached by name.

    `ops` carries traced θ and data: ops.matvec(v) -> H v, ops.loss_and_grad(x) -> (L, ∇L) at
    a flat point x, ops.flat = θ. They are jit arguments, not constants.
    """
    if name not in self._cache:
      def run(flat, data, *args):
        ops = BoundOps(flat, lambda v: self.matvec_fn(flat, data, v),
                       lambda x: self.loss_and_grad_fn(x, data))
        return build(ops)(*args)
      self._cache[name] = jax.jit(self._precise(run))
    fn = self._cache[name]
    return lambda *args: fn(self.flat_params, self._data, *args)


@dataclasses.dataclass(frozen=True)
class BoundOps:
  """What `HessianOperator.compiled` hands to an algorithm: traced θ and its data."""
  flat: jax.Array
  matvec: Callable[[jax.Array], jax.Array]
  loss_and_grad: Callable[[jax.Array], tuple]


# ------------------------------------------------------------------------------------- Lanczos

@dataclasses.dataclass(frozen=True)
class LanczosState:
  """Output of `lanczos`: H ≈ Q^T T Q on the Krylov space.

  alphas: (m,) diagonal of T; betas: (m,) with betas[:m-1] the off-diagonal of T and betas[m-1]
  the norm of the residual after the last step (zero at exact convergence); basis: (m, n) rows
  q_j, orthonormal; num_restarts: scalar int, breakdowns met (each restarted from a random vector).
  """
  alphas: jax.Array
  betas: jax.Array
  basis: jax.Array
  num_restarts: jax.Array


jax.tree_util.register_dataclass(
    LanczosState, data_fields=["alphas", "betas", "basis", "num_restarts"], meta_fields=[])


def lanczos(matvec: Callable[[jax.Array], jax.Array], v0: jax.Array, num_steps: int, *,
            key: jax.Array) -> LanczosState:
  """Lanczos tridiagonalization of a symmetric operator with full re-orthogonalization. Traceable.

  Args:
    matvec: symmetric linear map (n,) -> (n,).
    v0: (n,) start vector (normalized here; must be non-zero).
    num_steps: m <= n Krylov steps (matvec calls), a Python int.
    key: PRNG key for restart vectors after a breakdown.
  Returns:
    LanczosState. Cost: m matvecs + O(m² n) flops; memory m·n.
  """
  n = v0.shape[0]
  m = int(num_steps)
  if not 1 <= m <= n:
    raise ValueError(f"num_steps={num_steps!r} must be between 1 and the dimension {n}")
  dtype = v0.dtype
  eps = jnp.finfo(dtype).eps
  # A residual below this (relative to the largest |α|, |β| so far) is rounding noise of an
  # invariant subspace, not a direction.
  tol = eps ** 0.75

  def orthogonalize(basis, w):
    for _ in range(2):  # "twice is enough"
      w = w - basis.T @ (basis @ w)
    return w

  q0 = v0 / jnp.linalg.norm(v0)
  basis = jnp.zeros((m, n), dtype).at[0].set(q0)

  def step(j, carry):
    basis, alphas, betas, scale, restarts = carry
    q = basis[j]
    w = matvec(q).astype(dtype)
    alpha = jnp.vdot(q, w)
    # Rows > j of basis are still zero, so this projects on q_0..q_j only.
    w = orthogonalize(basis, w)
    beta = jnp.linalg.norm(w)
    scale = jnp.maximum(scale, jnp.maximum(jnp.abs(alpha), beta))
    broke = beta <= tol * scale

    def restart(_):
      r = orthogonalize(basis, jax.random.normal(jax.random.fold_in(key, j), (n,), dtype))
      return r / jnp.linalg.norm(r)

    nxt = jax.lax.cond(broke, restart, lambda w: w / beta, w)
    beta = jnp.where(broke, jnp.zeros_like(beta), beta)
    basis = basis.at[j + 1].set(nxt, mode="drop")  # j + 1 = m: dropped
    restarts = restarts + jnp.where(broke & (j + 1 < m), 1, 0)
    return basis, alphas.at[j].set(alpha), betas.at[j].set(beta), scale, restarts

  init = (basis, jnp.zeros(m, dtype), jnp.zeros(m, dtype), jnp.zeros((), dtype),
          jnp.zeros((), jnp.int32))
  basis, alphas, betas, _, restarts = jax.lax.fori_loop(0, m, step, init)
  return LanczosState(alphas, betas, basis, restarts)


def tridiagonal_eigh(alphas: jax.Array, betas: jax.Array):
  """Eigen-decomposition of the m×m tridiagonal T (diag alphas (m,), off-diag betas[:m-1]).

  Returns (values (m,) ascending, vectors (m, m) columns).
  """
  m = alphas.shape[0]
  t = jnp.diag(alphas) + jnp.diag(betas[:m - 1], 1) + jnp.diag(betas[:m - 1], -1)
  return jnp.linalg.eigh(t)


# ---------------------------------------------------------------------------- top eigenpairs

@dataclasses.dataclass(frozen=True)
class Eigenpairs:
  """Top-k Hessian eigenpairs, largest (algebraic) first.

  eigenvalues: (k,) in loss units per parameter-unit²; eigenvectors: (k, n) flat unit vectors;
  residuals: (k,) ||H v - λ v|| computed with k extra HVPs, an a-posteriori error bound: some true
    eigenvalue lies within it of each Ritz value (Weyl / Bauer-Fike for symmetric H);
  num_steps: Lanczos steps used; num_restarts: breakdowns met; smallest: smallest Ritz value.
  """
  eigenvalues: np.ndarray
  eigenvectors: jax.Array
  residuals: np.ndarray
  num_steps: int
  num_restarts: int
  smallest: float


def _check_finite(what: str, *arrays) -> None:
  for a in arrays:
    if not np.all(np.isfinite(np.asarray(a))):
      raise ValueError(f"non-finite Hessian-vector product during {what}; check the loss at these "
                       "parameters (finite values are required)")


def _check_k(name: str, k, dim: int) -> int:
  if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k <= dim:
    raise ValueError(f"{name}={k!r} must be an integer between 1 and the parameter count {dim}")
  return int(k)


def top_eigenpairs(op: HessianOperator, k: int = 1, *, num_steps: int | None = None,
                   key: jax.Array | None = None) -> Eigenpairs:
  """The k largest eigenvalues of H and their eigenvectors by Lanczos (full re-orthogonalization).

  Args:
    op: the Hessian operator.
    k: how many (1 <= k <= n).
    num_steps: Lanczos steps m, k <= m <= n; default min(n, max(2k, k + 30)). Extremal eigenvalues
      converge first; check `residuals` and raise m if they are not small.
    key: PRNG key for the start vector (default PRNGKey(0)).
  """
  k = _check_k("k", k, op.dim)
  m = min(op.dim, max(2 * k, k + 30)) if num_steps is None else num_steps
  m = _check_k("num_steps", m, op.dim)
  if m < k:
    raise ValueError(f"num_steps={m} must be >= k={k}")
  key = jax.random.PRNGKey(0) if key is None else key

  def build(ops):
    def run(key):
      k0, k1 = jax.random.split(key)
      v0 = jax.random.normal(k0, (op.dim,), op.dtype)
      st = lanczos(ops.matvec, v0, m, key=k1)
      vals, vecs = tridiagonal_eigh(st.alphas, st.betas)
      order = jnp.argsort(-vals)[:k]
      ritz = vecs[:, order].T @ st.basis
      ritz = ritz / jnp.linalg.norm(ritz, axis=1, keepdims=True)
      # The true residual (k more HVPs), not Lanczos' |β_m s_m|: that one ignores rounding and
      # underflows to 0 when the top of the spectrum has converged.
      res = jax.lax.map(lambda x: jnp.linalg.norm(ops.matvec(x[1:]) - x[0] * x[1:]),
                        jnp.concatenate([vals[order][:, None], ritz], axis=1))
      return vals[order], ritz, res, st.num_restarts, vals[0], st.alphas, st.betas
    return run

  vals, vecs, res, restarts, smallest, alphas, betas = op.compiled(f"top{k}_{m}", build)(key)
  _check_finite("Lanczos", alphas, betas)
  return Eigenpairs(np.asarray(vals), vecs, np.asarray(res), m, int(restarts), float(smallest))


# ----------------------------------------------------------------------------------- trace

@dataclasses.dataclass(frozen=True)
class TraceEstimate:
  """Hutchinson estimate of tr(H): mean of z^T H z over Rademacher z.

  trace: the estimate; stderr: its standard error; ci: (low, high) Student-t interval at
  `confidence`; samples: (S,) the z^T H z values.
  """
  trace: float
  stderr: float
  ci: tuple[float, float]
  confidence: float
  num_samples: int
  samples: np.ndarray


def hutchinson_trace(op: HessianOperator, num_samples: int = 100, *, key: jax.Array | None = None,
                     confidence: float = 0.95, probe_batch: int = 1) -> TraceEstimate:
  """tr(H) ≈ (1/S) Σ_s z_s^T H z_s, z_s ∈ {±1}^n (Hutchinson 1989), with a t-interval.

  Args:
    op: the Hessian operator.
    num_samples: S >= 2 probes.
    key: PRNG key (default PRNGKey(1)).
    confidence: two-sided level of the interval, in (0, 1).
    probe_batch: probes vectorized per step (memory x probe_batch).
  """
  if not isinstance(num_samples, (int, np.integer)) or num_samples < 2:
    raise ValueError(f"num_samples={num_samples!r} must be an integer >= 2 (an interval needs 2)")
  if not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence={confidence!r} must be in (0, 1)")
  key = jax.random.PRNGKey(1) if key is None else key
  s = int(num_samples)

  def build(ops):
    def run(key):
      z = jax.random.rademacher(key, (s, op.dim), op.dtype)
      return jax.lax.map(lambda zi: jnp.vdot(zi, ops.matvec(zi)), z, batch_size=probe_batch)
    return run

  samples = np.asarray(op.compiled(f"hutch{s}_{probe_batch}", build)(key), np.float64)
  _check_finite("Hutchinson", samples)
  from scipy import stats  # local: scipy only for the quantile
  mean = float(samples.mean())
  se = float(samples.std(ddof=1) / np.sqrt(s))
  half = float(stats.t.ppf(0.5 + confidence / 2, df=s - 1)) * se
  return TraceEstimate(mean, se, (mean - half, mean + half), confidence, s, samples)


# ------------------------------------------------------------------------- spectral density

@dataclasses.dataclass(frozen=True)
class SLQ:
  """Stochastic Lanczos quadrature of the spectral measure (1/n) Σ_i δ(λ - λ_i).

  nodes: (R, m) Ritz values per run; weights: (R, m) quadrature weights per run (each row sums
  to 1); dim: n. The trace estimate is n · mean_r Σ_j w_rj λ_rj.
  """
  nodes: np.ndarray
  weights: np.ndarray
  dim: int

  @property
  def trace(self) -> float:
    return float(self.dim * np.mean(np.sum(self.nodes * self.weights, axis=1)))


def slq(op: HessianOperator, num_runs: int = 4, num_steps: int = 80, *,
        key: jax.Array | None = None) -> SLQ:
  """Spectral density quadrature of H as PyHessian: R Lanczos runs from Rademacher vectors.

  Args:
    op: the Hessian operator.
    num_runs: R independent runs (>= 1).
    num_steps: m Lanczos steps per run (1 <= m <= n).
    key: PRNG key (default PRNGKey(2)).
  """
  if isinstance(num_runs, bool) or not isinstance(num_runs, (int, np.integer)) or num_runs < 1:
    raise ValueError(f"num_runs={num_runs!r} must be an integer >= 1")
  r = int(num_runs)
  m = _check_k("num_steps", num_steps, op.dim)
  key = jax.random.PRNGKey(2) if key is None else key

  def build(ops):
    def one(key):
      k0, k1 = jax.random.split(key)
      st = lanczos(ops.matvec, jax.random.rademacher(k0, (op.dim,), op.dtype), m, key=k1)
      vals, vecs = tridiagonal_eigh(st.alphas, st.betas)
      return vals, vecs[0] ** 2, st.alphas, st.betas
    return lambda keys: jax.lax.map(one, keys)

  nodes, weights, alphas, betas = op.compiled(f"slq{r}_{m}", build)(jax.random.split(key, r))
  _check_finite("stochastic Lanczos quadrature", alphas, betas)
  return SLQ(np.asarray(nodes, np.float64), np.asarray(weights, np.float64), op.dim)


def spectral_density(result: SLQ, grid: np.ndarray | None = None, *, sigma: float | None = None,
                     num_points: int = 2000):
  """Gaussian-smoothed spectral density from SLQ, integrating to 1 over the grid.

  Args:
    result: an `SLQ`.
    grid: (G,) eigenvalue grid; default num_points points spanning the nodes with a margin.
    sigma: kernel width; default PyHessian's sqrt(1e-5 · max(1, λ_max - λ_min)).
  Returns:
    (grid (G,), density (G,)) in 1/eigenvalue-units.
  """
  nodes, weights = result.nodes, result.weights
  lo, hi = float(nodes.min()), float(nodes.max())
  if sigma is None:
    sigma = float(np.sqrt(1e-5 * max(1.0, hi - lo)))
  if not sigma > 0:
    raise ValueError(f"sigma={sigma!r} must be > 0")
  if grid is None:
    pad = 0.05 * max(hi - lo, 1.0) + 5 * sigma
    grid = np.linspace(lo - pad, hi + pad, num_points)
  grid = np.asarray(grid, np.float64)
  z = (grid[:, None, None] - nodes[None]) / sigma
  dens = np.sum(weights[None] * np.exp(-0.5 * z ** 2), axis=(1, 2)) / (
      nodes.shape[0] * sigma * np.sqrt(2 * np.pi))
  area = np.trapezoid(dens, grid) if grid.size > 1 else 0.0
  return grid, dens / area if area > 0 else dens
