"""Loss landscapes of a trained workdir: 1-D line, 2-D plane, interpolation to another minimum.

  python -m experiments.landscape --workdir=runs/swissroll_clean
  python -m experiments.landscape --workdir=runs/swissroll_clean \
      --other_workdir=runs/swissroll_poisoned --config=experiments/configs/landscape.py:quick

Writes into --outdir (default WORKDIR/landscape; the trained run's own files are never touched):
  line.npz           alphas (A,), "<label>/<split>/<metric>" (A,) for the workdir ("a") and, with
                     --other_workdir, the other minimum ("b") along its own filter-normalized
                     direction (same seed); metadata (JSON string)
  line.png           loss and accuracy curves, the minima overlaid
  plane.npz          axis (G,), "<split>/<metric>" (G, G) indexed [x, y]; metadata
  plane_{contour,contourf,heatmap,surface3d}.png   train loss
  interpolation.npz / .png   with --other_workdir: (1-α)θ_a + αθ_b, α in [-0.5, 1.5]
Progress lines give points/s and the ETA. Bad flags or configs: `error: ...`, exit status 2.
"""

from __future__ import annotations

import functools
import json
import os
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments import common

FLAGS = flags.FLAGS
_DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "landscape.py")


def define_flags() -> None:
  """Defines the flags; only when run as a binary, so other code can import run()."""
  config_flags.DEFINE_config_file("config", _DEFAULT_CONFIG, "Landscape config "
                                  "(experiments/configs/landscape.py[:variant]).", lock_config=True)
  flags.DEFINE_string("workdir", None, "A trained workdir (experiments.train).")
  flags.DEFINE_string("other_workdir", None, "A second trained workdir of the same model: "
                      "interpolation and overlaid 1-D curves.")
  flags.DEFINE_string("outdir", None, "Output directory (default WORKDIR/landscape).")
  flags.mark_flags_as_required(["workdir"])


KINDS = ("line", "plane", "interpolation")


def check_config(c, has_other: bool) -> list[str]:
  from genviz_jax import directions
  kinds = [k.strip() for k in str(c.kinds).split(",") if k.strip()]
  bad = [k for k in kinds if k not in KINDS]
  if bad or not kinds:
    raise ValueError(f"config.kinds={c.kinds!r}; allowed: a comma list of {', '.join(KINDS)}")
  if "interpolation" in kinds and not has_other:
    if kinds == ["interpolation"]:
      raise ValueError("config.kinds='interpolation' needs --other_workdir")
    kinds.remove("interpolation")
  if c.norm not in directions.NORMS:
    raise ValueError(f"config.norm={c.norm!r}; allowed: {', '.join(directions.NORMS)}")
  splits = [s.strip() for s in str(c.splits).split(",") if s.strip()]
  if not splits or any(s not in ("train", "test") for s in splits):
    raise ValueError(f"config.splits={c.splits!r}; allowed: train, test (comma list)")
  for key in ("line_points", "grid_points", "interp_points"):
    if isinstance(c[key], bool) or not isinstance(c[key], int) or c[key] < 2:
      raise ValueError(f"config.{key}={c[key]!r} must be an integer >= 2")
  for key in ("chunk_size", "point_batch"):
    if isinstance(c[key], bool) or not isinstance(c[key], int) or c[key] <= 0:
      raise ValueError(f"config.{key}={c[key]!r} must be a positive integer")
  if not c.line_range > 0:
    raise ValueError(f"config.line_range={c.line_range!r} must be > 0")
  if not c.grid_lo < c.grid_hi:
    raise ValueError(f"config grid range [{c.grid_lo}, {c.grid_hi}] needs grid_lo < grid_hi")
  if not c.interp_lo < c.interp_hi:
    raise ValueError(f"config interpolation range [{c.interp_lo}, {c.interp_hi}] needs lo < hi")
  return kinds


def _save_npz(path: str, arrays: dict, metadata: dict) -> None:
  import numpy as np
  tmp = path + f".tmp{os.getpid()}.npz"
  np.savez(tmp, metadata=np.asarray(json.dumps(metadata, sort_keys=True)), **arrays)
  os.replace(tmp, path)


