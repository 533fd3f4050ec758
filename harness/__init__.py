"""A harness for multilingual fine-tuning research (CC-Tuning and its baselines, measured alike).

The folders `tasks/`, `methods/` and `reports/` are the subpackages `harness.tasks`, `harness.methods` and
`harness.reports`. An installed wheel has them inside this package (pyproject's `package-dir`); a source
checkout has them beside it, so this package's search path also covers the checkout's root.
"""

from pathlib import Path as _Path

__version__ = "0.1.0"

_HERE = _Path(__file__).resolve().parent
if not (_HERE / "tasks").is_dir() and (_HERE.parent / "tasks" / "catalog.py").is_file():
    __path__.append(str(_HERE.parent))  # noqa: F821 (a package's __path__)
