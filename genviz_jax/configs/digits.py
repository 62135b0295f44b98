"""scikit-learn digits (8x8, embedded: no download): good vs bad minima on real images.

  python -m experiments.train --config=experiments/configs/digits.py --workdir=runs/digits
  python -m experiments.train --config=experiments/configs/digits.py:poisoned --workdir=runs/digits_bad
Quick smoke test: `:quick`, `:poisoned_quick`.

Recipe: 800 train / 400 poison (true labels, carved out of the data, disjoint from train) / 597
test images; small CNN (conv 32-64, dense 128); Adam 1e-3, batch 128, 3000 steps. Poisoned:
each step mixes a minibatch of 128 poison images into the 128 train images with β = 0.5 (equal
weight per example, like the authors' mixed batches).

Measured (seed 0; CPU times noisy, the 2 cores were shared with other jobs):
  clean:    100% train / 99.2% test; 2-core CPU 61 s (49 steps/s); H100 6.3 s
  poisoned: 100% train / 70.5% test; 2-core CPU 109 s (28 steps/s); H100 7.4 s (69.5% test)
"""

from genviz_jax import train


def get_config(variant: str = ""):
  variants = ("", "clean", "poisoned", "quick", "poisoned_quick")
  if variant not in variants:
    raise ValueError(f"config variant {variant!r} is not one of: {', '.join(variants[1:])}")
  c = train.default_config()
  c.dataset = "digits"
  c.dataset_kwargs.seed = 0
  c.dataset_kwargs.num_train = 800
  c.dataset_kwargs.num_poison = 400
  c.model = "small_cnn"
  c.optimizer = "adam"
  c.learning_rate = 1e-3
  c.batch_size = 128
  c.num_steps = 3000
  c.log_every = 100
  c.eval_every = 500
  c.checkpoint_every = 500
  c.eval_batch_size = 800
  if variant.startswith("poisoned"):
    c.poison_factor = 0.5
    c.poison_source = "fixed"
    c.poison_batch_size = 128
  if variant.endswith("quick"):
    c.num_steps = 40
    c.log_every = 20
    c.eval_every = 20
    c.checkpoint_every = 20
  return c
