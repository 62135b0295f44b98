"""genviz_jax: see and measure why neural networks generalize, in JAX.

    import genviz_jax as gv
    dirs = gv.basin.RandomDirections(jax.random.key(0), 10_000)
    r = gv.basin.radii(loss_fn, params, dirs, threshold=1.0, data=train)

Every evaluator takes the model's parameters as any pytree and its loss as any callable
`loss_fn(params, batch)` (a scalar batch mean, or a dict of them), hashable or not, and
`mesh=` (a jax.sharding.Mesh from gv.engine.point_mesh()) to shard over devices and hosts.
On a CPU, importing genviz_jax makes one XLA device per core (if jax has not started) and
point evaluations use them all by default (genviz_jax.engine.host).

Layers (imports point down only; checked by import-linter in CI):
  paper        the paper job: phases, claims, report          (binaries: experiments/, not installed)
  beyond       the second job: connectivity, trajectories, skip connections (its own report)
  jobs         workdir-level studies: train, landscape, basin, sharpness
  landscape    1-D, 2-D and interpolation surfaces (Li et al. 2018)
  basin        radii along many directions, log-volume with ESS and intervals, resumable sweeps
  sharpness    PAC-Bayes σ' and ε-sharpness;  hessian: HVP, Lanczos, Hutchinson, SLQ
  boundary     decision-boundary grids of one or many parameter points
  connectivity curves between minima (Garipov et al. 2018): Bézier / polygonal chain, barriers
  trajectory   PCA planes of training trajectories (Li et al. 2018, §7)
  engine       the one evaluation engine: metrics at many parameter points, sharded
  directions   filter-normalized random directions, any layout (filter_axis)
  trees, files, progress   small shared utilities
Beside them: data, models, objectives, train, train_config, workdir, ensemble (training), and
plots, report (figures and HTML from arrays). Submodules load on first use.
"""

import importlib

from genviz_jax.engine import host as _host

__version__ = "0.1.0"

# One XLA CPU device per core, if jax has not started yet and the user did not choose
# (genviz_jax.engine.host; GENVIZ_JAX_HOST_DEVICES=1 turns it off).
_host.configure()

_SUBMODULES = (
    "basin", "beyond", "boundary", "configs", "connectivity", "data", "directions", "engine", "ensemble", "files", "hessian",
    "jobs", "landscape", "models", "objectives", "paper", "plots", "progress", "report",
    "sharpness", "train", "train_config", "trajectory", "trees", "workdir",
)
__all__ = list(_SUBMODULES)


def __getattr__(name: str):
  if name in _SUBMODULES:
    return importlib.import_module(f"genviz_jax.{name}")
  raise AttributeError(f"module 'genviz_jax' has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + list(_SUBMODULES))
