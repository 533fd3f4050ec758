"""Orchestration: run options into planned runs, the pipeline that executes them, sweeps and the dry run."""
