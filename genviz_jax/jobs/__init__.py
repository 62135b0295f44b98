"""Studies of trained workdirs, shared by the binaries (experiments/) and the paper job.

train: a training run and its decision-boundary figure; landscape: 1-D/2-D loss surfaces and
interpolation; basin: basin radii and volume; sharpness: Hessian spectrum, PAC-Bayes flatness and
ε-sharpness. Each `run`/`compute` takes an ml_collections config (genviz_jax/configs/) and
directories, raises a one-line ValueError for bad input, and writes its outputs atomically.
"""
