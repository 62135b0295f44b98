"""Loss landscapes of a trained workdir: 1-D line, 2-D plane, interpolation to another minimum.

  python -m experiments.landscape --workdir=runs/swissroll_clean
  python -m experiments.landscape --workdir=runs/swissroll_clean \
      --other_workdir=runs/swissroll_poisoned --config=experiments/configs/landscape.py:quick

Run from the repository root. Writes into --outdir (default WORKDIR/landscape): line.npz/png,
plane.npz and plane_*.png, interpolation.npz/png (layout: genviz_jax/jobs/landscape.py). Progress
lines give points/s and the ETA. Bad flags, configs or workdirs: one line `error: ...`, exit 2.
"""

from __future__ import annotations

import os

from absl import flags
from ml_collections import config_flags

from experiments import common

FLAGS = flags.FLAGS
DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "landscape.py")


def define_flags() -> None:
  config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Landscape config "
                                  "(experiments/configs/landscape.py[:variant]).", lock_config=True)
  flags.DEFINE_string("workdir", None, "A trained workdir (experiments.train).")
  flags.DEFINE_string("other_workdir", None, "A second trained workdir of the same model: "
                      "interpolation and overlaid 1-D curves.")
  flags.DEFINE_string("outdir", None, "Output directory (default WORKDIR/landscape).")
  flags.mark_flags_as_required(["workdir"])


def job() -> None:
  from genviz_jax.jobs import landscape
  out = landscape.run(FLAGS.config, FLAGS.workdir, FLAGS.other_workdir, FLAGS.outdir)
  print(" ".join(f"{k}={v}" for k, v in out.items()))


if __name__ == "__main__":
  common.run_binary(job, define_flags, default_config=DEFAULT_CONFIG)
