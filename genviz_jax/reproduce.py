"""The paper, end to end: every experiment of Huang et al. on embedded data, as phases.

`run(config, workdir)` runs the phases in order; each writes its figures and, when it has
finished, `phases/NAME.json` (atomically). A rerun skips every phase whose JSON exists, so a killed
job resumes at the phase it was in (training sub-runs resume from their own checkpoints). Every
phase is a deterministic function of the config, so a resumed job ends with the same numbers.
`claims(results)` turns the phase results into the paper's claims, each checked; `write_outputs`
writes paper_summary.json and report.html.

Layout of WORKDIR: phases/*.json, figures/*.png|gif, runs/ (trainer workdirs: good, bad, and the
optimizer comparison), report.html, paper_summary.json.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from genviz_jax import data as data_lib
from genviz_jax import ensemble
from genviz_jax import models as models_lib
from genviz_jax import train as train_lib

PHASES = ("decision", "minefield", "landscape", "basin", "sharpness", "gap_sweep", "circles",
          "optimizers")


def _write_json(path: str, obj) -> None:
  from experiments import common
  common.write_json_atomic(path, obj)


def _progress(what: str, total: int, unit: str = "steps"):
  from experiments import common
  p = common.Progress(what, total, unit)
  return lambda done, *_: p.update(done)


def _adam_tx(lr: float, boundaries=(), clip: float = 0.0):
  c = train_lib.default_config()
  c.optimizer, c.learning_rate, c.lr_boundaries, c.grad_clip = "adam", lr, tuple(boundaries), clip
  return train_lib.make_optimizer(c)


def _figure(workdir: str, name: str) -> str:
  os.makedirs(os.path.join(workdir, "figures"), exist_ok=True)
  return os.path.join(workdir, "figures", name)


def _save(fig, path: str) -> str:
  import matplotlib.pyplot as plt
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def _spearman(a, b) -> float:
  from scipy import stats
  a, b = np.asarray(a, float), np.asarray(b, float)
  ok = np.isfinite(a) & np.isfinite(b)
  if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
    return float("nan")
  return float(stats.spearmanr(a[ok], b[ok]).statistic)


def _rel(workdir: str, path: str) -> str:
  return os.path.relpath(path, workdir)


# ------------------------------------------------------------------------------------ phases


def _swissroll_config(cfg, variant: str) -> ml_collections.ConfigDict:
  from experiments.configs import swissroll
  c = swissroll.get_config(variant)
  c.seed = int(cfg.seed)
  c.plot = True
  if variant == "poisoned":
    c.num_steps = int(cfg.decision.poisoned_steps)
    scale = c.num_steps / 100000
    c.lr_boundaries = tuple(max(1, int(b * scale)) for b in (30000, 60000))
    c.poison_warmup_steps = int(15000 * scale)
  else:
    c.num_steps = int(cfg.decision.clean_steps)
  c.log_every = min(c.log_every, c.num_steps)
  c.eval_every = c.checkpoint_every = c.log_every * max(1, c.num_steps // (5 * c.log_every))
  return c


def phase_decision(cfg, workdir: str) -> dict:
  """Figs 2-3: a good (clean) and a bad (poisoned) swiss-roll minimum, decision boundaries."""
  from genviz_jax import workdir as wd_lib
  from genviz_jax.plots import decision
  out = {}
  for name, variant in (("good", "clean"), ("bad", "poisoned")):
    run_dir = os.path.join(workdir, "runs", name)
    summary = train_lib.train_and_evaluate(_swissroll_config(cfg, variant), run_dir)
    out[name] = {k: summary[k] for k in ("train_accuracy", "test_accuracy", "train_loss",
                                         "test_loss", "poison_factor", "steps", "wall_time_s",
                                         "num_params")}
  good, bad = wd_lib.load(os.path.join(workdir, "runs", "good")), wd_lib.load(
      os.path.join(workdir, "runs", "bad"))
  fig = decision.good_vs_bad_figure(good, bad)
  out["figure"] = _rel(workdir, _save(fig, _figure(workdir, "fig2_decision_boundaries.png")))
  return out


def phase_minefield(cfg, workdir: str) -> dict:
  """Fig. 1: iterates of a good run and bad minima trained from them, embedded with t-SNE."""
  from genviz_jax.plots import paper as paper_plots
  m = cfg.minefield
  ds = data_lib.swiss_roll(seed=int(m.data_seed), num_train=int(m.num_train),
                           num_test=int(m.num_test), num_poison=int(m.num_poison), noise=0.0)
  model = models_lib.MLP(tuple(m.widths), 2)
  tx = _adam_tx(float(m.learning_rate))
  p0 = ensemble.init_many(model, [int(cfg.seed)], (2,))
  _, snaps = ensemble.train_many(model, tx, p0, ds.train, num_steps=int(m.good_steps),
                                 snapshot_every=int(m.snapshot_every),
                                 on_chunk=_progress("minefield good run", int(m.good_steps)))
  steps = np.array([s for s, _ in snaps])
  good = jax.tree.map(lambda *a: np.concatenate(a), *[p for _, p in snaps])  # (S, ...)
  # Bad minima start from every `start_every`-th iterate and fit train ∪ poison (flipped labels):
  # one mean over both sets, i.e. β = |D_p| / (|D_t| + |D_p|). poison_source "fixed" is the
  # authors' one 134-point set; "sampler" draws a fresh 134-point sample every step (what makes
  # the Fig. 2 minimum bad). Measured (3000 steps): fixed 51-64% test, fresh 39-44%.
  starts = np.arange(0, len(steps), int(m.start_every))[-int(m.num_bad):]
  p_start = jax.tree.map(lambda a: jnp.asarray(a[starts]), good)
  beta = len(ds.poison["y"]) / (len(ds.poison["y"]) + len(ds.train["y"]))
  if m.poison_source not in ("fixed", "sampler"):
    raise ValueError(f"minefield.poison_source={m.poison_source!r}; allowed: fixed, sampler")
  poison = dict(poison=ds.poison) if m.poison_source == "fixed" else dict(
      poison_sampler=ds.poison_sampler,
      keys=jax.random.split(jax.random.PRNGKey(int(cfg.seed) + 1), len(starts)))
  bad, _ = ensemble.train_many(model, tx, p_start, ds.train, num_steps=int(m.bad_steps),
                               betas=np.full(len(starts), beta), **poison,
                               chunk=max(1, int(m.bad_steps) // 10),
                               on_chunk=_progress("minefield bad minima", int(m.bad_steps)))
  acc = lambda p, split: ensemble.evaluate_many(model, p, getattr(ds, split))["accuracy"]
  good_test, good_train = acc(good, "test"), acc(good, "train")
  bad_test, bad_train = acc(bad, "test"), acc(bad, "train")
  kernels = lambda p: np.concatenate(
      [np.asarray(v).reshape(np.asarray(v).shape[0], -1) for path, v in
       jax.tree_util.tree_flatten_with_path(p)[0] if "kernel" in jax.tree_util.keystr(path)], 1)
  emb = _tsne(np.concatenate([kernels(good), kernels(bad)]), int(cfg.seed),
              float(m.perplexity))
  fig = paper_plots.minefield(emb[:len(steps)], good_test, emb[len(steps):], bad_test)
  path = _save(fig, _figure(workdir, "fig1_minefield.png"))
  return {"num_iterates": int(len(steps)), "num_bad_minima": int(len(starts)),
          "beta_bad": beta, "poison_source": m.poison_source, "final_good_test_accuracy": float(good_test[-1]),
          "final_good_train_accuracy": float(good_train[-1]),
          "bad_test_accuracy_max": float(bad_test.max()),
          "bad_test_accuracy_mean": float(bad_test.mean()),
          "bad_train_accuracy_min": float(bad_train.min()), "figure": _rel(workdir, path)}


def _minima(workdir: str) -> dict[str, str]:
  dirs = {n: os.path.join(workdir, "runs", n) for n in ("good", "bad")}
  for n, d in dirs.items():
    if not os.path.exists(os.path.join(d, "summary.json")):
      raise ValueError(f"phase needs the {n} minimum of the 'decision' phase ({d} has no "
                       "summary.json); run with the decision phase first")
  return dirs


def phase_landscape(cfg, workdir: str) -> dict:
  """Filter-normalized 1-D (good and bad overlaid) and 2-D landscapes, interpolation good->bad."""
  from experiments import landscape as landscape_bin
  from experiments.configs import landscape as landscape_cfg
  L = cfg.landscape
  dirs = _minima(workdir)
  c = landscape_cfg.get_config("")
  c.seed = int(L.direction_seed)
  c.line_points, c.grid_points, c.interp_points = int(L.num_1d), int(L.num_2d), int(
      L.num_interpolation)
  # The swiss-roll basins are narrow (radius ~0.05-0.1 of ||θ|| filter by filter): the default
  # [-1, 1] window would show only their walls.
  c.line_range = float(L.range_1d)
  c.grid_lo, c.grid_hi = -float(L.range_2d), float(L.range_2d)
  out = {}
  both = landscape_bin.run(c, dirs["good"], other_workdir=dirs["bad"],
                           outdir=os.path.join(workdir, "landscape", "good"))
  c.kinds = "plane"
  bad = landscape_bin.run(c, dirs["bad"], outdir=os.path.join(workdir, "landscape", "bad"))
  line = np.load(both["line"])
  interp = np.load(both["interpolation"])
  for name, key in (("good", "a"), ("bad", "b")):
    loss = line[f"{key}/train/loss"]
    out[name] = {"line_train_loss_at_alpha_pm_half": [
        float(np.interp(-0.5, line["alphas"], loss)), float(np.interp(0.5, line["alphas"], loss))]}
  for name, path in (("good", both["plane"]), ("bad", bad["plane"])):
    z = np.load(path)["train/loss"]
    out[name]["plane_train_loss_mean"] = float(np.mean(z))
    out[name]["plane_share_below_1"] = float(np.mean(z < 1.0))
  out["interpolation_max_train_loss"] = float(np.max(interp["train/loss"]))
  figs = [os.path.join("landscape", "good", f) for f in
          ("line.png", "plane_contour.png", "plane_surface3d.png", "interpolation.png")]
  figs += [os.path.join("landscape", "bad", f) for f in ("plane_contour.png", "plane_surface3d.png")]
  out["figures"] = [f for f in figs if os.path.exists(os.path.join(workdir, f))]
  out["npz"] = {k: _rel(workdir, v) for k, v in both.items()}
  return out


def phase_basin(cfg, workdir: str) -> dict:
  """Basin radii along filter-normalized directions and log10 volumes, good vs bad."""
  from experiments import basin as basin_bin
  from experiments.configs import basin as basin_cfg
  from genviz_jax.plots import basin as basin_plots
  B = cfg.basin
  dirs = _minima(workdir)
  c = basin_cfg.get_config("")
  c.num_directions, c.threshold = int(B.num_directions), float(B.threshold)
  c.r_max, c.seed = float(B.r_max), int(B.direction_seed)
  c.chunk_size = min(int(c.chunk_size), int(B.num_directions))
  out, radii, cens = {}, {}, {}
  keep = ("log10_volume", "log10_volume_ci", "effective_sample_size", "max_share", "radius_mean",
          "radius_median", "num_directions", "num_censored", "dim", "threshold", "metric",
          "measure", "centre_value", "wall_time_s")
  for name, d in dirs.items():
    outdir = os.path.join(workdir, "basin", name)
    res = basin_bin.run(c, d, outdir=outdir)
    out[name] = {k: res[k] for k in keep}
    radii[name] = np.load(os.path.join(outdir, "radii.npy"))
    cens[name] = res["num_censored"]
  path = _figure(workdir, "basin_radii_histogram.png")
  basin_plots.radius_histogram(
      radii, path, censored=cens, xlabel="radius (filter-normalized direction)",
      title=f"train loss > {B.threshold:g}: log10 V good {out['good']['log10_volume']:.4g}, "
            f"bad {out['bad']['log10_volume']:.4g}")
  out["figure"] = _rel(workdir, path)
  return out


def phase_sharpness(cfg, workdir: str) -> dict:
  """Hessian spectrum, PAC-Bayes flatness and ε-sharpness of the good and bad minima."""
  from experiments import sharpness as sharpness_bin
  from experiments.configs import sharpness as sharpness_cfg
  dirs = _minima(workdir)
  c = sharpness_cfg.get_config(str(cfg.sharpness.variant))
  res = {}
  for name in ("good", "bad"):
    # The bad minimum's density figure overlays the good one's spectrum (computed first).
    c.compare = (dirs["good"],) if name == "bad" else ()
    res[name] = sharpness_bin.compute(c, dirs[name])
  out = {}
  for name, r in res.items():
    h = r["hessian"]
    out[name] = {"top_eigenvalue": h["top_eigenvalues"][0], "trace": h["trace"]["estimate"],
                 "trace_ci": h["trace"]["ci"], "pacbayes_sigma": r["pacbayes"]["sigma"]["sigma"],
                 "pacbayes_mag_sigma": r["pacbayes"]["mag_sigma"]["sigma"],
                 "train_loss": r["centre"]["loss"]}
  measures = sorted(set(res["good"]["measures"]) & set(res["bad"]["measures"]))
  values = {m: [res["good"]["measures"][m], res["bad"]["measures"][m]] for m in measures}
  out["measures"] = measures
  out["values_good_bad"] = values
  # Every entry of `measures` is "larger = sharper" (experiments/sharpness.py).
  out["ranked_sharper_by"] = [m for m, (g, b) in values.items()
                              if g is not None and b is not None and b > g]
  figs = []
  for name in ("good", "bad"):
    sub = os.path.join(dirs[name], c.out_subdir)
    figs += [_rel(workdir, os.path.join(sub, f)) for f in res[name].get("figures", [])]
  out["figures"] = [f for f in figs if os.path.exists(os.path.join(workdir, f))]
  return out


def _tsne(x: np.ndarray, seed: int, perplexity: float) -> np.ndarray:
  """PCA to at most 50 dimensions, then 2-D t-SNE (as the authors did)."""
  from sklearn.decomposition import PCA
  from sklearn.manifold import TSNE
  x = x - x.mean(0)
  k = min(50, x.shape[0], x.shape[1])
  z = PCA(n_components=k, random_state=seed).fit_transform(x)
  perp = min(perplexity, (x.shape[0] - 1) / 3)
  return TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed).fit_transform(z)


def _sweep_values(cfg) -> np.ndarray:
  g = cfg.gap_sweep
  vals = [0.0] + list(0.8 * 10 ** np.linspace(-4, 0, int(g.num_factors) - 1))
  return np.asarray(vals, np.float64)


def phase_gap_sweep(cfg, workdir: str) -> dict:
  """Fig. 6: generalization gap against the poison factor, basin volume and sharpness."""
  from genviz_jax import basin, directions, hessian
  from genviz_jax.plots import paper as paper_plots
  g = cfg.gap_sweep
  ds = data_lib.swiss_roll()
  model = models_lib.MLP(tuple(g.widths), 2)
  fractions = _sweep_values(cfg)
  seeds = [int(cfg.seed) + s for s in range(int(g.num_seeds))]
  runs = [(f, s) for s in seeds for f in fractions]
  frac = np.array([f for f, _ in runs])
  # The authors' poison factor is the share f of poison points added per train point; β of
  # DESIGN §1's objective is f / (1 + f) (see experiments/configs/swissroll.py).
  betas = frac / (1 + frac)
  params = ensemble.init_many(model, [s for _, s in runs], (2,))
  keys = jnp.stack([jax.random.fold_in(jax.random.PRNGKey(s), i) for i, (_, s) in enumerate(runs)])
  steps = int(g.steps)
  tx = _adam_tx(float(g.learning_rate), (int(steps * 0.6), int(steps * 0.8)), clip=8.0)
  params, _ = ensemble.train_many(model, tx, params, ds.train, num_steps=steps, betas=betas,
                                  poison_sampler=ds.poison_sampler, keys=keys,
                                  chunk=int(g.chunk), on_chunk=_progress("gap sweep", steps))
  train_acc = ensemble.evaluate_many(model, params, ds.train)["accuracy"]
  test_acc = ensemble.evaluate_many(model, params, ds.test)["accuracy"]
  gap = train_acc - test_acc
  metric_fn = models_lib.metric_fn(model)
  train_j = {k: jnp.asarray(v) for k, v in ds.train.items()}
  log10_vol, radius_mean, top_eig, num_cens = [], [], [], []
  tick = _progress("gap sweep measures", len(runs), "runs")
  for i in range(len(runs)):
    p = jax.tree.map(lambda a: a[i], params)
    r = basin.radii(metric_fn, p, basin.RandomDirections(jax.random.PRNGKey(int(g.basin_seed)),
                                                        int(g.num_directions)),
                    threshold=float(cfg.basin.threshold), data=train_j,
                    r_max=float(cfg.basin.r_max))
    log10_vol.append(r.volume(num_bootstrap=0).log10_volume)
    radius_mean.append(float(np.mean(r.radius)))
    num_cens.append(r.num_censored)
    op = hessian.HessianOperator(lambda q, b: metric_fn(q, b)["loss"], p, train_j)
    top_eig.append(float(hessian.top_eigenpairs(op, 1, num_steps=int(g.lanczos_steps))
                         .eigenvalues[0]))
    tick(i + 1)
  figs = [paper_plots.gap_grid(model, params, ds, gap, frac, train_acc, test_acc),
          paper_plots.gap_scatter(gap, frac, np.array(log10_vol), np.array(top_eig))]
  paths = [_save(figs[0], _figure(workdir, "fig6_gap_grid.png")),
           _save(figs[1], _figure(workdir, "fig6_gap_vs_measures.png"))]
  return {
      "poison_fractions": frac.tolist(), "seeds": [s for _, s in runs], "betas": betas.tolist(),
      "train_accuracy": train_acc.tolist(), "test_accuracy": test_acc.tolist(),
      "gap": gap.tolist(), "log10_volume": log10_vol, "radius_mean": radius_mean,
      "num_censored": num_cens, "top_eigenvalue": top_eig, "steps": steps,
      "spearman_gap_vs_poison": _spearman(frac, gap),
      "spearman_gap_vs_log10_volume": _spearman(gap, log10_vol),
      "spearman_gap_vs_radius": _spearman(gap, radius_mean),
      "spearman_gap_vs_top_eigenvalue": _spearman(gap, top_eig),
      "figures": [_rel(workdir, p) for p in paths]}


def phase_circles(cfg, workdir: str) -> dict:
  """Fig. 8: concentric circles whose only perfect fit is sharp (margin 0.001) vs a wide margin."""
  from genviz_jax.plots import paper as paper_plots
  c = cfg.circles
  model = models_lib.MLP(tuple(c.widths), 2)
  tx = _adam_tx(float(c.learning_rate))
  out, panels = {}, []
  for name, margin in (("sharp", float(c.margin)), ("wide", float(c.wide_margin))):
    ds = data_lib.circles(seed=int(cfg.seed), margin=margin)
    p, _ = ensemble.train_many(model, tx, ensemble.init_many(model, [int(cfg.seed)], (2,)),
                               ds.train, num_steps=int(c.steps), chunk=max(1, int(c.steps) // 10),
                               on_chunk=_progress(f"circles ({name})", int(c.steps)))
    tr = float(ensemble.evaluate_many(model, p, ds.train)["accuracy"][0])
    te = float(ensemble.evaluate_many(model, p, ds.test)["accuracy"][0])
    out[name] = {"margin": margin, "train_accuracy": tr, "test_accuracy": te}
    panels.append((jax.tree.map(lambda a: a[0], p), ds,
                   f"margin {margin:g}: train {100 * tr:.1f}%, test {100 * te:.1f}%"))
  path = _save(paper_plots.decision_panels(model, panels), _figure(workdir, "fig8_circles.png"))
  out["figure"] = _rel(workdir, path)
  return out


def phase_optimizers(cfg, workdir: str) -> dict:
  """Table 1 analogue: every optimizer, clean data, lands in a good minimum."""
  from experiments.configs import digits as digits_cfg
  from genviz_jax.plots import paper as paper_plots
  o = cfg.optimizers
  rows = []
  split = lambda v: [x.strip() for x in str(v).split(",") if x.strip()]
  todo = [(d, opt) for d in split(o.datasets) for opt in split(o.names)]
  tick = _progress("optimizer comparison", len(todo), "runs")
  for i, (dname, opt) in enumerate(todo):
    if dname == "swissroll":
      c = _swissroll_config(cfg, "clean")
      c.num_steps, c.lr_boundaries = int(o.swissroll_steps), ()
    elif dname == "digits":
      c = digits_cfg.get_config("")
      c.num_steps = int(o.digits_steps)
      # An MLP, not the small CNN: L-BFGS's line search runs the net inside a while loop, where
      # XLA:CPU runs convolutions 20-30x slower (BUILD_NOTES).
      c.model = "mlp"
      c.model_kwargs = ml_collections.ConfigDict({"widths": tuple(o.digits_widths)})
    else:
      raise ValueError(f"optimizers.datasets contains {dname!r}; allowed: swissroll, digits")
    c.seed = int(cfg.seed)
    c.optimizer = opt
    c.lr_boundaries = ()
    if opt not in o.learning_rates:
      raise ValueError(f"optimizers.names contains {opt!r}; allowed: "
                       f"{', '.join(sorted(o.learning_rates.keys()))}")
    c.learning_rate = float(o.learning_rates[opt])
    if opt == "lbfgs":
      c.batch_size = 0
    c.log_every = min(c.log_every, c.num_steps)
    c.eval_every = c.checkpoint_every = c.num_steps
    c.plot = False
    s = train_lib.train_and_evaluate(c, os.path.join(workdir, "runs", f"opt_{dname}_{opt}"))
    rows.append({"dataset": dname, "optimizer": opt, "train_accuracy": s["train_accuracy"],
                 "test_accuracy": s["test_accuracy"], "steps": s["steps"],
                 "learning_rate": c.learning_rate})
    tick(i + 1)
  path = _save(paper_plots.optimizer_bars(rows), _figure(workdir, "table1_optimizers.png"))
  return {"rows": rows, "figure": _rel(workdir, path)}


PHASE_FNS: dict[str, Callable] = {
    "decision": phase_decision, "minefield": phase_minefield, "landscape": phase_landscape,
    "basin": phase_basin, "sharpness": phase_sharpness, "gap_sweep": phase_gap_sweep,
    "circles": phase_circles, "optimizers": phase_optimizers,
}


# ------------------------------------------------------------------------------- the driver


def run(cfg: ml_collections.ConfigDict, workdir: str) -> dict[str, dict]:
  """Runs (or resumes) every phase of cfg.phases; returns {phase: result}."""
  wanted = [p.strip() for p in str(cfg.phases).split(",") if p.strip()]
  unknown = [p for p in wanted if p not in PHASES]
  if unknown:
    raise ValueError(f"phases contains {unknown[0]!r}; allowed: {', '.join(PHASES)}")
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f"workdir={workdir!r} exists and is not a directory")
  os.makedirs(os.path.join(workdir, "phases"), exist_ok=True)
  cfg_path = os.path.join(workdir, "paper_config.json")
  cfg_json = json.loads(cfg.to_json(sort_keys=True))
  cfg_json.pop("phases")  # running a subset of phases is a resumption, not another config
  if os.path.exists(cfg_path):
    with open(cfg_path) as f:
      old = json.load(f)
    if old != cfg_json:
      changed = sorted(k for k in set(old) | set(cfg_json) if old.get(k) != cfg_json.get(k))
      raise ValueError(f"workdir={workdir!r} holds a paper run with another config (differs in "
                       f"{', '.join(changed)}); use a new workdir")
  else:
    _write_json(cfg_path, cfg_json)
  results = {}
  ordered = [p for p in PHASES if p in wanted]
  for i, name in enumerate(ordered):
    path = os.path.join(workdir, "phases", f"{name}.json")
    if os.path.exists(path):
      with open(path) as f:
        results[name] = json.load(f)
      logging.info("phase %d/%d %s: done earlier, skipped", i + 1, len(ordered), name)
      continue
    logging.info("phase %d/%d %s: running", i + 1, len(ordered), name)
    t0 = time.time()
    res = PHASE_FNS[name](cfg, workdir)
    res["wall_time_s"] = round(time.time() - t0, 2)
    _write_json(path, res)
    results[name] = res
    logging.info("phase %d/%d %s: finished in %.1f s", i + 1, len(ordered), name,
                 res["wall_time_s"])
  return results


# ------------------------------------------------------------------------ claims and report


def _get(results: dict, *keys, default=None):
  cur = results
  for k in keys:
    if not isinstance(cur, dict) or k not in cur:
      return default
    cur = cur[k]
  return cur


def claims(results: dict) -> list:
  """The paper's claims, each with the measured value and whether it holds (None: not run)."""
  from genviz_jax.report import Claim
  out = []

  def add(key, statement, measured, paper, holds, detail=""):
    out.append(Claim(key, statement, measured, paper,
                     None if measured is None else bool(holds), detail))

  g, b = _get(results, "decision", "good"), _get(results, "decision", "bad")
  add("good_minimum", "A clean run fits the swiss roll and generalizes (100% train, >= 95% test)",
      None if g is None else [g["train_accuracy"], g["test_accuracy"]], [1.0, 1.0],
      g is not None and g["train_accuracy"] >= 0.999 and g["test_accuracy"] >= 0.95,
      "[train, test] accuracy")
  add("bad_minimum", "The poisoned objective finds a minimum that fits the training set but "
      "generalizes badly (>= 99% train, <= 30% test)",
      None if b is None else [b["train_accuracy"], b["test_accuracy"]], [1.0, 0.075],
      b is not None and b["train_accuracy"] >= 0.99 and b["test_accuracy"] <= 0.30,
      "[train, test] accuracy; the paper reached 7-8% test")
  m = results.get("minefield")
  add("minefield", "Bad minima lie all around the good run's path (every bad minimum < 60% test, "
      "final good iterate > 95% test)",
      None if m is None else [m["bad_test_accuracy_max"], m["final_good_test_accuracy"]],
      [0.53, 0.985],
      m is not None and m["bad_test_accuracy_max"] < 0.60 and m["final_good_test_accuracy"] > 0.95,
      "[max test accuracy of the bad minima, final good iterate's test accuracy]" + (
          "" if m is None else f"; bad minima fit >= {100 * m['bad_train_accuracy_min']:.0f}% "
          f"of the training set; poison: {m.get('poison_source', 'fixed')}"))
  o = results.get("optimizers")
  if o is None:
    add("optimizers", "Every optimizer lands in a good minimum", None, None, False)
  else:
    fit = [r for r in o["rows"] if r["train_accuracy"] >= 0.99]
    worst = min((r["test_accuracy"] for r in fit), default=float("nan"))
    unfit = [f"{r['dataset']}/{r['optimizer']}" for r in o["rows"] if r["train_accuracy"] < 0.99]
    add("optimizers", "Optimizers land in good minima: every optimizer that fits the training set "
        "(>= 99% train) reaches >= 90% test", worst, None,
        bool(fit) and worst >= 0.90,
        f"worst test accuracy among {len(fit)} runs that fit; did not fit in their budget: "
        f"{', '.join(unfit) or 'none'}")
  bs = results.get("basin")
  if bs is None:
    add("volume", "Good minima have larger basins (log10 volume good > bad)", None, None, False)
    add("radius", "Good minima have larger basin radii (mean radius good > bad)", None, None, False)
    add("volume_vs_radius", "In high dimension a small radius gap is a huge volume gap", None,
        None, False)
  else:
    vg, vb = bs["good"]["log10_volume"], bs["bad"]["log10_volume"]
    rg, rb = bs["good"]["radius_mean"], bs["bad"]["radius_mean"]
    ci_sep = bs["good"]["log10_volume_ci"][0] > bs["bad"]["log10_volume_ci"][1]
    add("volume", "Good minima have larger basins (log10 volume good > bad)", [vg, vb], None,
        vg > vb, f"[good, bad], {bs['good']['measure']} measure, n = {bs['good']['dim']}; "
        f"intervals {'separate' if ci_sep else 'overlap'}")
    add("radius", "Good minima have larger basin radii (mean radius good > bad)", [rg, rb], None,
        rg > rb, "[good, bad] mean radius along filter-normalized directions")
    ratio = rg / rb if rb > 0 else float("inf")
    add("volume_vs_radius", "In high dimension a small radius gap is a huge volume gap "
        "(Δlog10 V > 10·log10 of the radius ratio)", [ratio, vg - vb], None,
        ratio > 1 and (vg - vb) > 10 * math.log10(ratio),
        "[mean radius ratio good/bad, log10 volume ratio good/bad]")
  s = results.get("sharpness")
  if s is None:
    add("sharpness", "Bad minima are sharper (top Hessian eigenvalue bad > good)", None,
        [300, 4000], False)
  else:
    eg, eb = s["good"]["top_eigenvalue"], s["bad"]["top_eigenvalue"]
    add("sharpness", "Bad minima are sharper (top Hessian eigenvalue bad > good)", [eg, eb],
        [300, 4000], eb > eg, "[good, bad]; the authors' notes: ~300 clean, ~4000 poisoned")
    agree = s.get("ranked_sharper_by")
    if agree is not None:
      add("sharpness_all", "Every sharpness measure ranks the bad minimum as sharper",
          f"{len(agree)}/{len(s['measures'])}", None, len(agree) == len(s["measures"]),
          "measures that rank bad as sharper: " + ", ".join(agree))
  gs = results.get("gap_sweep")
  add("gap_grows", "The generalization gap grows with the poison factor (Spearman ρ >= 0.8)",
      None if gs is None else gs["spearman_gap_vs_poison"], None,
      gs is not None and gs["spearman_gap_vs_poison"] >= 0.8)
  add("gap_vs_volume", "Larger gap goes with smaller basin volume (Spearman ρ(gap, log10 V) < 0)",
      None if gs is None else gs["spearman_gap_vs_log10_volume"], None,
      gs is not None and gs["spearman_gap_vs_log10_volume"] < 0)
  add("gap_vs_sharpness", "Larger gap goes with a larger top Hessian eigenvalue (ρ > 0)",
      None if gs is None else gs["spearman_gap_vs_top_eigenvalue"], None,
      gs is not None and gs["spearman_gap_vs_top_eigenvalue"] > 0)
  c = results.get("circles")
  add("circles", "When the only perfect fit is sharp, the net fails: test accuracy clearly "
      "below the wide-margin case (by >= 5 points)",
      None if c is None else [c["sharp"]["test_accuracy"], c["wide"]["test_accuracy"]], None,
      c is not None and c["sharp"]["test_accuracy"] <= c["wide"]["test_accuracy"] - 0.05,
      "[margin 0.001, wide margin] test accuracy" + (
          "" if c is None else f"; train: {c['sharp']['train_accuracy']:.3f} vs "
          f"{c['wide']['train_accuracy']:.3f}"))
  return out


