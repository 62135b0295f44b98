"""The main job: every experiment of Huang et al. on embedded data -> report.html.

  python -m experiments.paper --workdir=runs/paper
  python -m experiments.paper --config=experiments/configs/paper.py:quick --workdir=runs/quick

Writes WORKDIR/report.html (self-contained), figures/, paper_summary.json (each claim of the paper:
measured value, the paper's value, whether it holds) and phases/*.json. Rerunning the same command
resumes: finished phases are not redone. Bad flags: one line `error: ...`, exit status 2.
"""

import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments import common

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", os.path.join(os.path.dirname(__file__), "configs",
                                                       "paper.py"),
                                "Paper config (experiments/configs/paper.py[:quick]).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for all outputs of the reproduction.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  common.quiet_checkpoint_logging()
  from genviz_jax import reproduce

  def run():
    results = reproduce.run(FLAGS.config, FLAGS.workdir)
    paths = reproduce.write_outputs(FLAGS.config, FLAGS.workdir, results)
    claims = reproduce.claims(results)
    held = sum(c.holds is True for c in claims)
    print(f"{held}/{len(claims)} claims hold; report: {paths['report']}")

  common.run_guarded(run)


if __name__ == "__main__":
  app.run(main)
