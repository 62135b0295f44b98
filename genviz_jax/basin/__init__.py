"""Basin radius along many random directions, and the basin volume it implies.

  radii       basin.radii: radii of K directions through the engine (resumable, sharded)
  bisection   the root finder: bracketing and bisection of all directions of a chunk at once
  sampling    RandomDirections (made on the fly) and the det-1 diagonal preconditioner
  volume      log_volume: V_ball(n)·E[r^n] in float64 with ESS, bootstrap CI, censored count
  gaussian    log_gaussian_mass: the basin's mass under a Gaussian prior (Scherlis & Belrose),
              each ray's integral exact (regularized incomplete gamma; offset centre: quadrature)
  store       ChunkStore: finished chunks on disk, so a killed sweep resumes

Example:

  dirs = basin.RandomDirections(jax.random.key(0), 10_000)      # filter-normalized
  r = basin.radii(loss_fn, params, dirs, threshold=1.0, data=train)
  print(r.volume().to_json())
  print(r.gaussian_mass(sigma=1.0).to_json())                  # isotropic directions (norm="none")
"""

from genviz_jax.basin.bisection import bracket_and_bisect
from genviz_jax.basin.gaussian import GaussianMass, log_gaussian_mass, offset_projections
from genviz_jax.basin.radii import Radii, centre_metrics, radii
from genviz_jax.basin.sampling import RandomDirections, diagonal_preconditioner
from genviz_jax.basin.store import ChunkStore, fingerprint
from genviz_jax.basin.volume import MEASURES, VolumeEstimate, log_ball_volume, log_volume

__all__ = ["ChunkStore", "GaussianMass", "MEASURES", "Radii", "RandomDirections",
           "VolumeEstimate", "bracket_and_bisect", "centre_metrics", "diagonal_preconditioner",
           "fingerprint", "log_ball_volume", "log_gaussian_mass", "log_volume",
           "offset_projections", "radii"]
