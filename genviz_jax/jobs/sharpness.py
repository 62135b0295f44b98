"""Every flatness number of a trained workdir, side by side: Hessian spectrum, PAC-Bayes, ε-sharpness.

`compute(config, workdir)` reads the workdir (genviz_jax.workdir.load) and writes
WORKDIR/<config.out_subdir>/:
  sharpness.json         every measure with its uncertainty and settings ("measures": name ->
                         value, larger = sharper, for comparison between workdirs)
  slq.npz                SLQ nodes and weights (read by config.compare of another run)
  eigen_vs_random.png    loss along the top eigenvectors | along random filter-normalized dirs
  spectral_density.png   this run's density (+ those of config.compare)
  boundary_animation.gif 2-D inputs: decision boundary along v1 and along a random direction
Measures: the Hessian's top eigenvalues (Lanczos), its trace (Hutchinson) and spectral density
(SLQ); PAC-Bayes σ' and the flatness bounds of Jiang et al. 2019 ("Fantastic Generalization
Measures"); ε-sharpness of Keskar et al. 2017. Config keys: genviz_jax/configs/sharpness.py.
"""

from __future__ import annotations

import contextlib
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from genviz_jax import files
from genviz_jax import hessian
from genviz_jax import progress
from genviz_jax import sharpness
from genviz_jax import trees
from genviz_jax import workdir as workdir_lib
from genviz_jax.jobs import devices
from genviz_jax.jobs import sharpness_figures
from genviz_jax.jobs.sharpness_config import validate_config

OUTPUT = "sharpness.json"
MEASURES_NOTE = ("larger = sharper for every entry; pacbayes.* from Jiang et al. 2019 "
                 "(unadjusted for m), eps_sharpness.* from Keskar et al. 2017 (ratio, not percent)")


class _Stages:
  """Wall time per stage, logged as it starts."""

  def __init__(self):
    self.timings = {}

  @contextlib.contextmanager
  def __call__(self, name: str):
    logging.info("sharpness: %s", name)
    t0 = time.time()
    yield
    self.timings[name] = round(time.time() - t0, 3)


def _hessian(h, metric_fn, params, data, data_batch, keys, out_dir, mesh):
  op = hessian.HessianOperator(metric_fn, params, data, data_batch=data_batch, mesh=mesh)
  eig = hessian.top_eigenpairs(op, k=h.top_k, num_steps=h.lanczos_steps or None, key=keys[0])
  logging.info("top eigenvalues %s (residuals %s)", eig.eigenvalues, eig.residuals)
  tr = hessian.hutchinson_trace(op, h.trace_samples, key=keys[1], confidence=h.trace_confidence)
  logging.info("trace %.6g [%.6g, %.6g]", tr.trace, *tr.ci)
  dens = hessian.slq(op, h.slq_runs, h.slq_steps, key=keys[2])
  np.savez(os.path.join(out_dir, "slq.npz"), nodes=dens.nodes, weights=dens.weights, dim=dens.dim)
  result = {
      "top_eigenvalues": eig.eigenvalues.tolist(),
      "top_eigenvalue_residuals": eig.residuals.tolist(),
      "lanczos_steps": eig.num_steps, "lanczos_restarts": eig.num_restarts,
      "smallest_ritz_value": eig.smallest,
      "trace": {"estimate": tr.trace, "stderr": tr.stderr, "ci": list(tr.ci),
                "confidence": tr.confidence, "num_samples": tr.num_samples},
      "slq": {"num_runs": h.slq_runs, "num_steps": h.slq_steps, "trace_estimate": dens.trace,
              "node_range": [float(dens.nodes.min()), float(dens.nodes.max())]},
  }
  return eig, tr, dens, result


def _init_params(t):
  """The run's initial parameters, re-created from its config (for the .init measures)."""
  try:
    from genviz_jax import train as train_lib
    tx = train_lib.make_optimizer(t.config)
    return (train_lib.init_state(t.config, t.model, t.dataset, tx)["params"],
            "re-created from config.seed (train.init_state)")
  except Exception as e:  # noqa: BLE001 - the .init measures are optional
    return None, f"unavailable ({type(e).__name__}: {e}); .init measures skipped"


