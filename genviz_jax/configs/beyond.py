"""The second job: beyond the paper, along its references (experiments.beyond).

  python -m experiments.beyond --workdir=runs/beyond
  python -m experiments.beyond --config=experiments/configs/beyond.py:quick --workdir=runs/bq

Phases (genviz_jax/beyond/):
  minima        two good swiss-roll minima (seeds 0 and 1) and a bad one (seed 0), with
                parameter snapshots; the paper job's recipe (configs/swissroll.py)
  connectivity  Garipov et al. 2018: Bézier and polygonal-chain curves good<->good and good<->bad,
                barriers against the straight line, basin radii along the curve
  trajectory    Li et al. 2018 §7: the good and the bad run on their PCA planes
  skip          Li et al. 2018 §5: ResNets on digits with and without skip connections, their
                filter-normalized 2-D landscapes and how non-convex they are
Outputs: report.html, figures/, paper_summary.json (results.connectivity, .trajectory, .skip).
Measured runtime: BUILD_NOTES.md. `quick` checks the machinery in a few minutes; its short
schedules do not reach real minima.
"""

import ml_collections

from genviz_jax.configs import connectivity as connectivity_cfg
from genviz_jax.configs import trajectory as trajectory_cfg


def get_config(variant: str = ""):
  variants = ("", "full", "quick")
  if variant not in variants:
    raise ValueError(f"config variant {variant!r} is not one of: full, quick")
  quick = variant == "quick"
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.phases = "minima,connectivity,trajectory,skip"

  c.minima = ml_collections.ConfigDict()
  c.minima.clean_steps = 2000 if quick else 20000
  c.minima.poisoned_steps = 4000 if quick else 100000
  c.minima.other_seed = 1          # the second good minimum
  c.minima.snapshots = 100         # parameter snapshots per run (trajectories)

  c.connectivity = connectivity_cfg.get_config("quick" if quick else "")
  c.trajectory = trajectory_cfg.get_config("quick" if quick else "")

  c.skip = ml_collections.ConfigDict()
  c.skip.quick = quick             # digits_resnet's quick variants (a few steps)
  c.skip.grid_points = 7 if quick else 15
  c.skip.range = 1.0               # [-range, range]^2 in filter-normalized units (Li et al.)
  c.skip.direction_seed = 0
  return c
