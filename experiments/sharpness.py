"""Every flatness number of a trained workdir, side by side: Hessian spectrum, PAC-Bayes, ε-sharpness.

  python -m experiments.sharpness --workdir=runs/swissroll_poisoned
  python -m experiments.sharpness --workdir=runs/swissroll_clean \
      --config.compare='("runs/swissroll_poisoned",)'

Reads the workdir (genviz_jax.workdir.load), writes WORKDIR/sharpness/ (config.out_subdir):
  sharpness.json         every measure with its uncertainty and settings ("measures": name ->
                         value, larger = sharper, for quick comparison between workdirs)
  slq.npz                SLQ nodes and weights (reused by --config.compare of another run)
  eigen_vs_random.png    loss along the top eigenvectors | along random filter-normalized dirs
  spectral_density.png   this run's density (+ those of config.compare)
  boundary_animation.gif 2-D inputs: decision boundary along v1 and along a random direction
Config: experiments/configs/sharpness.py (the default). Bad flags, configs or workdirs (k larger
than the parameter count, non-positive σ range, non-finite HVP, missing workdir): one line
`error: ...`, exit status 2, nothing written.
"""

from __future__ import annotations

import contextlib
import os
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from experiments import common

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs",
                               "sharpness.py")
FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines the flags; only when run as a binary, so other code can import compute()."""
  config_flags.DEFINE_config_file("config", _DEFAULT_CONFIG,
                                  "Sharpness config (experiments/configs/sharpness.py[:quick]).",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "A trained workdir (experiments.train).")

OUTPUT = "sharpness.json"


# ------------------------------------------------------------------------------ validation

def _int(name, v, lo, hi=None):
  if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
    allowed = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
    raise ValueError(f"{name}={v!r} must be {allowed}")
  return v


def _pos(name, v):
  if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < float("inf"):
    raise ValueError(f"{name}={v!r} must be a finite number > 0")
  return float(v)


def validate_config(c, num_params: int | None = None) -> None:
  """Raises ValueError (one line, naming the bad value) for a config the binary cannot run."""
  sub = c.out_subdir
  if not isinstance(sub, str) or not sub or sub in (".", "..") or os.sep in sub or "/" in sub:
    raise ValueError(f"out_subdir={sub!r} must be a plain folder name inside the workdir")
  if c.split not in ("train", "test"):
    raise ValueError(f"split={c.split!r} is not one of 'train', 'test'")
  _int("step", c.step, -1)
  _int("data_batch", c.data_batch, 0)
  h = c.hessian
  _int("hessian.top_k", h.top_k, 1, num_params)
  if h.lanczos_steps and num_params is not None:  # after top_k has been checked against n
    _int("hessian.lanczos_steps", h.lanczos_steps, h.top_k, num_params)
  _int("hessian.trace_samples", h.trace_samples, 2)
  if not 0 < h.trace_confidence < 1:
    raise ValueError(f"hessian.trace_confidence={h.trace_confidence!r} must be in (0, 1)")
  _int("hessian.slq_runs", h.slq_runs, 1)
  _int("hessian.slq_steps", h.slq_steps, 1, num_params)
  p = c.pacbayes
  _pos("pacbayes.target", p.target)
  lo, hi = p.sigma_min, p.sigma_max
  _pos("pacbayes.sigma_min", lo)
  _pos("pacbayes.sigma_max", hi)
  if not lo < hi:
    raise ValueError(f"pacbayes sigma range [{lo!r}, {hi!r}] is empty; need 0 < sigma_min < "
                     "sigma_max")
  _int("pacbayes.num_bisection", p.num_bisection, 0)
  _int("pacbayes.num_samples", p.num_samples, 2)
  _int("pacbayes.point_batch", p.point_batch, 1)
  _pos("pacbayes.magnitude_eps", p.magnitude_eps)
  if p.mag_noise not in ("variance", "std"):
    raise ValueError(f"pacbayes.mag_noise={p.mag_noise!r} is not one of 'variance', 'std'")
  e = c.eps_sharpness
  if not e.epsilons:
    raise ValueError("eps_sharpness.epsilons=() is empty; give at least one ε > 0")
  for eps in e.epsilons:
    _pos("eps_sharpness.epsilons entry", eps)
  _int("eps_sharpness.num_steps", e.num_steps, 1)
  _int("eps_sharpness.random_starts", e.random_starts, 0)
  f = c.figures
  _int("figures.num_random", f.num_random, 1)
  _int("figures.num_alphas", f.num_alphas, 2)
  _pos("figures.alpha_max", f.alpha_max)
  _int("figures.anim_frames", f.anim_frames, 2)
  _pos("figures.anim_alpha_max", f.anim_alpha_max)
  _int("figures.anim_resolution", f.anim_resolution, 2)
  for other in c.compare:
    if not os.path.isfile(os.path.join(other, sub, "slq.npz")):
      raise ValueError(f"compare entry {other!r} has no {sub}/slq.npz; run experiments.sharpness "
                       "on it first")


# ------------------------------------------------------------------------------ the run

def compute(config, workdir: str) -> dict:
  """Runs every measure on `workdir` and writes the outputs; returns the sharpness.json dict."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from jax.flatten_util import ravel_pytree

  from genviz_jax import hessian
  from genviz_jax import sharpness
  from genviz_jax import workdir as workdir_lib

  validate_config(config)
  if not workdir:
    raise ValueError("--workdir is required: a trained workdir (experiments.train)")
  if not os.path.isdir(workdir):
    raise ValueError(f"workdir={workdir!r} does not exist")
  t = workdir_lib.load(workdir, step=None if config.step < 0 else config.step)
  num_params = int(ravel_pytree(t.params)[0].size)
  validate_config(config, num_params)
  out_dir = os.path.join(workdir, config.out_subdir)
  os.makedirs(out_dir, exist_ok=True)

  with contextlib.ExitStack() as stack:
    if config.x64:
      stack.enter_context(jax.enable_x64(True))
    dtype = jnp.float64 if config.x64 else jnp.float32
    cast = lambda tree: jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), tree)
    params = cast(t.params)
    split = getattr(t.dataset, config.split)
    data = {"x": jnp.asarray(split["x"], dtype), "y": jnp.asarray(split["y"])}
    metric_fn = t.metric_fn
    data_batch = config.data_batch or None
    key = jax.random.PRNGKey(config.seed)
    k_eig, k_tr, k_slq, k_pb, k_mag, k_eps, k_dir = jax.random.split(key, 7)
    timings, result = {}, {}

    def stage(name):
      timings[name] = time.time()
      logging.info("sharpness: %s", name)

    def done(name):
      timings[name] = round(time.time() - timings[name], 3)

    centre = {k: float(v) for k, v in jax.jit(metric_fn)(params, data).items()}

    # Hessian ------------------------------------------------------------------------------
    h = config.hessian
    stage("hessian")
    op = hessian.HessianOperator(metric_fn, params, data, data_batch=data_batch)
    eig = hessian.top_eigenpairs(op, k=h.top_k, num_steps=h.lanczos_steps or None, key=k_eig)
    logging.info("top eigenvalues %s (residuals %s)", eig.eigenvalues, eig.residuals)
    tr = hessian.hutchinson_trace(op, h.trace_samples, key=k_tr, confidence=h.trace_confidence)
    logging.info("trace %.6g [%.6g, %.6g]", tr.trace, *tr.ci)
    dens = hessian.slq(op, h.slq_runs, h.slq_steps, key=k_slq)
    np.savez(os.path.join(out_dir, "slq.npz"), nodes=dens.nodes, weights=dens.weights,
             dim=dens.dim)
    done("hessian")
    result["hessian"] = {
        "top_eigenvalues": eig.eigenvalues.tolist(),
        "top_eigenvalue_residuals": eig.residuals.tolist(),
        "lanczos_steps": eig.num_steps, "lanczos_restarts": eig.num_restarts,
        "smallest_ritz_value": eig.smallest,
        "trace": {"estimate": tr.trace, "stderr": tr.stderr, "ci": list(tr.ci),
                  "confidence": tr.confidence, "num_samples": tr.num_samples},
        "slq": {"num_runs": h.slq_runs, "num_steps": h.slq_steps, "trace_estimate": dens.trace,
                "node_range": [float(dens.nodes.min()), float(dens.nodes.max())]},
    }

    # PAC-Bayes ----------------------------------------------------------------------------
    p = config.pacbayes
    stage("pacbayes")
    sig = {}
    for name, eps, k in (("sigma", None, k_pb), ("mag_sigma", p.magnitude_eps, k_mag)):
      prog = common.Progress(f"pacbayes {name} evaluations", p.num_bisection + 3, unit="σ",
                             every_s=10.0)
      sig[name] = sharpness.flatness_sigma(
          metric_fn, params, data, target=p.target, sigma_min=p.sigma_min,
          sigma_max=p.sigma_max, num_bisection=p.num_bisection, num_samples=p.num_samples,
          magnitude_eps=eps, mag_noise=p.mag_noise, ignore_1d=p.ignore_1d, key=k,
          point_batch=p.point_batch, data_batch=data_batch,
          progress=lambda d, n, prog=prog: prog.update(d))
      logging.info("%s = %.4g (bracket %s, censored %r)", name, sig[name].sigma,
                   sig[name].bracket, sig[name].censored)
    init_params, init_note = None, ""
    try:
      from genviz_jax import train as train_lib
      tx = train_lib.make_optimizer(t.config)
      init_params = train_lib.init_state(t.config, t.model, t.dataset, tx)["params"]
      init_note = "re-created from config.seed (train.init_state)"
    except Exception as e:  # noqa: BLE001 - the .init measures are optional
      init_note = f"unavailable ({type(e).__name__}: {e}); .init measures skipped"
    bounds = sharpness.pacbayes_measures(
        params, int(data["y"].shape[0]), sigma=sig["sigma"].sigma,
        mag_sigma=sig["mag_sigma"].sigma, init_params=init_params,
        magnitude_eps=p.magnitude_eps)
    done("pacbayes")
    result["pacbayes"] = {"sigma": sig["sigma"].as_dict(), "mag_sigma": sig["mag_sigma"].as_dict(),
                          "measures": bounds, "init_params": init_note,
                          "num_examples": int(data["y"].shape[0])}

    # ε-sharpness --------------------------------------------------------------------------
    e = config.eps_sharpness
    stage("eps_sharpness")
    eps_res = []
    for eps in e.epsilons:
      r = sharpness.eps_sharpness(metric_fn, params, data, epsilon=float(eps),
                                  num_steps=e.num_steps, num_random_starts=e.random_starts,
                                  key=k_eps, data_batch=data_batch)
      logging.info("eps-sharpness(%g) = %.4g", eps, r.sharpness)
      eps_res.append(r.as_dict())
    done("eps_sharpness")
    result["eps_sharpness"] = eps_res

    measures = {"hessian.top_eigenvalue": float(eig.eigenvalues[0]),
                "hessian.trace": tr.trace, **bounds}
    for r in eps_res:
      measures[f"eps_sharpness.{r['epsilon']:g}"] = r["sharpness"]

    # Figures ------------------------------------------------------------------------------
    f = config.figures
    figures = []
    if f.enabled:
      stage("figures")
      figures = _figures(config, t, params, data, metric_fn, eig, dens, out_dir, k_dir,
                         data_batch)
      done("figures")

  summary = {
      "workdir": os.path.abspath(workdir), "step": t.step, "num_params": num_params,
      "split": config.split, "num_examples": int(data["y"].shape[0]),
      "dtype": "float64" if config.x64 else "float32", "centre": centre,
      "measures": measures,
      "measures_note": "larger = sharper for every entry; pacbayes.* from Jiang et al. 2019 "
                       "(unadjusted for m), eps_sharpness.* from Keskar et al. 2017 "
                       "(ratio, not percent)",
      **result, "figures": figures, "wall_time_s": timings,
      "settings": config.to_dict(),
  }
  common.write_json_atomic(os.path.join(out_dir, OUTPUT), summary)
  return summary


