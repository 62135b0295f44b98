"""The connectivity config, for `--config=experiments/configs/connectivity.py[:variant]`: genviz_jax/configs/connectivity.py."""

from genviz_jax.configs.connectivity import get_config  # noqa: F401
