"""The mnist config, for `--config=experiments/configs/mnist.py[:variant]`: genviz_jax/configs/mnist.py."""

from genviz_jax.configs.mnist import get_config  # noqa: F401
