import os

# Keep CPU test compiles cheap (as the flax examples' tests do); results are checked against
# tolerances, not bit patterns of optimized code.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# One XLA CPU device per test process, as the tests' numbers were written for; the default of
# one device per core (genviz_jax.engine.host) is tested in subprocesses in test_host_devices.py.
os.environ.setdefault("GENVIZ_JAX_HOST_DEVICES", "1")
