"""The PCA plane of a training trajectory (experiments.trajectory).

  python -m experiments.train --config=experiments/configs/swissroll.py \
      --config.snapshot_every=200 --workdir=runs/good
  python -m experiments.trajectory --workdir=runs/good

Li et al. 2018, §7: the saved iterates θ_i projected onto the top-2 principal directions of
{θ_i − θ_final}, drawn over the loss contour of that plane, with each direction's explained
variance on its axis. Needs a run trained with snapshot_every > 0.
Writes WORKDIR/trajectory/ (or --outdir): trajectory.npz, trajectory.json, trajectory.png.
Variant `quick`: an 11x11 contour.
"""

import ml_collections


def get_config(variant: str = ""):
  variants = ("", "quick")
  if variant not in variants:
    raise ValueError(f"config variant {variant!r} is not one of: {', '.join(variants[1:])}")
  c = ml_collections.ConfigDict()
  c.grid_points = 31
  c.margin = 0.2              # the grid covers the path's range plus this share on every side
  c.split = "train"           # the contour's data
  c.point_batch = 8
  c.shard = True
  if variant == "quick":
    c.grid_points = 11
  return c
