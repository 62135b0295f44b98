"""The second job: mode connectivity, training trajectories, skip connections -> report.html.

  python -m experiments.beyond --workdir=runs/beyond
  python -m experiments.beyond --config=experiments/configs/beyond.py:quick --workdir=runs/bq

Run from the repository root. Writes WORKDIR/report.html (self-contained), figures/,
paper_summary.json (each claim of Garipov et al. and Li et al.: measured value, whether it holds;
every phase's numbers under "results") and phases/*.json (genviz_jax/beyond/). Rerunning the
same command resumes: finished phases are not redone. Bad flags or configs: one line
`error: ...`, exit status 2.
"""

import os

from absl import flags
from ml_collections import config_flags

from experiments import common

FLAGS = flags.FLAGS
DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "beyond.py")


def define_flags() -> None:
  config_flags.DEFINE_config_file("config", DEFAULT_CONFIG,
                                  "Beyond config (experiments/configs/beyond.py[:quick]).",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory for all outputs of the reproduction.")
  flags.mark_flags_as_required(["workdir"])


def job() -> None:
  from genviz_jax import beyond
  results = beyond.run(FLAGS.config, FLAGS.workdir)
  paths = beyond.write_outputs(FLAGS.workdir, results)
  claims = beyond.claims(results)
  held = sum(c.holds is True for c in claims)
  print(f"{held}/{len(claims)} claims hold; report: {paths['report']}")


if __name__ == "__main__":
  common.run_binary(job, define_flags, default_config=DEFAULT_CONFIG)
