"""absl binaries over the genviz_jax library: `python -m experiments.NAME --config=... --workdir=...`."""
