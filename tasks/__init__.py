"""lm-eval task definitions of the 8 multilingual benchmarks.

`harness.tasks.catalog` lists what exists (pure Python); `harness.tasks.utils` holds the functions the YAMLs
reference (data loading, scoring, metrics), `harness.tasks.extraction` reads answers out of generated text;
`python -m tasks.generate` writes the YAMLs.
Load them with `lm_eval --include_path tasks` or `TaskManager(include_path=str(catalog.TASKS_DIR))`.
"""