def _section_texts() -> dict[str, tuple[str, str]]:
  return {
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


def _phase_table(name: str, res: dict):
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


def write_outputs(cfg, workdir: str, results: dict) -> dict[str, str]:
  """Writes paper_summary.json and report.html; returns their paths."""
  from genviz_jax import report
  cl = claims(results)
  summary = {"claims": [c.to_json() for c in cl],
             "claims_hold": sum(c.holds is True for c in cl), "claims_total": len(cl),
             "phase_wall_time_s": {k: v.get("wall_time_s") for k, v in results.items()},
             "results": results}
  summary_path = os.path.join(workdir, "paper_summary.json")
  _write_json(summary_path, summary)
  sections = []
  for name, (title, text) in _section_texts().items():
    res = results.get(name)
    if res is None:
      continue
    figs = res.get("figures") or ([res["figure"]] if "figure" in res else [])
    sections.append(report.Section(
        f"{title} ({res.get('wall_time_s', '?')} s)", text,
        [os.path.join(workdir, f) for f in figs], _phase_table(name, res)))
  intro = ("Huang et al. 2019, \"Understanding Generalization through Visualizations\", reproduced "
           "by genviz_jax on embedded data. Each claim is checked against the numbers measured in "
           "this run; a claim that does not hold is reported as such.")
  report_path = report.write_report(os.path.join(workdir, "report.html"),
                                    "genviz_jax: the paper, reproduced", intro, cl, sections)
  return {"report": report_path, "summary": summary_path}
