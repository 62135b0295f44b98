"""The claims of the papers the beyond job reproduces, each checked against this run's numbers.

- Garipov et al. 2018 (§1, §4): independently trained minima are joined by simple curves of
  nearly constant train loss, while the straight line between them crosses a high barrier.
  Checked: the trained curve's train-loss barrier is at most a tenth of the line's.
- Li et al. 2018 (§7): "optimization trajectories lie in an extremely low dimensional space";
  their Fig. 10 shows the first two PCA components explaining 40% to 90% of the variation.
  Checked: the top-2 explained variance of the good run's trajectory is at least 40%.
- Li et al. 2018 (§5, Fig. 5): without skip connections the landscape of a deep ResNet turns
  chaotic and non-convex; with them it stays convex-like. Checked: the share of grid points of
  the 2-D filter-normalized surface with negative curvature is larger without skips.
A claim is None (not run) when its phase did not run.
"""

from __future__ import annotations

from genviz_jax.report import Claim


def _add(out: list, key, statement, measured, paper, holds, detail=""):
  out.append(Claim(key, statement, measured, paper, None if measured is None else bool(holds),
                   detail))


def claims(results: dict) -> list[Claim]:
  out: list[Claim] = []
  gg = (results.get("connectivity") or {}).get("good_good")
  _add(out, "connectivity", "Two good minima (different seeds) are joined by a trained curve "
       "whose train-loss barrier is at most a tenth of the straight line's (Garipov et al.)",
       None if gg is None else [gg["curve_barrier"], gg["linear_barrier"]], None,
       gg is not None and gg["curve_barrier"] <= 0.1 * gg["linear_barrier"],
       "[curve barrier, line barrier]: train cross-entropy, max along the path minus the "
       "endpoints' mean" + ("" if gg is None else f"; curve: {gg['kinds'][0]}"))
  tr = (results.get("trajectory") or {}).get("good")
  _add(out, "trajectory", "The good run's trajectory lies in a low-dimensional space: its top "
       "two PCA directions explain at least 40% of its variation (Li et al. §7: 40-90%)",
       None if tr is None else tr["explained_variance_top2"], [0.4, 0.9],
       tr is not None and tr["explained_variance_top2"] >= 0.4,
       "" if tr is None else f"{tr['num_iterates']} iterates")
  sk = results.get("skip")
  ws, wo = (None, None) if sk is None else (sk["with_skip"], sk["without_skip"])
  _add(out, "skip", "Removing the skip connections makes the ResNet's landscape more "
       "non-convex (Li et al. §5): a larger share of negative-curvature grid points",
       None if sk is None else [wo["negative_share"], ws["negative_share"]], None,
       sk is not None and wo["negative_share"] > ws["negative_share"],
       "[without skips, with skips]: share of the 2-D surface's interior grid points whose "
       "2x2 Hessian (second differences) has a negative eigenvalue")
  return out
