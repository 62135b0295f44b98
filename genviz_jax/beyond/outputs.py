"""The beyond job's outputs: paper_summary.json (claims, every phase's numbers under "results")
and a self-contained report.html with one section per phase that ran."""

from __future__ import annotations

import os

from genviz_jax import report
from genviz_jax.beyond.claims import claims

INTRO = ("Beyond Huang et al. 2019, along the papers it builds on: mode connectivity (Garipov et "
         "al. 2018), training trajectories and skip connections (Li et al. 2018), measured by "
         "genviz_jax on embedded data. Every claim is checked against this run's numbers.")
TEXTS = {
    "minima": ("The minima", "Swiss-roll MLPs 2 -> [23, 16, 26, 32, 28, 31] -> 2 trained as in "
               "the paper job: two clean runs (seeds differ) and one poisoned run."),
    "connectivity": ("Mode connectivity (Garipov et al. 2018)",
                     "A quadratic Bézier curve and a polygonal chain with one bend, trained "
                     "between two minima with t ~ U(0, 1) each step (Adam, train loss), against "
                     "the straight line. Barrier: max train loss along the path minus the mean "
                     "of its endpoints. Basin radius: the first curve, along random "
                     "filter-normalized directions, where the train cross-entropy crosses the "
                     "threshold."),
    "trajectory": ("Training trajectories (Li et al. 2018, §7)",
                   "Parameter snapshots θ_i projected onto the top-2 PCA directions of "
                   "{θ_i − θ_final}, over the train-loss contour of that plane."),
    "skip": ("Skip connections (Li et al. 2018, §5)",
             "The same ResNet on digits with and without its skip connections; 2-D "
             "filter-normalized train-loss surfaces around each minimum. Non-convexity: the "
             "share of interior grid points whose 2x2 Hessian (second differences) has a "
             "negative eigenvalue, and the mean |λ_min/λ_max| there. A negative eigenvalue "
             "comes from a bump of a chaotic surface or from the rim where a bowl levels off; "
             "the contours show which. Li et al. see chaos grow with depth (ResNet-56 and -110 "
             "without skips); this CPU-sized ResNet-20 is the shallow end of their series."),
}


def _rows(name: str, res: dict):
  if name == "minima":
    return [["run", "seed", "train acc", "test acc", "train loss", "steps"]] + [
        [k, r["seed"], r["train_accuracy"], r["test_accuracy"], r["train_loss"], r["steps"]]
        for k, r in res.items() if isinstance(r, dict)]
  if name == "connectivity":
    rows = [["pair", "path", "train loss barrier", "test loss barrier", "train acc drop",
             "test acc drop"]]
    for pair, r in res.items():
      if not isinstance(r, dict):
        continue
      for path, b in r["barriers"].items():
        rows.append([pair, path, b.get("train/loss"), b.get("test/loss"),
                     b.get("train/accuracy"), b.get("test/accuracy")])
      for row in r["radius_along_curve"]["rows"]:
        rows.append([pair, f"radius at t={row['t']:g}", row["median_radius"], "", "",
                     f"log10 V {row['log10_volume']:.4g} (ESS {row['effective_sample_size']:.3g})"])
    return rows
  if name == "trajectory":
    return [["run", "PC1", "PC2", "iterates", "path length"]] + [
        [k, r["explained_variance"][0], r["explained_variance"][1], r["num_iterates"],
         r["path_length"]] for k, r in res.items() if isinstance(r, dict)]
  if name == "skip":
    keys = ("train_accuracy", "test_accuracy", "num_params", "negative_share", "mean_abs_ratio",
            "loss_range")
    return [["quantity", "with skips", "without skips"]] + [
        [k, res["with_skip"].get(k), res["without_skip"].get(k)] for k in keys]
  return None


def _figures(res: dict) -> list[str]:
  figs = []
  for r in res.values():
    if isinstance(r, dict):
      figs += [r["figure"]] if "figure" in r else list(r.get("figures", []))
  return figs


def write_outputs(workdir: str, results: dict) -> dict[str, str]:
  """Writes paper_summary.json and report.html; returns their paths."""
  sections = [report.Section(f"{title} ({results[n].get('wall_time_s', '?')} s)", text,
                             [os.path.join(workdir, f) for f in _figures(results[n])],
                             _rows(n, results[n]))
              for n, (title, text) in TEXTS.items() if n in results]
  return report.write_job_outputs(workdir, "genviz_jax: beyond the paper", INTRO,
                                  claims(results), sections, results)
