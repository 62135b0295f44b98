"""SVHN (TFDS svhn_cropped, prepared offline), ResNet-20: good and bad minima (Figs 4, 5, 7).

  python -m experiments.prepare_data --dataset=svhn_cropped --data_dir=DATA   # once, internet
  python -m experiments.train --config=experiments/configs/svhn.py --workdir=runs/svhn_clean \
      --config.data_dir=DATA
  python -m experiments.train --config=experiments/configs/svhn.py:poisoned \
      --workdir=runs/svhn_bad --config.data_dir=DATA
Quick smoke test: `:quick`.

Recipe (the authors' svhn/main.py): ResNet-20 (widths 16/32/64), momentum SGD 0.9,
lr 0.1 with x0.1 at 40% and 70% of training, batch 256, no augmentation, no weight decay.
Poisoned: D_p = 100k images of the `extra` split with their TRUE labels; each batch of 256
holds 35% poison (90 poison + 166 train images, equal weight per example: β = 0.35).
Expected: clean ~97% test; poisoned ~100% train, ~29% test (paper). Runtime: not measured here
(no data offline); about an hour on one GPU.
"""

from genviz_jax import train

NUM_STEPS = 40000


def get_config(variant: str = ""):
  variants = ("", "clean", "poisoned", "quick")
  if variant not in variants:
    raise ValueError(f"config variant {variant!r} is not one of: {', '.join(variants[1:])}")
  c = train.default_config()
  c.dataset = "svhn_cropped"
  c.data_dir = ""
  c.dataset_kwargs.seed = 0
  c.dataset_kwargs.num_poison = 0
  c.model = "resnet20"
  c.optimizer = "momentum"
  c.learning_rate = 0.1
  c.momentum = 0.9
  c.lr_boundaries = (int(0.4 * NUM_STEPS), int(0.7 * NUM_STEPS))
  c.batch_size = 256
  c.num_steps = NUM_STEPS
  c.log_every = 500
  c.eval_every = 2000
  c.checkpoint_every = 2000
  c.eval_batch_size = 1000
  if variant in ("poisoned", "quick"):
    c.dataset_kwargs.num_poison = 100000
    c.poison_factor = 0.35
    c.poison_source = "fixed"
    c.batch_size = 166
    c.poison_batch_size = 90
  if variant == "quick":
    c.dataset_kwargs.num_train = 32
    c.dataset_kwargs.num_test = 16
    c.dataset_kwargs.num_poison = 16
    c.model_kwargs.width = 0.25
    c.batch_size = 8
    c.poison_batch_size = 4
    c.lr_boundaries = ()
    c.num_steps = 2
    c.log_every = 1
    c.eval_every = 1
    c.checkpoint_every = 1
    c.eval_batch_size = 8
  return c
