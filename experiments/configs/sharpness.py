"""The sharpness config, for `--config=experiments/configs/sharpness.py[:variant]`: genviz_jax/configs/sharpness.py."""

from genviz_jax.configs.sharpness import get_config  # noqa: F401
