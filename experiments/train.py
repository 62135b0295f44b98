"""Trains a network with the (optionally) poisoned objective; resumes a killed run exactly.

  python -m experiments.train --config=experiments/configs/swissroll.py --workdir=runs/clean
  python -m experiments.train --config=experiments/configs/swissroll.py:poisoned --workdir=runs/bad
  python -m experiments.train --config=experiments/configs/swissroll.py --workdir=DIR \
      --config.poison_factor=0.8 --config.num_steps=20000

Run from the repository root. Writes summary.json, metrics.jsonl, checkpoints/ and (2-D data)
decision_boundary.png in the workdir (layout: genviz_jax/workdir.py). Rerunning the same command
resumes from the last checkpoint, or does nothing when the run has finished. Bad flags or
configs: one line `error: ...`, exit status 2; a non-finite step: `error: non-finite ...`, exit
status 1.
"""

import os
import sys

# Exact resume needs the same bits from the same program in a new process. On GPU, XLA's
# default autotuning and atomics do not give that (measured on an H100: a killed and resumed
# run differed from an uninterrupted one); deterministic ops do. No effect on CPU. Set before
# jax is imported; a user's own setting of the flag wins.
if "xla_gpu_deterministic_ops" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_gpu_deterministic_ops=true").strip()

from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from experiments import common  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
  config_flags.DEFINE_config_file("config", None,
                                  "Training config (experiments/configs/*.py[:variant]).",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and the summary.")
  flags.mark_flags_as_required(["config", "workdir"])


def job() -> None:
  from genviz_jax import train
  from genviz_jax.jobs import train as train_job
  try:
    summary = train_job.run(FLAGS.config, FLAGS.workdir)
  except train.NonFiniteError as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)
  logging.info("summary: %s", summary)
  print(" ".join(f"{k}={summary[k]}" for k in ("train_accuracy", "test_accuracy", "train_loss",
                                                "test_loss", "wall_time_s", "steps_per_s")))


if __name__ == "__main__":
  common.run_binary(job, define_flags)
