"""The digits_resnet config, for `--config=experiments/configs/digits_resnet.py[:variant]`: genviz_jax/configs/digits_resnet.py."""

from genviz_jax.configs.digits_resnet import get_config  # noqa: F401
