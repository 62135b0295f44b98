"""Concentric circles, paper Fig. 8: when the only perfect fit is sharp, the net fails to find it.

  python -m experiments.train --config=experiments/configs/circles.py --workdir=runs/circles
  python -m experiments.train --config=experiments/configs/circles.py:wide --workdir=runs/circles_wide
Quick smoke test: `:quick`.

Recipe (the authors' wide_margins_example.py): class 0 = 40 points at radius 0.4,
class 1 = 80 points at radius 0.95 plus 10 points at radius 0.401 interleaved with class 0
(margin 0.001; `:wide` uses margin 0.3); MLP 2 -> 100x9 -> 2 (ReLU), Adam 1e-3, full batch,
10k steps, no poison.

Measured (seed 0, 2-core shared CPU, noisy times):
  margin 0.001: 100% train / 91.5% test (test = the same rings rotated by a random angle),
                18.5 s
  margin 0.3 (`:wide`): 100% train / 100% test, 10.8 s
So here the narrow-margin training set is fitted, but the fit does not carry over to new angles.
"""

from genviz_jax import train


def get_config(variant: str = ""):
  variants = ("", "wide", "quick")
  if variant not in variants:
    raise ValueError(f"config variant {variant!r} is not one of: {', '.join(variants[1:])}")
  c = train.default_config()
  c.dataset = "circles"
  c.dataset_kwargs.seed = 0
  c.dataset_kwargs.margin = 0.3 if variant == "wide" else 0.001
  c.model = "mlp"
  c.model_kwargs.widths = (100,) * 9
  c.model_kwargs.activation = "relu"
  c.optimizer = "adam"
  c.learning_rate = 1e-3
  c.num_steps = 10000
  c.log_every = 500
  c.eval_every = 1000
  c.checkpoint_every = 5000
  if variant == "quick":
    c.num_steps = 500
    c.log_every = 250
    c.eval_every = 250
    c.checkpoint_every = 500
  return c