def _pacbayes(p, t, metric_fn, params, data, data_batch, keys, mesh):
  sig = {}
  for name, eps, k in (("sigma", None, keys[0]), ("mag_sigma", p.magnitude_eps, keys[1])):
    prog = progress.Progress(f"pacbayes {name} evaluations", p.num_bisection + 3, unit="σ",
                             every_s=10.0)
    sig[name] = sharpness.flatness_sigma(
        metric_fn, params, data, target=p.target, sigma_min=p.sigma_min,
        sigma_max=p.sigma_max, num_bisection=p.num_bisection, num_samples=p.num_samples,
        magnitude_eps=eps, mag_noise=p.mag_noise, ignore_1d=p.ignore_1d, key=k,
        point_batch=p.point_batch, data_batch=data_batch,
        progress=lambda d, n, prog=prog: prog.update(d), mesh=mesh)
    logging.info("%s = %.4g (bracket %s, censored %r)", name, sig[name].sigma,
                 sig[name].bracket, sig[name].censored)
  init_params, init_note = _init_params(t)
  num_examples = int(data["y"].shape[0])
  bounds = sharpness.pacbayes_measures(
      params, num_examples, sigma=sig["sigma"].sigma, mag_sigma=sig["mag_sigma"].sigma,
      init_params=init_params, magnitude_eps=p.magnitude_eps)
  result = {"sigma": sig["sigma"].as_dict(), "mag_sigma": sig["mag_sigma"].as_dict(),
            "measures": bounds, "init_params": init_note, "num_examples": num_examples}
  return bounds, result


def _eps_sharpness(e, metric_fn, params, data, data_batch, key, mesh) -> list[dict]:
  out = []
  for eps in e.epsilons:
    r = sharpness.eps_sharpness(metric_fn, params, data, epsilon=float(eps),
                                num_steps=e.num_steps, num_random_starts=e.random_starts,
                                key=key, data_batch=data_batch, mesh=mesh)
    logging.info("eps-sharpness(%g) = %.4g", eps, r.sharpness)
    out.append(r.as_dict())
  return out


def _load(config, workdir: str):
  validate_config(config)
  if not workdir:
    raise ValueError("--workdir is required: a trained workdir (experiments.train)")
  if not os.path.isdir(workdir):
    raise ValueError(f"workdir={workdir!r} does not exist")
  t = workdir_lib.load(workdir, step=None if config.step < 0 else config.step)
  num_params = trees.num_params(t.params)
  validate_config(config, num_params)
  return t, num_params


def _measure(config, t, out_dir: str, stages: _Stages) -> dict:
  """Every measure, in float64 when config.x64; returns the summary's computed parts."""
  dtype = jnp.float64 if config.x64 else jnp.float32
  params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), t.params)
  split = getattr(t.dataset, config.split)
  data = {"x": jnp.asarray(split["x"], dtype), "y": jnp.asarray(split["y"])}
  metric_fn, data_batch = t.metric_fn, config.data_batch or None
  mesh = devices.point_mesh_for(config)
  k_eig, k_tr, k_slq, k_pb, k_mag, k_eps, k_dir = jax.random.split(
      jax.random.PRNGKey(config.seed), 7)
  centre = {k: float(v) for k, v in jax.jit(metric_fn)(params, data).items()}
  with stages("hessian"):
    eig, tr, dens, h_res = _hessian(config.hessian, metric_fn, params, data, data_batch,
                                    (k_eig, k_tr, k_slq), out_dir, mesh)
  with stages("pacbayes"):
    bounds, pb_res = _pacbayes(config.pacbayes, t, metric_fn, params, data, data_batch,
                               (k_pb, k_mag), mesh)
  with stages("eps_sharpness"):
    eps_res = _eps_sharpness(config.eps_sharpness, metric_fn, params, data, data_batch, k_eps,
                             mesh)
  measures = {"hessian.top_eigenvalue": float(eig.eigenvalues[0]), "hessian.trace": tr.trace,
              **bounds, **{f"eps_sharpness.{r['epsilon']:g}": r["sharpness"] for r in eps_res}}
  figures = []
  if config.figures.enabled:
    with stages("figures"):
      figures = sharpness_figures.write_all(config, t, params, data, metric_fn, eig, dens,
                                            out_dir, k_dir, data_batch, mesh)
  return {"num_examples": int(data["y"].shape[0]), "centre": centre, "measures": measures,
          "hessian": h_res, "pacbayes": pb_res, "eps_sharpness": eps_res, "figures": figures}


def compute(config, workdir: str) -> dict:
  """Runs every measure on `workdir` and writes the outputs; returns the sharpness.json dict."""
  t, num_params = _load(config, workdir)
  out_dir = os.path.join(workdir, config.out_subdir)
  os.makedirs(out_dir, exist_ok=True)
  stages = _Stages()
  with contextlib.ExitStack() as stack:
    if config.x64:
      stack.enter_context(jax.enable_x64(True))
    m = _measure(config, t, out_dir, stages)
  summary = {
      "workdir": os.path.abspath(workdir), "step": t.step, "num_params": num_params,
      "split": config.split, "num_examples": m["num_examples"],
      "dtype": "float64" if config.x64 else "float32", "centre": m["centre"],
      "measures": m["measures"], "measures_note": MEASURES_NOTE,
      "hessian": m["hessian"], "pacbayes": m["pacbayes"], "eps_sharpness": m["eps_sharpness"],
      "figures": m["figures"], "wall_time_s": stages.timings, "settings": config.to_dict(),
  }
  files.write_json_atomic(os.path.join(out_dir, OUTPUT), summary)
  return summary
