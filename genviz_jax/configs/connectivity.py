"""Mode connectivity between two trained workdirs (experiments.connectivity).

  python -m experiments.connectivity --workdir=runs/good --other_workdir=runs/good_seed1

Garipov et al. 2018 ("Loss Surfaces, Mode Connectivity, and Fast Ensembling of DNNs"): a
quadratic Bézier curve and a polygonal chain with one bend between the two minima, trained on
the train loss with t ~ U(0, 1) each step (Adam), then loss and accuracy along the straight line
and the curves on train and test, the barrier (max along the path minus the endpoints' mean) and
the basin radius along random filter-normalized directions at several points of the curve.
Writes WORKDIR/connectivity/ (or --outdir): curves.npz, connectivity.json, PNGs.
Variant `quick`: 300 curve steps, 21 points along the paths, 32 directions.
"""

import ml_collections


def get_config(variant: str = ""):
  variants = ("", "quick")
  if variant not in variants:
    raise ValueError(f"config variant {variant!r} is not one of: {', '.join(variants[1:])}")
  c = ml_collections.ConfigDict()
  c.kinds = "bezier,polychain"
  c.seed = 0
  c.num_steps = 3000          # curve training steps (t ~ U(0, 1) each)
  c.learning_rate = 0.005     # Adam
  c.batch_size = 0            # 0: the full training set every step
  c.num_t = 61                # points along every path
  c.splits = "train,test"
  c.radius_ts = "0,0.25,0.5,0.75,1"   # where on the first curve to measure basin radii
  c.num_directions = 200
  c.threshold = 1.0           # train cross-entropy, as the basin job
  c.r_max = 64.0
  c.point_batch = 8
  c.shard = True              # several local devices: points sharded over them
  if variant == "quick":
    c.num_steps = 300
    c.num_t = 21
    c.num_directions = 32
  return c
