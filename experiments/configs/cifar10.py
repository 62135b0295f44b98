"""The cifar10 config, for `--config=experiments/configs/cifar10.py[:variant]`: genviz_jax/configs/cifar10.py."""

from genviz_jax.configs.cifar10 import get_config  # noqa: F401
