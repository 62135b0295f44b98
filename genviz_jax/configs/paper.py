"""The paper end to end (the README's main job), on embedded data, no download.

  python -m experiments.paper --workdir=runs/paper
  python -m experiments.paper --config=experiments/configs/paper.py:quick --workdir=runs/paper_quick

Phases (genviz_jax/paper/): decision (Figs 2-3), minefield (Fig. 1), landscape, basin,
sharpness, gap_sweep (Fig. 6), circles (Fig. 8), optimizers (Table 1 analogue). Outputs:
report.html, figures/, paper_summary.json. A killed job rerun with the same command resumes at
the phase it was in. Select phases with --config.phases=decision,basin (comma-separated).

Expected (full): good minimum 100% train / >= 95% test, bad >= 99% train / <= 30% test, every
minefield bad minimum < 60% test, gap rises with the poison factor (Spearman >= 0.8), good basins
larger than bad ones, the sharp circles net fails. Measured runtimes: BUILD_NOTES.md. The quick
variant checks the machinery in minutes; its short schedules do not reach the paper's minima, and
its report says so.
"""

import ml_collections


def get_config(variant: str = ""):
  variants = ("", "full", "quick")
  if variant not in variants:
    raise ValueError(f"config variant {variant!r} is not one of: full, quick")
  quick = variant == "quick"
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.phases = "decision,minefield,landscape,basin,sharpness,gap_sweep,circles,optimizers"

  c.decision = ml_collections.ConfigDict()
  c.decision.clean_steps = 2000 if quick else 20000
  c.decision.poisoned_steps = 4000 if quick else 100000

  c.minefield = ml_collections.ConfigDict()
  c.minefield.data_seed = 1237
  c.minefield.num_train = 132
  c.minefield.num_test = 134
  c.minefield.num_poison = 134
  c.minefield.widths = (25, 25, 25, 25)
  c.minefield.learning_rate = 0.005
  c.minefield.good_steps = 200 if quick else 2000
  c.minefield.snapshot_every = 1 if not quick else 2
  c.minefield.start_every = 10
  c.minefield.num_bad = 10 if quick else 200
  c.minefield.bad_steps = 300 if quick else 3000
  c.minefield.perplexity = 30.0
  c.minefield.poison_source = "sampler"  # or "fixed": the authors' one 134-point poison set

  c.landscape = ml_collections.ConfigDict()
  c.landscape.num_1d = 21 if quick else 51
  c.landscape.num_2d = 11 if quick else 51
  c.landscape.num_interpolation = 21 if quick else 81
  c.landscape.direction_seed = 0
  c.landscape.range_1d = 0.5
  c.landscape.range_2d = 0.25

  c.basin = ml_collections.ConfigDict()
  c.basin.num_directions = 64 if quick else 2000
  c.basin.threshold = 1.0  # train cross-entropy, as in the authors' code
  c.basin.r_max = 64.0
  c.basin.direction_seed = 1

  c.sharpness = ml_collections.ConfigDict()
  c.sharpness.variant = "quick" if quick else ""  # genviz_jax/configs/sharpness.py

  c.gap_sweep = ml_collections.ConfigDict()
  c.gap_sweep.num_factors = 4 if quick else 20
  c.gap_sweep.num_seeds = 1 if quick else 2
  c.gap_sweep.widths = (23, 16, 26, 32, 28, 31)
  c.gap_sweep.learning_rate = 0.005
  c.gap_sweep.steps = 1000 if quick else 20000
  c.gap_sweep.chunk = 1000
  c.gap_sweep.num_directions = 16 if quick else 200
  c.gap_sweep.basin_seed = 2
  c.gap_sweep.lanczos_steps = 10 if quick else 20

  c.circles = ml_collections.ConfigDict()
  c.circles.widths = (100,) * 9
  c.circles.learning_rate = 1e-3
  c.circles.steps = 500 if quick else 10000
  c.circles.margin = 0.001
  c.circles.wide_margin = 0.3

  c.optimizers = ml_collections.ConfigDict()
  c.optimizers.datasets = "swissroll,digits"
  c.optimizers.names = ("sgd,adam,lbfgs,sam" if quick else
                        "sgd,momentum,nesterov,adam,rmsprop,adagrad,adamax,amsgrad,lbfgs,sam")
  c.optimizers.learning_rates = ml_collections.ConfigDict(dict(
      sgd=0.1, momentum=0.02, nesterov=0.02, adam=0.005, rmsprop=0.001, adagrad=0.1,
      adamax=0.005, amsgrad=0.005, lbfgs=1.0, sam=0.02))
  c.optimizers.swissroll_steps = 300 if quick else 10000
  c.optimizers.digits_steps = 40 if quick else 1000
  c.optimizers.digits_widths = (128, 128)
  return c
