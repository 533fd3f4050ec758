"""Evaluation: lm-eval tasks and models, the response cache, per-cell answer diagnostics."""
