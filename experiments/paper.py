"""The main job: every experiment of Huang et al. on embedded data -> report.html.

  python -m experiments.paper --workdir=runs/paper
  python -m experiments.paper --config=experiments/configs/paper.py:quick --workdir=runs/quick

Run from the repository root. Writes WORKDIR/report.html (self-contained), figures/,
paper_summary.json (each claim of the paper: measured value, the paper's value, whether it holds)
and phases/*.json (genviz_jax/paper/). Rerunning the same command resumes: finished phases are
not redone. Bad flags or configs: one line `error: ...`, exit status 2.
"""

import os

from absl import flags
from ml_collections import config_flags

from experiments import common

FLAGS = flags.FLAGS
DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "paper.py")


def define_flags() -> None:
  config_flags.DEFINE_config_file("config", DEFAULT_CONFIG,
                                  "Paper config (experiments/configs/paper.py[:quick]).",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory for all outputs of the reproduction.")
  flags.mark_flags_as_required(["workdir"])


def job() -> None:
  from genviz_jax import paper
  results = paper.run(FLAGS.config, FLAGS.workdir)
  paths = paper.write_outputs(FLAGS.config, FLAGS.workdir, results)
  claims = paper.claims(results)
  held = sum(c.holds is True for c in claims)
  print(f"{held}/{len(claims)} claims hold; report: {paths['report']}")


if __name__ == "__main__":
  common.run_binary(job, define_flags, default_config=DEFAULT_CONFIG)
