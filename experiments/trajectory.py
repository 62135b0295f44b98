"""A training trajectory on its PCA plane (Li et al. 2018, §7), over the loss contour.

  python -m experiments.trajectory --workdir=runs/good

The workdir must hold parameter snapshots (train with --config.snapshot_every=K). Run from the
repository root. Writes into --outdir (default WORKDIR/trajectory): trajectory.npz,
trajectory.json, trajectory.png (layout: genviz_jax/jobs/trajectory.py). Bad flags, configs or
workdirs: one line `error: ...`, exit 2.
"""

from __future__ import annotations

import os

from absl import flags
from ml_collections import config_flags

from experiments import common

FLAGS = flags.FLAGS
DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "trajectory.py")


def define_flags() -> None:
  config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Trajectory config "
                                  "(experiments/configs/trajectory.py[:variant]).",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "A trained workdir with parameter snapshots.")
  flags.DEFINE_string("outdir", None, "Output directory (default WORKDIR/trajectory).")
  flags.mark_flags_as_required(["workdir"])


def job() -> None:
  from genviz_jax.jobs import trajectory
  out = trajectory.run(FLAGS.config, FLAGS.workdir, FLAGS.outdir)
  ev = out["explained_variance"]
  print(f"explained variance {ev[0]:.3f} + {ev[1]:.3f}; figure: {out['figure']}")


if __name__ == "__main__":
  common.run_binary(job, define_flags, default_config=DEFAULT_CONFIG)
