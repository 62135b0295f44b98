"""Basin radius and volume of a trained workdir (experiments.basin).

  python -m experiments.basin --workdir=runs/swissroll_clean
  python -m experiments.basin --workdir=runs/swissroll_poisoned --config=experiments/configs/basin.py:quick

Radius: along `num_directions` filter-normalized random directions (biases zeroed), the smallest
r with train loss above `threshold` (cross-entropy 1 on the swiss roll, the authors' choice).
Writes WORKDIR/basin/ (or --outdir): basin.json, radii.npy, radii_details.npz, histogram.png and
chunks/ (finished chunks; rerunning the same command resumes a killed sweep).
Variants: `quick` (256 directions, a smoke test), `paper` (5000 directions, the authors' upper count),
`isotropic` (Gaussian directions: a volume in parameter space rather than in filter-normalized
coordinates), `gaussian` (isotropic, Adam-preconditioned directions, and the Gaussian-prior mass
with σ = 1 next to the volume). Expected on the swiss roll MLP (~3.6k parameters): the clean
minimum's radii are larger than the poisoned one's; 10,000 directions take seconds on a CPU (benchmarks/).
"""

import ml_collections


def get_config(variant: str = ""):
  variants = ("", "quick", "paper", "isotropic", "gaussian")
  if variant not in variants:
    raise ValueError(f"config variant {variant!r} is not one of: {', '.join(variants[1:])}")
  c = ml_collections.ConfigDict()
  c.num_directions = 1000
  c.seed = 0
  c.norm = "filter"  # filter | layer | none ("none": isotropic measure)
  c.ignore_1d = True
  c.split = "train"  # data the metric is computed on: train | test
  c.metric = "loss"  # loss | accuracy
  c.crossing = ""  # "" (loss: above, accuracy: below) | above | below
  c.threshold = 1.0
  c.relative = False  # threshold on the change from the centre's value
  c.r_init = 0.125
  c.r_max = 64.0
  c.rtol = 1e-4
  c.two_sided = False
  c.chunk_size = 1024  # directions per compiled call (per device)
  # How the bracket is refined: bisection (radii bit-identical for any batch sizes) |
  # chandrupatla (safeguarded interpolation: ~0.4x the evaluations; radii within rtol).
  c.method = "bisection"
  c.point_batch = 0  # points vmapped together; 0: the engine's default for the model's size
  c.data_batch = 0  # examples per data chunk; 0: the engine's default (all, for small models)
  c.cache_directions = True  # False: regenerate directions each bisection step (huge models)
  c.num_bootstrap = 1000
  c.confidence = 0.95
  c.step = -1  # checkpoint step; -1: the latest
  c.shard = True  # shard directions over all local devices when there are several
  # Importance sampling (Scherlis & Belrose 2025): "" none | "adam": directions P·g with
  # P ∝ v^{-1/2} (det 1), v = Adam's second moment, estimated as the mean squared train-minibatch
  # gradient at θ*. Needs norm "none".
  c.preconditioner = ""
  c.preconditioner_batch_size = 0  # minibatch of that estimate; 0: the run's batch_size, or 32
  # Gaussian-prior mass of the basin (basin.gaussian): 0 = off; > 0 = also report
  # log10 N(μ, σ²I)(basin) with σ = prior_sigma in basin.json (needs norm "none").
  c.prior_sigma = 0.0
  c.prior_centre = "minimum"  # minimum: μ = θ* | zero: μ = 0 (an initialization-like prior)
  if variant == "quick":
    c.num_directions = 256
    c.chunk_size = 128
    c.num_bootstrap = 200
  elif variant == "paper":
    c.num_directions = 5000
  elif variant in ("isotropic", "gaussian"):
    c.norm = "none"
    c.r_init = 1.0 / 64
  if variant == "gaussian":
    c.preconditioner = "adam"
    c.prior_sigma = 1.0
  return c
