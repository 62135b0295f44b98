"""The trajectory config, for `--config=experiments/configs/trajectory.py[:variant]`: genviz_jax/configs/trajectory.py."""

from genviz_jax.configs.trajectory import get_config  # noqa: F401
