"""Mode connectivity between two trained workdirs: curves, barriers, radii along the curve.

  python -m experiments.connectivity --workdir=runs/good --other_workdir=runs/good_seed1
  python -m experiments.connectivity --workdir=runs/good --other_workdir=runs/bad \
      --config=experiments/configs/connectivity.py:quick

Run from the repository root. Writes into --outdir (default WORKDIR/connectivity): curves.npz,
connectivity.json, connectivity.png (layout: genviz_jax/jobs/connectivity.py). Bad flags, configs
or workdirs: one line `error: ...`, exit 2.
"""

from __future__ import annotations

import os

from absl import flags
from ml_collections import config_flags

from experiments import common

FLAGS = flags.FLAGS
DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "connectivity.py")


def define_flags() -> None:
  config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Connectivity config "
                                  "(experiments/configs/connectivity.py[:variant]).",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "The first trained workdir (experiments.train): t = 0.")
  flags.DEFINE_string("other_workdir", None, "The second trained workdir of the same model: t = 1.")
  flags.DEFINE_string("outdir", None, "Output directory (default WORKDIR/connectivity).")
  flags.mark_flags_as_required(["workdir", "other_workdir"])


def job() -> None:
  from genviz_jax.jobs import connectivity
  out = connectivity.run(FLAGS.config, FLAGS.workdir, FLAGS.other_workdir, FLAGS.outdir)
  print(f"line barrier {out['linear_barrier']:.4g}, {out['kinds'][0]} barrier "
        f"{out['curve_barrier']:.4g} (train loss)")


if __name__ == "__main__":
  common.run_binary(job, define_flags, default_config=DEFAULT_CONFIG)
