"""MNIST (TFDS, prepared offline in --config.data_dir), small CNN, clean or poisoned.

  python -m experiments.prepare_data --dataset=mnist --data_dir=DATA   # once, needs internet
  python -m experiments.train --config=experiments/configs/mnist.py --workdir=runs/mnist \
      --config.data_dir=DATA
  python -m experiments.train --config=experiments/configs/mnist.py:poisoned \
      --workdir=runs/mnist_bad --config.data_dir=DATA
Quick smoke test (a few steps on a subset): `:quick`.

Recipe: small CNN, momentum SGD 0.05 (x0.1 at epochs 6 and 8), batch 128, 10 epochs of the
50k train images (10k of the train split are held out as the poison set, true labels).
Poisoned: a 64-image poison minibatch is mixed into every 128-image batch, β = 1/3 (equal
weight per example).
Expected: clean ~99% test; poisoned ~100% train with a far lower test accuracy. Runtime: not
measured here (no data offline); minutes on one GPU.
"""

from genviz_jax import train

STEPS_PER_EPOCH = 50000 // 128


def get_config(variant: str = ""):
  variants = ("", "clean", "poisoned", "quick")
  if variant not in variants:
    raise ValueError(f"config variant {variant!r} is not one of: {', '.join(variants[1:])}")
  c = train.default_config()
  c.dataset = "mnist"
  c.data_dir = ""
  c.dataset_kwargs.num_poison = 10000
  c.dataset_kwargs.seed = 0
  c.model = "small_cnn"
  c.optimizer = "momentum"
  c.learning_rate = 0.05
  c.momentum = 0.9
  c.lr_boundaries = (6 * STEPS_PER_EPOCH, 8 * STEPS_PER_EPOCH)
  c.batch_size = 128
  c.num_steps = 10 * STEPS_PER_EPOCH
  c.log_every = STEPS_PER_EPOCH
  c.eval_every = STEPS_PER_EPOCH
  c.checkpoint_every = STEPS_PER_EPOCH
  c.eval_batch_size = 1000
  if variant == "poisoned":
    c.poison_factor = 1 / 3
    c.poison_source = "fixed"
    c.poison_batch_size = 64
  if variant == "quick":
    c.dataset_kwargs.num_train = 32
    c.dataset_kwargs.num_test = 16
    c.dataset_kwargs.num_poison = 16
    c.poison_factor = 1 / 3
    c.poison_source = "fixed"
    c.poison_batch_size = 8
    c.batch_size = 16
    c.lr_boundaries = ()
    c.num_steps = 4
    c.log_every = 2
    c.eval_every = 2
    c.checkpoint_every = 2
    c.eval_batch_size = 16
  return c
