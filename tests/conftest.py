import os

# Keep CPU test compiles cheap (as the flax examples' tests do); results are checked against
# tolerances, not bit patterns of optimized code.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
