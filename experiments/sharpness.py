"""Every flatness number of a trained workdir, side by side: Hessian spectrum, PAC-Bayes, ε-sharpness.

  python -m experiments.sharpness --workdir=runs/swissroll_poisoned
  python -m experiments.sharpness --workdir=runs/swissroll_clean \
      --config.compare='("runs/swissroll_poisoned",)'

Run from the repository root. Writes WORKDIR/sharpness/ (config.out_subdir): sharpness.json,
slq.npz and figures (layout: genviz_jax/jobs/sharpness.py). Bad flags, configs or workdirs (k
larger than the parameter count, non-positive σ range, non-finite HVP, missing workdir): one line
`error: ...`, exit status 2, nothing written.
"""

from __future__ import annotations

import os

from absl import flags
from ml_collections import config_flags

from experiments import common

FLAGS = flags.FLAGS
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs",
                              "sharpness.py")


def define_flags() -> None:
  config_flags.DEFINE_config_file("config", DEFAULT_CONFIG,
                                  "Sharpness config (experiments/configs/sharpness.py[:quick]).",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "A trained workdir (experiments.train).")


def job() -> None:
  from genviz_jax.jobs import sharpness
  s = sharpness.compute(FLAGS.config, FLAGS.workdir)
  print(" ".join(f"{k}={v:.6g}" for k, v in s["measures"].items()))


if __name__ == "__main__":
  common.run_binary(job, define_flags, default_config=DEFAULT_CONFIG)
