"""The swissroll config, for `--config=experiments/configs/swissroll.py[:variant]`: genviz_jax/configs/swissroll.py."""

from genviz_jax.configs.swissroll import get_config  # noqa: F401
