"""The svhn config, for `--config=experiments/configs/svhn.py[:variant]`: genviz_jax/configs/svhn.py."""

from genviz_jax.configs.svhn import get_config  # noqa: F401
