"""The basin config, for `--config=experiments/configs/basin.py[:variant]`: genviz_jax/configs/basin.py."""

from genviz_jax.configs.basin import get_config  # noqa: F401
