"""Fig. 6 of Huang et al. 2019: the generalization gap against the poison factor, basin volume
and sharpness, over an ensemble of swiss-roll nets trained together (genviz_jax.ensemble).

The poison factor f is the authors' share of poison points per train point in one averaged
batch, so the trainer's β (objective (1-β)·L_train + β·L_poison) is f / (1 + f). The factors are
{0} ∪ 0.8·10^linspace(-4, 0, num_factors - 1), as in the authors' sweep.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from genviz_jax import basin
from genviz_jax import boundary
from genviz_jax import data as data_lib
from genviz_jax import ensemble
from genviz_jax import hessian
from genviz_jax import models as models_lib
from genviz_jax.jobs import devices
from genviz_jax.paper import common


def sweep_values(cfg) -> np.ndarray:
  """The poison factors f: 0, then num_factors - 1 values log-spaced from 8e-5 to 0.8."""
  g = cfg.gap_sweep
  vals = [0.0] + list(0.8 * 10 ** np.linspace(-4, 0, int(g.num_factors) - 1))
  return np.asarray(vals, np.float64)


def _train(cfg, g, ds, model, runs):
  """Trains every (factor, seed) run at once; returns (params stacked over runs, betas)."""
  frac = np.array([f for f, _ in runs])
  betas = frac / (1 + frac)
  params = ensemble.init_many(model, [s for _, s in runs], (2,))
  keys = jnp.stack([jax.random.fold_in(jax.random.PRNGKey(s), i) for i, (_, s) in enumerate(runs)])
  steps = int(g.steps)
  tx = common.adam_tx(float(g.learning_rate), (int(steps * 0.6), int(steps * 0.8)), clip=8.0)
  params, _ = ensemble.train_many(model, tx, params, ds.train, num_steps=steps, betas=betas,
                                  poison_sampler=ds.poison_sampler, keys=keys,
                                  chunk=int(g.chunk),
                                  on_chunk=common.progress_hook("gap sweep", steps))
  return params, betas


def _measures(cfg, g, model, params, train_j, num_runs: int) -> dict:
  """Per run: basin log10 volume, mean radius, censored count, top Hessian eigenvalue."""
  metric_fn = models_lib.metric_fn(model)
  mesh = devices.point_mesh_for(cfg)
  out = {"log10_volume": [], "radius_mean": [], "num_censored": [], "top_eigenvalue": []}
  tick = common.progress_hook("gap sweep measures", num_runs, "runs")
  for i in range(num_runs):
    p = jax.tree.map(lambda a: a[i], params)
    r = basin.radii(metric_fn, p, basin.RandomDirections(jax.random.PRNGKey(int(g.basin_seed)),
                                                        int(g.num_directions)),
                    threshold=float(cfg.basin.threshold), data=train_j,
                    r_max=float(cfg.basin.r_max), mesh=mesh)
    out["log10_volume"].append(r.volume(num_bootstrap=0).log10_volume)
    out["radius_mean"].append(float(np.mean(r.radius)))
    out["num_censored"].append(r.num_censored)
    op = hessian.HessianOperator(lambda q, b: metric_fn(q, b)["loss"], p, train_j)
    out["top_eigenvalue"].append(
        float(hessian.top_eigenpairs(op, 1, num_steps=int(g.lanczos_steps)).eigenvalues[0]))
    tick(i + 1)
  return out


def phase_gap_sweep(cfg, workdir: str) -> dict:
  """Fig. 6: generalization gap against the poison factor, basin volume and sharpness."""
  from genviz_jax.plots import paper as paper_plots
  g = cfg.gap_sweep
  ds = data_lib.swiss_roll()
  model = models_lib.MLP(tuple(g.widths), 2)
  seeds = [int(cfg.seed) + s for s in range(int(g.num_seeds))]
  runs = [(f, s) for s in seeds for f in sweep_values(cfg)]
  frac = np.array([f for f, _ in runs])
  params, betas = _train(cfg, g, ds, model, runs)
  train_acc = ensemble.evaluate_many(model, params, ds.train)["accuracy"]
  test_acc = ensemble.evaluate_many(model, params, ds.test)["accuracy"]
  gap = train_acc - test_acc
  train_j = {k: jnp.asarray(v) for k, v in ds.train.items()}
  m = _measures(cfg, g, model, params, train_j, len(runs))
  extent = boundary.data_extent(ds)
  grids = boundary.predictions(boundary.flax_logits(model), params, extent, 120, stacked=True)
  figs = [paper_plots.gap_grid(grids, extent, boundary.splits_of(ds, show_poison=False), gap,
                               frac, train_acc, test_acc),
          paper_plots.gap_scatter(gap, frac, np.array(m["log10_volume"]),
                                  np.array(m["top_eigenvalue"]))]
  paths = [common.save(figs[0], common.figure_path(workdir, "fig6_gap_grid.png")),
           common.save(figs[1], common.figure_path(workdir, "fig6_gap_vs_measures.png"))]
  return {
      "poison_fractions": frac.tolist(), "seeds": [s for _, s in runs], "betas": betas.tolist(),
      "train_accuracy": train_acc.tolist(), "test_accuracy": test_acc.tolist(),
      "gap": gap.tolist(), **m, "steps": int(g.steps),
      "spearman_gap_vs_poison": common.spearman(frac, gap),
      "spearman_gap_vs_log10_volume": common.spearman(gap, m["log10_volume"]),
      "spearman_gap_vs_radius": common.spearman(gap, m["radius_mean"]),
      "spearman_gap_vs_top_eigenvalue": common.spearman(gap, m["top_eigenvalue"]),
      "figures": [common.rel(workdir, p) for p in paths]}
