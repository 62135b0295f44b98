"""Shared test fixtures' building blocks."""

from genviz_jax import train


def tiny_config(**overrides):
  """A seconds-long swiss-roll run: 32 train points, MLP 2->8->8->2, 20 Adam steps."""
  c = train.default_config()
  c.dataset = "swissroll"
  c.dataset_kwargs.num_train = 32
  c.dataset_kwargs.num_test = 32
  c.dataset_kwargs.num_poison = 16
  c.model = "mlp"
  c.model_kwargs.widths = (8, 8)
  c.optimizer = "adam"
  c.learning_rate = 0.01
  c.num_steps = 20
  c.log_every = 10
  c.eval_every = 10
  c.checkpoint_every = 10
  for k, v in overrides.items():
    c[k] = v
  return c
