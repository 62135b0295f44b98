"""CIFAR-10 (TFDS, prepared offline), VGG13-BN: the paper's optimizer comparison (Table 1).

  python -m experiments.prepare_data --dataset=cifar10 --data_dir=DATA   # once, needs internet
  python -m experiments.train --config=experiments/configs/cifar10.py --workdir=runs/c10_sgd \
      --config.data_dir=DATA --config.optimizer=sgd
  (optimizers: sgd, momentum, nesterov, adam, adamw, rmsprop, adagrad, adamax, amsgrad, sam;
   adaptive ones want --config.learning_rate=1e-3)
Quick smoke test: `:quick`.

Recipe (the paper's appendix and the authors' code): VGG13 with BatchNorm, batch 128, 150 epochs, LR x0.1 at epochs 50 and 100,
momentum SGD 0.1 by default, weight decay 5e-4, no augmentation, clean objective.
Expected: ~90% test for momentum SGD (the paper's Table 1 reports all optimizers with 100%
train). Runtime: not measured here (no data offline); hours on one GPU.
"""

from genviz_jax import train

STEPS_PER_EPOCH = 50000 // 128  # 390


def get_config(variant: str = ""):
  variants = ("", "quick")
  if variant not in variants:
    raise ValueError(f"config variant {variant!r} is not one of: {', '.join(variants[1:])}")
  c = train.default_config()
  c.dataset = "cifar10"
  c.data_dir = ""
  c.dataset_kwargs.seed = 0
  c.model = "vgg13"
  c.optimizer = "momentum"
  c.learning_rate = 0.1
  c.momentum = 0.9
  c.weight_decay = 5e-4
  c.lr_boundaries = (50 * STEPS_PER_EPOCH, 100 * STEPS_PER_EPOCH)
  c.batch_size = 128
  c.num_steps = 150 * STEPS_PER_EPOCH
  c.log_every = STEPS_PER_EPOCH
  c.eval_every = 5 * STEPS_PER_EPOCH
  c.checkpoint_every = 5 * STEPS_PER_EPOCH
  c.eval_batch_size = 1000
  if variant == "quick":
    c.dataset_kwargs.num_train = 32
    c.dataset_kwargs.num_test = 16
    c.model_kwargs.width = 0.125
    c.batch_size = 8
    c.lr_boundaries = ()
    c.num_steps = 2
    c.log_every = 1
    c.eval_every = 1
    c.checkpoint_every = 1
    c.eval_batch_size = 8
  return c
