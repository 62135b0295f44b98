"""The cifar10_resnet config, for `--config=experiments/configs/cifar10_resnet.py[:variant]`: genviz_jax/configs/cifar10_resnet.py."""

from genviz_jax.configs.cifar10_resnet import get_config  # noqa: F401
