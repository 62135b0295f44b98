"""A training run and its figure: genviz_jax.train, then (2-D data) the decision boundary.

`run(config, workdir)` trains (or resumes, or finds finished) the run of `config` in `workdir`
(layout: genviz_jax/workdir.py) and, for 2-D inputs with config.plot, writes
WORKDIR/decision_boundary.png: the predicted class on a grid over the data, with the train (o),
test (x) and poison (^) points in their true colours (Huang et al. 2019, Figs 2-3). The figure
is drawn once; a rerun of a finished run leaves the workdir untouched.
"""

from __future__ import annotations

import os

from genviz_jax import boundary
from genviz_jax import train as train_lib
from genviz_jax import workdir as workdir_lib
from genviz_jax.plots import decision

FIGURE = "decision_boundary.png"
# The datasets of genviz_jax.data whose inputs are points of the plane.
TWO_D_DATASETS = ("swissroll", "circles")


def boundary_title(config, summary: dict) -> str:
  """`swissroll β=0.5: train 100.0%, test 12.5%`."""
  return (f"{config.dataset} β={config.poison_factor:g}: train "
          f"{100 * summary['train_accuracy']:.1f}%, test {100 * summary['test_accuracy']:.1f}%")


def save_boundary(workdir: str, title: str) -> str:
  """Draws the trained run's decision boundary into WORKDIR/decision_boundary.png."""
  t = workdir_lib.load(workdir)
  path = os.path.join(workdir, FIGURE)
  tmp = os.path.join(workdir, "decision_boundary.tmp.png")
  logits_fn = boundary.flax_logits(t.model, t.model_state)
  decision.save_decision_boundary(tmp, boundary.panel(logits_fn, t.params, t.dataset, title))
  os.replace(tmp, path)
  return path


def run(config, workdir: str) -> dict:
  """Trains (resumes) the run; returns its summary (genviz_jax.train.train_and_evaluate)."""
  summary = train_lib.train_and_evaluate(config, workdir)
  drawn = os.path.exists(os.path.join(workdir, FIGURE))
  if config.plot and config.dataset in TWO_D_DATASETS and not drawn:
    save_boundary(workdir, boundary_title(config, summary))
  return summary

