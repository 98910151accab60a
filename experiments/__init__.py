"""Command-line scripts that measure the implementation and reproduce the paper's
experiments, each run from the repository root as ``python -m experiments.NAME``; what
they compute lives in ``blockqnn_jax.analysis``."""
