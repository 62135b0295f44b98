"""The digits config, for `--config=experiments/configs/digits.py[:variant]`: genviz_jax/configs/digits.py."""

from genviz_jax.configs.digits import get_config  # noqa: F401
