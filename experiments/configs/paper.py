"""The paper config, for `--config=experiments/configs/paper.py[:variant]`: genviz_jax/configs/paper.py."""

from genviz_jax.configs.paper import get_config  # noqa: F401
