"""The circles config, for `--config=experiments/configs/circles.py[:variant]`: genviz_jax/configs/circles.py."""

from genviz_jax.configs.circles import get_config  # noqa: F401