def _figures(config, t, params, data, metric_fn, eig, dens, out_dir, key, data_batch):
  import jax
  import jax.numpy as jnp
  import matplotlib.pyplot as plt
  import numpy as np

  from genviz_jax import directions as directions_lib
  from genviz_jax import hessian
  from genviz_jax import landscape
  from genviz_jax.plots import decision
  from genviz_jax.plots import sharpness as sharp_plots

  f = config.figures
  written = []
  rand = directions_lib.random_directions(key, params, f.num_random)
  rand_list = [jax.tree_util.tree_map(lambda a, i=i: a[i], rand) for i in range(f.num_random)]
  norms = [float(jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(d))))
           for d in rand_list]
  scale = float(np.mean(norms))
  # A unit eigenvector and a filter-normalized direction differ in length by ~||θ||: compare
  # them at equal length.
  eig_dirs = [eig_unravel(params, v * scale) for v in eig.eigenvectors]
  alphas = np.linspace(-f.alpha_max, f.alpha_max, f.num_alphas)
  dirs = eig_dirs + rand_list
  d = len(dirs)
  coords = np.zeros((d * len(alphas), d))
  for i in range(d):
    coords[i * len(alphas):(i + 1) * len(alphas), i] = alphas
  losses = landscape.surface(metric_fn, params, dirs, coords, data=data,
                             data_batch=data_batch)["loss"].reshape(d, len(alphas))
  eig_losses = {f"v{i + 1} (λ={lam:.4g})": losses[i] for i, lam in enumerate(eig.eigenvalues)}
  fig = sharp_plots.eigen_vs_random_figure(
      alphas, eig_losses, losses[len(eig_dirs):],
      title=f"{os.path.basename(os.path.normpath(t.workdir))}: {config.split} loss")
  path = os.path.join(out_dir, "eigen_vs_random.png")
  fig.savefig(path, dpi=120)
  plt.close(fig)
  written.append(os.path.basename(path))
  np.savez(os.path.join(out_dir, "eigen_vs_random.npz"), alphas=alphas, losses=losses,
           num_eigen=len(eig_dirs), scale=scale)

  label = os.path.basename(os.path.normpath(t.workdir))
  curves = {label: hessian.spectral_density(dens)}
  for other in config.compare:
    z = np.load(os.path.join(other, config.out_subdir, "slq.npz"))
    curves[os.path.basename(os.path.normpath(other))] = hessian.spectral_density(
        hessian.SLQ(z["nodes"], z["weights"], int(z["dim"])))
  fig = sharp_plots.spectral_density_figure(curves)
  path = os.path.join(out_dir, "spectral_density.png")
  fig.savefig(path, dpi=120)
  plt.close(fig)
  written.append(os.path.basename(path))

  if f.animation and tuple(t.dataset.input_shape) == (2,):
    extent = decision.data_extent(t.dataset)
    state = t.model_state
    logits_fn = lambda p, x: t.model.apply({"params": p, **state}, x.astype(
        jax.tree_util.tree_leaves(p)[0].dtype), train=False)
    a = np.linspace(-f.anim_alpha_max, f.anim_alpha_max, f.anim_frames)
    frames = sharp_plots.boundary_frames(
        logits_fn, params, {f"top eigenvector (λ={eig.eigenvalues[0]:.4g})": eig_dirs[0],
                            "random filter-normalized direction": rand_list[0]},
        a, extent, resolution=f.anim_resolution)
    path = os.path.join(out_dir, "boundary_animation.gif")
    sharp_plots.save_boundary_animation(path, frames, a, extent,
                                        (np.asarray(data["x"]), np.asarray(data["y"])),
                                        title=label)
    written.append(os.path.basename(path))
  return written


def eig_unravel(params, flat_vector):
  from jax.flatten_util import ravel_pytree
  return ravel_pytree(params)[1](flat_vector)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")

  def run():
    s = compute(FLAGS.config, FLAGS.workdir)
    print(" ".join(f"{k}={v:.6g}" for k, v in s["measures"].items()))

  common.run_guarded(run)


if __name__ == "__main__":
  define_flags()
  app.run(main)
