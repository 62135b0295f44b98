"""scikit-learn digits (8x8, embedded: no download), ResNet with and without skip connections.

Li et al. 2018 §5 (Figs 5-6) on a CPU: the same ResNet trained with its shortcuts and without
them ("noshort", genviz_jax.models.BasicBlock skip=False), for comparing the two loss surfaces.

  python -m experiments.train --config=experiments/configs/digits_resnet.py --workdir=runs/dr_skip
  python -m experiments.train --config=experiments/configs/digits_resnet.py:noskip \
      --workdir=runs/dr_noskip
Variants: "" (= "skip"), "noskip"; smoke tests `:quick`, `:noskip_quick`.

Recipe: 1200 train / 597 test images; ResNet-20 (stages 3-3-3, shortcut "pad") at width 0.5
(channels 8/16/32, 68k parameters); Li et al.'s optimizer scaled down: momentum SGD 0.9, lr 0.1,
weight decay 5e-4, batch 128, lr x0.1 at 50% and 75% of NUM_STEPS, no augmentation. 8x8 inputs go 8 -> 4 -> 2 through
the two stride-2 stages. Snapshots every SNAPSHOT_EVERY steps for the trajectory PCA (Li et al. §7).

Measured (seed 0, 2-core CPU, shared with other jobs; times include compiles):
  skip:   100% train / 98.5% test, 43 s
  noskip: 100% train / 98.5% test, 29 s. Both fit and generalize; their surfaces differ: on a
          21x21 filter-normalized plane over [-1, 1]^2 the share of grid points with negative
          curvature is 0.04 with skips and 0.48 without (landscape.surface_curvature).
  ResNet-56 at width 0.25 (4/8/16 channels), same recipe: with skips 96.1% test, without 37.4%
  (42% train: the 55-layer plain net barely trains in 600 steps; Adam 1e-3 gave 12.7%), so its
  no-skip surface would not be around a minimum. ResNet-56 is `--config.model=resnet56`.
"""

from genviz_jax import train

NUM_STEPS = 600
SNAPSHOT_EVERY = 25


def get_config(variant: str = ""):
  variants = ("", "skip", "noskip", "quick", "noskip_quick")
  if variant not in variants:
    raise ValueError(f"config variant {variant!r} is not one of: {', '.join(variants[1:])}")
  c = train.default_config()
  c.dataset = "digits"
  c.dataset_kwargs.seed = 0
  c.dataset_kwargs.num_train = 1200
  c.model = "resnet20"
  c.model_kwargs.width = 0.5
  c.model_kwargs.skip = not variant.startswith("noskip")
  c.optimizer = "momentum"
  c.learning_rate = 0.1
  c.momentum = 0.9
  c.weight_decay = 5e-4
  c.lr_boundaries = (NUM_STEPS // 2, 3 * NUM_STEPS // 4)
  c.batch_size = 128
  c.num_steps = NUM_STEPS
  c.log_every = 50
  c.eval_every = 250
  c.checkpoint_every = 250
  c.snapshot_every = SNAPSHOT_EVERY
  c.eval_batch_size = 600
  if variant.endswith("quick"):
    c.lr_boundaries = ()
    c.num_steps = 4
    c.log_every = 2
    c.eval_every = 2
    c.checkpoint_every = 2
    c.snapshot_every = 2
  return c
