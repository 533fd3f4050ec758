"""lm-eval task definitions of the 8 multilingual benchmarks.

`tasks.catalog` lists what exists (pure Python); `tasks.utils` holds the functions the YAMLs
reference (data loading, scoring, metrics), `tasks.extraction` reads answers out of generated text;
`python -m tasks.generate` writes the YAMLs.
Load them with `lm_eval --include_path tasks` or `TaskManager(include_path=str(catalog.TASKS_DIR))`.
"""
