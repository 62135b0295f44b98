"""The claims of Huang et al. 2019 ("Understanding Generalization through Visualizations"),
each checked against the numbers a paper run measured.

A claim holds when the measured values pass the threshold in its statement; it is None (not run)
when its phase did not run. The published numbers quoted (`paper`): the good swiss-roll minimum
fits 100% train / 100% test, the bad one 100% train / 7-8% test; the minefield's bad minima reach
at most 53% test while the good run ends at 98.5%; the authors' notes give top Hessian
eigenvalues of ~300 (clean) and ~4000 (poisoned).
"""

from __future__ import annotations

import math

from genviz_jax.report import Claim


class _Claims(list):
  def add(self, key, statement, measured, paper, holds, detail=""):
    self.append(Claim(key, statement, measured, paper,
                      None if measured is None else bool(holds), detail))


def _minima(results: dict, out: _Claims) -> None:
  d = results.get("decision") or {}
  g, b = d.get("good"), d.get("bad")
  out.add("good_minimum", "A clean run fits the swiss roll and generalizes (100% train, >= 95% test)",
          None if g is None else [g["train_accuracy"], g["test_accuracy"]], [1.0, 1.0],
          g is not None and g["train_accuracy"] >= 0.999 and g["test_accuracy"] >= 0.95,
          "[train, test] accuracy")
  out.add("bad_minimum", "The poisoned objective finds a minimum that fits the training set but "
          "generalizes badly (>= 99% train, <= 30% test)",
          None if b is None else [b["train_accuracy"], b["test_accuracy"]], [1.0, 0.075],
          b is not None and b["train_accuracy"] >= 0.99 and b["test_accuracy"] <= 0.30,
          "[train, test] accuracy; the paper reached 7-8% test")
  m = results.get("minefield")
  out.add("minefield", "Bad minima lie all around the good run's path (every bad minimum < 60% "
          "test, final good iterate > 95% test)",
          None if m is None else [m["bad_test_accuracy_max"], m["final_good_test_accuracy"]],
          [0.53, 0.985],
          m is not None and m["bad_test_accuracy_max"] < 0.60
          and m["final_good_test_accuracy"] > 0.95,
          "[max test accuracy of the bad minima, final good iterate's test accuracy]" + (
              "" if m is None else f"; bad minima fit >= {100 * m['bad_train_accuracy_min']:.0f}% "
              f"of the training set; poison: {m.get('poison_source', 'fixed')}"))


def _optimizers(results: dict, out: _Claims) -> None:
  o = results.get("optimizers")
  if o is None:
    out.add("optimizers", "Every optimizer lands in a good minimum", None, None, False)
    return
  fit = [r for r in o["rows"] if r["train_accuracy"] >= 0.99]
  worst = min((r["test_accuracy"] for r in fit), default=float("nan"))
  unfit = [f"{r['dataset']}/{r['optimizer']}" for r in o["rows"] if r["train_accuracy"] < 0.99]
  out.add("optimizers", "Optimizers land in good minima: every optimizer that fits the training "
          "set (>= 99% train) reaches >= 90% test", worst, None, bool(fit) and worst >= 0.90,
          f"worst test accuracy among {len(fit)} runs that fit; did not fit in their budget: "
          f"{', '.join(unfit) or 'none'}")


def _basin(results: dict, out: _Claims) -> None:
  bs = results.get("basin")
  volume = "Good minima have larger basins (log10 volume good > bad)"
  radius = "Good minima have larger basin radii (mean radius good > bad)"
  if bs is None:
    out.add("volume", volume, None, None, False)
    out.add("radius", radius, None, None, False)
    out.add("volume_vs_radius", "In high dimension a small radius gap is a huge volume gap",
            None, None, False)
    return
  vg, vb = bs["good"]["log10_volume"], bs["bad"]["log10_volume"]
  rg, rb = bs["good"]["radius_mean"], bs["bad"]["radius_mean"]
  ci_sep = bs["good"]["log10_volume_ci"][0] > bs["bad"]["log10_volume_ci"][1]
  out.add("volume", volume, [vg, vb], None, vg > vb,
          f"[good, bad], {bs['good']['measure']} measure, n = {bs['good']['dim']}; "
          f"intervals {'separate' if ci_sep else 'overlap'}")
  out.add("radius", radius, [rg, rb], None, rg > rb,
          "[good, bad] mean radius along filter-normalized directions")
  ratio = rg / rb if rb > 0 else float("inf")
  out.add("volume_vs_radius", "In high dimension a small radius gap is a huge volume gap "
          "(Δlog10 V > 10·log10 of the radius ratio)", [ratio, vg - vb], None,
          ratio > 1 and (vg - vb) > 10 * math.log10(ratio),
          "[mean radius ratio good/bad, log10 volume ratio good/bad]")


def _sharpness(results: dict, out: _Claims) -> None:
  s = results.get("sharpness")
  statement = "Bad minima are sharper (top Hessian eigenvalue bad > good)"
  if s is None:
    out.add("sharpness", statement, None, [300, 4000], False)
    return
  eg, eb = s["good"]["top_eigenvalue"], s["bad"]["top_eigenvalue"]
  out.add("sharpness", statement, [eg, eb], [300, 4000], eb > eg,
          "[good, bad]; the authors' notes: ~300 clean, ~4000 poisoned")
  agree = s.get("ranked_sharper_by")
  if agree is not None:
    out.add("sharpness_all", "Every sharpness measure ranks the bad minimum as sharper",
            f"{len(agree)}/{len(s['measures'])}", None, len(agree) == len(s["measures"]),
            "measures that rank bad as sharper: " + ", ".join(agree))


def _gap_sweep(results: dict, out: _Claims) -> None:
  gs = results.get("gap_sweep")
  val = lambda k: None if gs is None else gs[k]
  out.add("gap_grows", "The generalization gap grows with the poison factor (Spearman ρ >= 0.8)",
          val("spearman_gap_vs_poison"), None,
          gs is not None and gs["spearman_gap_vs_poison"] >= 0.8)
  out.add("gap_vs_volume", "Larger gap goes with smaller basin volume (Spearman ρ(gap, log10 V) "
          "< 0)", val("spearman_gap_vs_log10_volume"), None,
          gs is not None and gs["spearman_gap_vs_log10_volume"] < 0)
  out.add("gap_vs_sharpness", "Larger gap goes with a larger top Hessian eigenvalue (ρ > 0)",
          val("spearman_gap_vs_top_eigenvalue"), None,
          gs is not None and gs["spearman_gap_vs_top_eigenvalue"] > 0)


def _circles(results: dict, out: _Claims) -> None:
  c = results.get("circles")
  out.add("circles", "When the only perfect fit is sharp, the net fails: test accuracy clearly "
          "below the wide-margin case (by >= 5 points)",
          None if c is None else [c["sharp"]["test_accuracy"], c["wide"]["test_accuracy"]], None,
          c is not None and c["sharp"]["test_accuracy"] <= c["wide"]["test_accuracy"] - 0.05,
          "[margin 0.001, wide margin] test accuracy" + (
              "" if c is None else f"; train: {c['sharp']['train_accuracy']:.3f} vs "
              f"{c['wide']['train_accuracy']:.3f}"))


def claims(results: dict) -> list[Claim]:
  """The paper's claims, each with the measured value and whether it holds (None: not run)."""
  out = _Claims()
  for part in (_minima, _optimizers, _basin, _sharpness, _gap_sweep, _circles):
    part(results, out)
  return list(out)
