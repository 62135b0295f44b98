"""The evaluation engine: metrics of a model at many parameter points θ + δ_k over a dataset.

Every landscape, basin, sharpness, curve and boundary feature is "evaluate metrics at K
parameter points over a dataset"; it lives here, once. Files, from the inside out:

  metrics    the metric contract (as_metric_dict) and the one exact chunked mean (chunked_mean)
  core       point_metrics: TRACEABLE; points in vmapped groups under lax.map, data in chunks
  deltas     which points: basis_delta (surfaces), direction_delta (basins), stacked_delta,
             noise_delta (PAC-Bayes noise)
  sharding   point_mesh, shard_points, sharded_point_metrics, sharded_mean (data over devices)
  cache      cached_jit: compiled functions keyed by the user's callables, held weakly
  host       one XLA device per CPU core at import; default_mesh (every local CPU device)
  sizes      default point_batch / data_batch from the model's size
  streaming  stream / evaluate_points: K points through one compiled chunk function

Example (a 51x51 loss surface of any model whose loss is `loss_fn(params, batch)`):

  basis = directions.random_directions(key, params, 2)      # leaves (2, *leaf.shape)
  g = np.linspace(-1, 1, 51)
  coeffs = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
  out = engine.evaluate_points(loss_fn, params, engine.basis_delta(basis, coeffs),
                               len(coeffs), train)       # {"loss": (2601,)}

Several cores on a CPU: one XLA CPU device runs a small model on one core, so importing
genviz_jax makes one XLA CPU device per core (host: unless jax has started or the user chose) and
point evaluations shard over them when no mesh is given (host.default_mesh). Batch sizes default
by model size (sizes).
"""

from genviz_jax.engine import host, sizes
from genviz_jax.engine.cache import Bound, cached_jit
from genviz_jax.engine.core import point_metrics
from genviz_jax.engine.deltas import (BasisDelta, DirectionDelta, NoiseDelta, StackedDelta,
                                      basis_delta, centre_delta, direction_delta, noise_delta,
                                      scale_rows, stacked_delta, stacked_points)
from genviz_jax.engine.metrics import (as_metric_dict, chunked_mean, chunked_sum, data_size,
                                       scalar_loss)
from genviz_jax.engine.host import default_mesh
from genviz_jax.engine.sharding import (check_mesh, point_mesh, shard_points, sharded_mean,
                                        sharded_point_metrics, to_host)
from genviz_jax.engine.streaming import evaluate_points, iter_evaluate_points, stream

__all__ = [
    "BasisDelta", "Bound", "DirectionDelta", "NoiseDelta", "StackedDelta", "as_metric_dict",
    "basis_delta", "cached_jit", "centre_delta", "check_mesh", "chunked_mean", "chunked_sum",
    "data_size", "default_mesh", "host", "sizes",
    "direction_delta", "evaluate_points", "iter_evaluate_points", "noise_delta", "point_mesh",
    "point_metrics", "scalar_loss", "scale_rows", "shard_points", "sharded_mean",
    "sharded_point_metrics", "stacked_delta", "stacked_points", "stream",
    "to_host",
]
