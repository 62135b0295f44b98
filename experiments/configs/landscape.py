"""The landscape config, for `--config=experiments/configs/landscape.py[:variant]`: genviz_jax/configs/landscape.py."""

from genviz_jax.configs.landscape import get_config  # noqa: F401
