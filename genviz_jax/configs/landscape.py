"""Loss landscapes of a trained workdir (experiments.landscape).

  python -m experiments.landscape --workdir=runs/swissroll_clean
  python -m experiments.landscape --workdir=runs/swissroll_clean \
      --other_workdir=runs/swissroll_poisoned          # + interpolation and overlaid 1-D curves

Filter-normalized random directions (Li et al.; biases zeroed), loss and accuracy on the train
and test sets: a 1-D line on [-line_range, line_range], a 2-D grid (default 51x51 on [-1, 1]^2),
and with --other_workdir the linear interpolation θ_a + α(θ_b - θ_a), α in [-0.5, 1.5].
Writes WORKDIR/landscape/ (or --outdir): line.npz, plane.npz, interpolation.npz and PNGs.
Variant `quick`: 21 points per line, 11x11 grid (a smoke test).
"""

import ml_collections


def get_config(variant: str = ""):
  variants = ("", "quick")
  if variant not in variants:
    raise ValueError(f"config variant {variant!r} is not one of: {', '.join(variants[1:])}")
  c = ml_collections.ConfigDict()
  c.kinds = "line,plane,interpolation"  # interpolation needs --other_workdir
  c.seed = 0
  c.norm = "filter"  # filter | layer | none
  c.ignore_1d = True
  c.splits = "train,test"
  c.line_points = 101
  c.line_range = 1.0
  c.grid_points = 51
  c.grid_lo = -1.0
  c.grid_hi = 1.0
  c.interp_points = 81
  c.interp_lo = -0.5
  c.interp_hi = 1.5
  c.chunk_size = 256
  c.point_batch = 8
  c.data_batch = 0  # 0: all examples at once
  c.step = -1
  c.shard = True  # several local devices: points sharded over them
  if variant == "quick":
    c.line_points = 21
    c.grid_points = 11
    c.interp_points = 21
  return c