def run(config, workdir: str, other_workdir: str | None = None,
        outdir: str | None = None) -> dict:
  """Computes the configured surfaces; returns {kind: npz path}."""
  import jax
  import numpy as np
  from genviz_jax import directions, landscape
  from genviz_jax import workdir as workdir_lib
  from genviz_jax.plots import landscape as plots

  kinds = check_config(config, other_workdir is not None)
  outdir = outdir or os.path.join(workdir, "landscape")
  if os.path.abspath(outdir) in (os.path.abspath(workdir),
                                 os.path.abspath(other_workdir or workdir)):
    raise ValueError(f"outdir={outdir!r} is a trained workdir; use a subfolder (default "
                     "WORKDIR/landscape)")
  step = None if config.step < 0 else int(config.step)
  runs = {"a": workdir_lib.load(workdir, step=step)}
  if other_workdir is not None:
    runs["b"] = workdir_lib.load(other_workdir)
    directions.check_same_tree(runs["b"].params, runs["a"].params, what="other_workdir params")
  splits = [s.strip() for s in str(config.splits).split(",") if s.strip()]
  key = jax.random.key(int(config.seed))
  kw = dict(chunk_size=int(config.chunk_size), point_batch=int(config.point_batch),
            data_batch=int(config.data_batch) or None)
  meta = {"workdir": os.path.abspath(workdir), "step": runs["a"].step, "seed": int(config.seed),
          "norm": config.norm, "ignore_1d": bool(config.ignore_1d), "splits": splits,
          "other_workdir": os.path.abspath(other_workdir) if other_workdir else None}
  label = {"a": os.path.basename(os.path.abspath(workdir))}
  if other_workdir:
    label["b"] = os.path.basename(os.path.abspath(other_workdir))
  out: dict = {}
  os_made = []

  def progress_for(what, total):
    p = common.Progress(what, total, unit="points")
    return lambda done, k: p.update(done, force=done == k)

  def evaluate(run_, fn, num_points, what):
    on = progress_for(what, num_points * len(splits))
    res = {}
    for i, s in enumerate(splits):
      r = fn(run_.metric_fn, data=getattr(run_.dataset, s),
             on_chunk=lambda d, k, i=i: on(i * k + d, len(splits) * k), **kw)
      axis, r = r if isinstance(r, tuple) else (None, r)
      res.update({f"{s}/{m}": v for m, v in r.items()})
    return axis, res

  def ensure_outdir():
    if not os_made:
      os.makedirs(outdir, exist_ok=True)
      os_made.append(True)

  t0 = time.time()
  # Direction 0: the line; 1 and 2: the plane. One compiled generation for every run.
  bases = {n: landscape.random_basis(key, r.params, 3, norm=config.norm,
                                     ignore_1d=bool(config.ignore_1d)) for n, r in runs.items()}
  if "line" in kinds:
    alphas = np.linspace(-config.line_range, config.line_range, int(config.line_points))
    curves = {}
    for name, r in runs.items():
      d = jax.tree.map(lambda x: x[0], bases[name])
      _, curves[name] = evaluate(
          r, lambda fn, **k: landscape.line(fn, r.params, d, alphas, **k), len(alphas),
          f"line {label[name]}")
    ensure_outdir()
    arrays = {"alphas": alphas, **{f"{n}/{k}": v for n, c in curves.items() for k, v in c.items()}}
    out["line"] = os.path.join(outdir, "line.npz")
    _save_npz(out["line"], arrays, {**meta, "labels": label})
    plots.curves_1d(alphas, {label[n]: c for n, c in curves.items()},
                    os.path.join(outdir, "line.png"),
                    xlabel=f"α ({config.norm}-normalized random direction)", marks=(0.0,))
  if "plane" in kinds:
    a = runs["a"]
    basis = jax.tree.map(lambda x: x[1:], bases["a"])
    g = int(config.grid_points)
    axis, grids = evaluate(
        a, lambda fn, **k: landscape.plane(fn, a.params, basis, num=g, lo=float(config.grid_lo),
                                           hi=float(config.grid_hi), **k), g * g, "plane")
    ensure_outdir()
    out["plane"] = os.path.join(outdir, "plane.npz")
    _save_npz(out["plane"], {"axis": axis, **grids}, {**meta, "directions": [1, 2]})
    z = grids[f"{splits[0]}/loss"]
    for kind in plots.KINDS_2D:
      plots.surface_2d(axis, z, os.path.join(outdir, f"plane_{kind}.png"), kind=kind,
                       label=f"{splits[0]} loss", title=f"{label['a']}: {splits[0]} loss")
  if "interpolation" in kinds:
    a, b = runs["a"], runs["b"]
    alphas = np.linspace(config.interp_lo, config.interp_hi, int(config.interp_points))
    _, res = evaluate(
        a, lambda fn, **k: landscape.interpolation(fn, a.params, b.params, alphas, **k),
        len(alphas), "interpolation")
    ensure_outdir()
    out["interpolation"] = os.path.join(outdir, "interpolation.npz")
    _save_npz(out["interpolation"], {"alphas": alphas, **res}, {**meta, "labels": label})
    plots.curves_1d(alphas, {f"{label['a']} -> {label['b']}": res},
                    os.path.join(outdir, "interpolation.png"),
                    xlabel=f"α: (1-α)·{label['a']} + α·{label['b']}", marks=(0.0, 1.0))
  logging.info("landscape: %s in %.1f s", out, time.time() - t0)
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")

  def go():
    out = run(FLAGS.config, FLAGS.workdir, FLAGS.other_workdir, FLAGS.outdir)
    print(" ".join(f"{k}={v}" for k, v in out.items()))

  common.run_guarded(go)


if __name__ == "__main__":
  define_flags()
  app.run(main)
