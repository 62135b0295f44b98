"""ml_collections configs of the binaries and the paper job: `get_config(variant)` in each module.

Training runs: swissroll, circles, digits, mnist, svhn, cifar10 (keys: genviz_jax.train's
default_config). Studies of a trained workdir: landscape, basin, sharpness. The main job: paper.
A binary reads them through the thin files experiments/configs/NAME.py
(`--config=experiments/configs/NAME.py[:variant]`).
"""
