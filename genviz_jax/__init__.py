"""genviz_jax: see and measure why neural networks generalize.

Modules: data, models, objectives, train, workdir, directions, evaluate,
landscape, basin, hessian, sharpness, plots, report.
"""

__version__ = "0.1.0"
