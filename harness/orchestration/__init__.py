"""Orchestration: run options into planned runs, the pipeline that executes them, sweeps and the dry run.

Importing it registers the built-in methods (`methods`), so that every run it plans can name them."""

import methods  # noqa: F401  (registers the built-in methods in harness.core.method.METHODS)
