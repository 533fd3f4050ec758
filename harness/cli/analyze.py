"""`harness analyze RUNS...`: representation alignment with English per layer, for each run's checkpoint
(`harness.evaluation.alignment`), stored in the run (`analysis/alignment.json`) and resumable per language;
`harness report` draws it. `harness run --analyze` runs the same after its runs finish."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from harness.core.store import find_runs
from harness.data.base import LANGUAGES, check_languages
from harness.evaluation.alignment import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_SENTENCES,
    AlignmentOutcome,
    analyze_run,
    mean_over_languages,
)
from harness.plumbing.errors import HarnessError

log = logging.getLogger(__name__)


def add(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("analyze", help="alignment of each language's representations with English, per layer")
    a.add_argument("runs", nargs="+", help="run folders, or folders holding runs (e.g. runs/)")
    a.add_argument("--sentences", type=int, default=DEFAULT_SENTENCES,
                   help="parallel sentences per language (FLORES dev+test, at most 303; "
                        f"default {DEFAULT_SENTENCES})")  # fmt: skip
    a.add_argument(
        "--langs", help="languages compared with English, comma-separated (default: all 21 others)"
    )
    a.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help=f"default {DEFAULT_BATCH_SIZE}")
    a.set_defaults(func=command)


def summary(outcome: AlignmentOutcome) -> str:
    """One line per representation: where the mean retrieval over languages peaks, as it is and centered."""
    doc = outcome.doc
    lines = [f"run {outcome.run}: {len(doc['ids'])} sentences x {len(doc['languages'])} languages "
             f"({len(outcome.computed)} computed, {len(outcome.reused)} reused) in {outcome.seconds:.0f} s: "
             f"{outcome.path}"]  # fmt: skip
    for name, layers in doc.get("layers", {}).items():
        retrieval = mean_over_languages(doc, name, "retrieval")
        if not retrieval:
            continue
        parallel = mean_over_languages(doc, name, "parallel")
        gap = np.subtract(parallel, mean_over_languages(doc, name, "nonparallel"))
        centered = mean_over_languages(doc, name, "centered_retrieval")
        best, best_c = int(np.argmax(retrieval)), int(np.argmax(centered))
        lines.append(f"  {name:>8}: retrieval best at layer {layers[best]}: {retrieval[best]:.0%} (cosine gap "
                     f"{gap[best]:+.3f}; first layer {retrieval[0]:.0%}, last {retrieval[-1]:.0%}); centered: "
                     f"best at layer {layers[best_c]}: {centered[best_c]:.0%}")  # fmt: skip
    return "\n".join(lines)


def analyze_runs(paths: Sequence[str], sentences: int = DEFAULT_SENTENCES, langs: Sequence[str] | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE) -> list[AlignmentOutcome]:  # fmt: skip
    """Analyze every run under `paths`, printing a summary of each; a run that cannot be (no checkpoint yet)
    is skipped with a warning, unless no run can."""
    if sentences < 2 or batch_size < 1:
        raise HarnessError(f"--sentences {sentences} / --batch-size {batch_size}: need at least 2 and 1")
    check_languages(list(langs or []), LANGUAGES)
    outcomes, errors = [], []
    for run_dir in find_runs(list(paths)):
        try:
            outcome = analyze_run(Path(run_dir), sentences, langs, batch_size)
        except HarnessError as e:  # a run without a checkpoint (failed, still training): the others go on
            log.warning("%s: skipped: %s", run_dir.name, e)
            errors.append(e)
            continue
        print(summary(outcome), flush=True)
        outcomes.append(outcome)
    if not outcomes:
        raise errors[-1]
    return outcomes


def command(args: argparse.Namespace) -> int:
    langs = [lang.strip() for lang in args.langs.split(",") if lang.strip()] if args.langs else None
    analyze_runs(args.runs, args.sentences, langs, args.batch_size)
    return 0
