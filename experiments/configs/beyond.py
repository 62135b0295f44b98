"""The beyond config, for `--config=experiments/configs/beyond.py[:variant]`: genviz_jax/configs/beyond.py."""

from genviz_jax.configs.beyond import get_config  # noqa: F401
