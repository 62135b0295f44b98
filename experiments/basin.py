"""Basin radius and volume of a trained workdir along many random directions.

  python -m experiments.basin --workdir=runs/swissroll_clean
  python -m experiments.basin --workdir=runs/bad --config=experiments/configs/basin.py:quick \
      --config.threshold=0.5 --outdir=runs/bad/basin_t05

Run from the repository root. Writes into --outdir (default WORKDIR/basin): basin.json, radii.npy,
radii_details.npz, histogram.png and chunks/ (layout: genviz_jax/jobs/basin.py). A killed sweep
rerun with the same command continues and ends with identical radii. Bad flags, configs or
workdirs: one line `error: ...` on stderr, exit status 2, nothing written.
"""

from __future__ import annotations

import os

from absl import flags
from ml_collections import config_flags

from experiments import common

FLAGS = flags.FLAGS
DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "basin.py")


def define_flags() -> None:
  config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Basin config "
                                  "(experiments/configs/basin.py[:variant]).", lock_config=True)
  flags.DEFINE_string("workdir", None, "A trained workdir (experiments.train).")
  flags.DEFINE_string("outdir", None, "Output directory (default WORKDIR/basin).")
  flags.mark_flags_as_required(["workdir"])


def job() -> None:
  from genviz_jax.jobs import basin
  s = basin.run(FLAGS.config, FLAGS.workdir, FLAGS.outdir)
  print(" ".join(f"{k}={s[k]}" for k in ("log10_volume", "log10_volume_ci",
                                           "effective_sample_size", "radius_median",
                                           "num_censored", "measure", "wall_time_s")))


if __name__ == "__main__":
  common.run_binary(job, define_flags, default_config=DEFAULT_CONFIG)
