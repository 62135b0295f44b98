"""The paper's phases that train networks and compare their fits (Huang et al. 2019).

decision (Figs 2-3): a clean and a poisoned swiss-roll run, their decision boundaries.
minefield (Fig. 1): iterates of a good run and bad minima trained from them, embedded by t-SNE.
circles (Fig. 8): concentric circles whose only perfect fit is sharp, against a wide margin.
optimizers (Table 1 analogue): every optimizer on clean data lands in a good minimum.
Each phase returns a JSON-ready dict of numbers and relative figure paths.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from genviz_jax import boundary
from genviz_jax import data as data_lib
from genviz_jax import ensemble
from genviz_jax import models as models_lib
from genviz_jax.configs import digits as digits_cfg
from genviz_jax.jobs import train as train_job
from genviz_jax.paper import common

SUMMARY_KEYS = ("train_accuracy", "test_accuracy", "train_loss", "test_loss", "poison_factor",
                "steps", "wall_time_s", "num_params")


def phase_decision(cfg, workdir: str) -> dict:
  """Figs 2-3: a good (clean) and a bad (poisoned) swiss-roll minimum, decision boundaries."""
  from genviz_jax import workdir as wd_lib
  from genviz_jax.plots import decision
  out = {}
  for name, variant in (("good", "clean"), ("bad", "poisoned")):
    run_dir = os.path.join(workdir, "runs", name)
    summary = train_job.run(common.swissroll_config(cfg, variant), run_dir)
    out[name] = {k: summary[k] for k in SUMMARY_KEYS}
  good, bad = (wd_lib.load(os.path.join(workdir, "runs", n)) for n in ("good", "bad"))
  fig = decision.good_vs_bad_figure([boundary.trained_panel(good, "good minimum"),
                                     boundary.trained_panel(bad, "bad minimum")])
  path = common.save(fig, common.figure_path(workdir, "fig2_decision_boundaries.png"))
  out["figure"] = common.rel(workdir, path)
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


def _kernels(p) -> np.ndarray:
  """(S, total kernel size): every "kernel" leaf of a stacked parameter tree, flattened."""
  return np.concatenate(
      [np.asarray(v).reshape(np.asarray(v).shape[0], -1) for path, v in
       jax.tree_util.tree_flatten_with_path(p)[0] if "kernel" in jax.tree_util.keystr(path)], 1)


def _bad_minima(cfg, m, ds, model, tx, good, num_iterates: int):
  """Bad minima trained from every `start_every`-th iterate on train ∪ poison (flipped labels).

  One mean over both sets, i.e. β = |D_p| / (|D_t| + |D_p|). poison_source "fixed" is the
  authors' one 134-point set; "sampler" draws a fresh 134-point sample every step (what makes
  the Fig. 2 minimum bad). Measured (3000 steps): fixed 51-64% test, fresh 39-44%.
  """
  starts = np.arange(0, num_iterates, int(m.start_every))[-int(m.num_bad):]
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
                               on_chunk=common.progress_hook("minefield bad minima",
                                                             int(m.bad_steps)))
  return bad, starts, beta


def phase_minefield(cfg, workdir: str) -> dict:
  """Fig. 1: iterates of a good run and bad minima trained from them, embedded with t-SNE."""
  from genviz_jax.plots import paper as paper_plots
  m = cfg.minefield
  ds = data_lib.swiss_roll(seed=int(m.data_seed), num_train=int(m.num_train),
                           num_test=int(m.num_test), num_poison=int(m.num_poison), noise=0.0)
  model = models_lib.MLP(tuple(m.widths), 2)
  tx = common.adam_tx(float(m.learning_rate))
  p0 = ensemble.init_many(model, [int(cfg.seed)], (2,))
  _, snaps = ensemble.train_many(model, tx, p0, ds.train, num_steps=int(m.good_steps),
                                 snapshot_every=int(m.snapshot_every),
                                 on_chunk=common.progress_hook("minefield good run",
                                                               int(m.good_steps)))
  steps = np.array([s for s, _ in snaps])
  good = jax.tree.map(lambda *a: np.concatenate(a), *[p for _, p in snaps])  # (S, ...)
  bad, starts, beta = _bad_minima(cfg, m, ds, model, tx, good, len(steps))
  acc = lambda p, split: ensemble.evaluate_many(model, p, getattr(ds, split))["accuracy"]
  good_test, good_train = acc(good, "test"), acc(good, "train")
  bad_test, bad_train = acc(bad, "test"), acc(bad, "train")
  emb = _tsne(np.concatenate([_kernels(good), _kernels(bad)]), int(cfg.seed),
              float(m.perplexity))
  fig = paper_plots.minefield(emb[:len(steps)], good_test, emb[len(steps):], bad_test)
  path = common.save(fig, common.figure_path(workdir, "fig1_minefield.png"))
  return {"num_iterates": int(len(steps)), "num_bad_minima": int(len(starts)),
          "beta_bad": beta, "poison_source": m.poison_source,
          "final_good_test_accuracy": float(good_test[-1]),
          "final_good_train_accuracy": float(good_train[-1]),
          "bad_test_accuracy_max": float(bad_test.max()),
          "bad_test_accuracy_mean": float(bad_test.mean()),
          "bad_train_accuracy_min": float(bad_train.min()), "figure": common.rel(workdir, path)}


def phase_circles(cfg, workdir: str) -> dict:
  """Fig. 8: concentric circles whose only perfect fit is sharp (margin 0.001) vs a wide margin."""
  from genviz_jax.plots import paper as paper_plots
  c = cfg.circles
  model = models_lib.MLP(tuple(c.widths), 2)
  tx = common.adam_tx(float(c.learning_rate))
  out, panels = {}, []
  for name, margin in (("sharp", float(c.margin)), ("wide", float(c.wide_margin))):
    ds = data_lib.circles(seed=int(cfg.seed), margin=margin)
    p, _ = ensemble.train_many(model, tx, ensemble.init_many(model, [int(cfg.seed)], (2,)),
                               ds.train, num_steps=int(c.steps), chunk=max(1, int(c.steps) // 10),
                               on_chunk=common.progress_hook(f"circles ({name})", int(c.steps)))
    tr = float(ensemble.evaluate_many(model, p, ds.train)["accuracy"][0])
    te = float(ensemble.evaluate_many(model, p, ds.test)["accuracy"][0])
    out[name] = {"margin": margin, "train_accuracy": tr, "test_accuracy": te}
    panels.append(boundary.panel(
        boundary.flax_logits(model), jax.tree.map(lambda a: a[0], p), ds,
        f"margin {margin:g}: train {100 * tr:.1f}%, test {100 * te:.1f}%", resolution=120))
  path = common.save(paper_plots.decision_panels(panels),
                     common.figure_path(workdir, "fig8_circles.png"))
  out["figure"] = common.rel(workdir, path)
  return out


def _optimizer_config(cfg, o, dname: str, opt: str) -> ml_collections.ConfigDict:
  """The training config of one (dataset, optimizer) cell of the comparison."""
  if dname == "swissroll":
    c = common.swissroll_config(cfg, "clean")
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
  return c


def phase_optimizers(cfg, workdir: str) -> dict:
  """Table 1 analogue: every optimizer, clean data, lands in a good minimum."""
  from genviz_jax.plots import paper as paper_plots
  o = cfg.optimizers
  rows = []
  todo = [(d, opt) for d in common.comma_list(o.datasets) for opt in common.comma_list(o.names)]
  tick = common.progress_hook("optimizer comparison", len(todo), "runs")
  for i, (dname, opt) in enumerate(todo):
    c = _optimizer_config(cfg, o, dname, opt)
    s = train_job.run(c, os.path.join(workdir, "runs", f"opt_{dname}_{opt}"))
    rows.append({"dataset": dname, "optimizer": opt, "train_accuracy": s["train_accuracy"],
                 "test_accuracy": s["test_accuracy"], "steps": s["steps"],
                 "learning_rate": c.learning_rate})
    tick(i + 1)
  path = common.save(paper_plots.optimizer_bars(rows),
                     common.figure_path(workdir, "table1_optimizers.png"))
  return {"rows": rows, "figure": common.rel(workdir, path)}
