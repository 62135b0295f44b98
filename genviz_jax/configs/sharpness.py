"""Sharpness and curvature of a trained workdir: Hessian spectrum, PAC-Bayes σ', ε-sharpness.

  python -m experiments.sharpness --workdir=runs/swissroll_poisoned
  python -m experiments.sharpness --workdir=runs/swissroll_clean \
      --config=experiments/configs/sharpness.py --config.compare='("runs/swissroll_poisoned",)'
  python -m experiments.sharpness --workdir=DIR --config=experiments/configs/sharpness.py:quick

Writes WORKDIR/sharpness/ (config.out_subdir): sharpness.json (every measure, its uncertainty and
its settings), slq.npz, eigen_vs_random.png, spectral_density.png and, for 2-D inputs,
boundary_animation.gif. Trainer files in WORKDIR are only read.

Expected on the swiss roll (2-core CPU, ~1-2 min per workdir): every measure larger (sharper) on
the poisoned minimum; see BUILD_NOTES.md for measured numbers.
"""

import ml_collections


def get_config(variant: str = ""):
  variants = ("", "quick")
  if variant not in variants:
    raise ValueError(f"config variant {variant!r} is not one of: quick")
  c = ml_collections.ConfigDict()
  c.out_subdir = "sharpness"
  c.step = -1            # checkpoint to load; -1 = the latest
  c.split = "train"      # data the measures are computed on
  c.seed = 0
  c.x64 = False          # evaluate in float64 (params and inputs cast up)
  c.data_batch = 0       # examples per chunk; 0 = the whole split at once
  c.compare = ()         # other workdirs whose OUT_SUBDIR/slq.npz joins the density figure

  c.hessian = ml_collections.ConfigDict()
  c.hessian.top_k = 3
  c.hessian.lanczos_steps = 0     # 0 = min(n, max(2k, k + 30))
  c.hessian.trace_samples = 100   # Hutchinson probes
  c.hessian.trace_confidence = 0.95
  c.hessian.slq_runs = 4
  c.hessian.slq_steps = 80

  c.pacbayes = ml_collections.ConfigDict()
  c.pacbayes.target = 0.1         # allowed drop of train accuracy (Jiang et al.)
  c.pacbayes.sigma_min = 1e-5
  c.pacbayes.sigma_max = 1.0
  c.pacbayes.num_bisection = 12
  c.pacbayes.num_samples = 64     # noise draws per σ, one batched engine call
  c.pacbayes.magnitude_eps = 1e-3
  c.pacbayes.mag_noise = "variance"
  c.pacbayes.ignore_1d = False    # Jiang et al. perturb every parameter
  c.pacbayes.point_batch = 8

  c.eps_sharpness = ml_collections.ConfigDict()
  c.eps_sharpness.epsilons = (1e-3, 5e-4)   # Keskar et al.'s two values
  c.eps_sharpness.num_steps = 20
  c.eps_sharpness.random_starts = 2

  c.figures = ml_collections.ConfigDict()
  c.figures.enabled = True
  c.figures.num_random = 8        # random filter-normalized directions in the line figure
  c.figures.num_alphas = 81
  c.figures.alpha_max = 0.2       # in units of the random directions' norm (~||θ||)
  c.figures.animation = True      # 2-D inputs only
  c.figures.anim_frames = 31
  c.figures.anim_alpha_max = 0.1
  c.figures.anim_resolution = 80

  if variant == "quick":
    c.hessian.trace_samples = 10
    c.hessian.slq_runs = 2
    c.hessian.slq_steps = 20
    c.hessian.lanczos_steps = 20
    c.pacbayes.num_bisection = 4
    c.pacbayes.num_samples = 8
    c.eps_sharpness.epsilons = (1e-3,)
    c.eps_sharpness.num_steps = 5
    c.eps_sharpness.random_starts = 0
    c.figures.num_random = 2
    c.figures.num_alphas = 9
    c.figures.anim_frames = 3
    c.figures.anim_resolution = 24
  return c
