import os

# Keep CPU test compiles cheap; numerics are unchanged.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
