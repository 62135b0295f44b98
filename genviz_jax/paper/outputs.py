"""The paper run's outputs: paper_summary.json (claims, wall times, every phase's numbers) and a
self-contained report.html (genviz_jax.report) with one section per phase that ran."""

from __future__ import annotations

import os

from genviz_jax import report
from genviz_jax.paper.claims import claims

SECTION_TEXTS: dict[str, tuple[str, str]] = {
    "decision": ("Figs 2-3: good and bad minima on the swiss roll",
                 "The same MLP trained on the clean objective and on the poisoned objective "
                 "(a fresh poison sample with flipped labels every step). Both fit the training "
                 "points; only one generalizes."),
    "minefield": ("Fig. 1: the minefield",
                  "t-SNE of the flattened kernels of every iterate of a good run (dots, line) "
                  "and of bad minima trained (train ∪ flipped-label poison) from every 10th "
                  "iterate (crosses), coloured by test accuracy."),
    "landscape": ("Loss landscapes (Li et al. filter normalization)",
                  "1-D and 2-D slices along filter-normalized random directions, and the linear "
                  "interpolation from the good to the bad minimum."),
    "basin": ("Basin radius and volume",
              "Radius along random filter-normalized directions where the train cross-entropy "
              "crosses the threshold; log10 volume = log10 V_ball(n) + log10 mean r^n with a "
              "bootstrap interval and its effective sample size."),
    "sharpness": ("Sharpness and curvature", "Hessian spectrum, PAC-Bayes flatness and "
                  "ε-sharpness of both minima."),
    "gap_sweep": ("Fig. 6: the generalization-gap sweep",
                  "Poison factor f in {0} ∪ 0.8·10^linspace(-4, 0, ·), several seeds; "
                  "decision boundaries ordered by gap, and gap against basin volume and "
                  "sharpness."),
    "circles": ("Fig. 8: the sharp problem",
                "Concentric circles whose only perfect separation has margin 0.001, against the "
                "same construction with a wide margin."),
    "optimizers": ("Table 1 analogue: optimizers find good minima",
                   "Every optimizer on clean data: train and test accuracy."),
}
INTRO = ("Huang et al. 2019, \"Understanding Generalization through Visualizations\", reproduced "
         "by genviz_jax on embedded data. Each claim is checked against the numbers measured in "
         "this run; a claim that does not hold is reported as such.")


def phase_table(name: str, res: dict):
  """The rows (header first) of a phase's table in the report, or None."""
  if name == "decision":
    return [["minimum", "train acc", "test acc", "train loss", "steps", "time (s)"]] + [
        [k, res[k]["train_accuracy"], res[k]["test_accuracy"], res[k]["train_loss"],
         res[k]["steps"], res[k]["wall_time_s"]] for k in ("good", "bad")]
  if name == "optimizers":
    return [["dataset", "optimizer", "lr", "train acc", "test acc", "steps"]] + [
        [r["dataset"], r["optimizer"], r["learning_rate"], r["train_accuracy"],
         r["test_accuracy"], r["steps"]] for r in res["rows"]]
  if name == "circles":
    return [["case", "margin", "train acc", "test acc"]] + [
        [k, res[k]["margin"], res[k]["train_accuracy"], res[k]["test_accuracy"]]
        for k in ("sharp", "wide")]
  if name == "gap_sweep":
    return [["statistic", "value"]] + [[k, res[k]] for k in res if k.startswith("spearman")]
  if name in ("basin", "sharpness"):
    keys = [k for k in res.get("good", {}) if isinstance(res["good"][k], (int, float, str))]
    return [["quantity", "good", "bad"]] + [[k, res["good"][k], res["bad"].get(k)] for k in keys]
  scalars = [[k, v] for k, v in res.items() if isinstance(v, (int, float)) and k != "wall_time_s"]
  return [["quantity", "value"]] + scalars if scalars else None


def _sections(workdir: str, results: dict) -> list:
  sections = []
  for name, (title, text) in SECTION_TEXTS.items():
    res = results.get(name)
    if res is None:
      continue
    figs = res.get("figures") or ([res["figure"]] if "figure" in res else [])
    sections.append(report.Section(
        f"{title} ({res.get('wall_time_s', '?')} s)", text,
        [os.path.join(workdir, f) for f in figs], phase_table(name, res)))
  return sections


def write_outputs(cfg, workdir: str, results: dict) -> dict[str, str]:
  """Writes paper_summary.json and report.html; returns their paths."""
  del cfg  # the results carry every number; the config is pinned in paper_config.json
  return report.write_job_outputs(workdir, "genviz_jax: the paper, reproduced", INTRO,
                                  claims(results), _sections(workdir, results), results)
