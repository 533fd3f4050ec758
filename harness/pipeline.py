"""The run pipeline: data recipe -> method.train() -> checkpoint -> lm-eval -> run store.

Every step is skipped when its output is already in the store, so re-running an identical command
reuses finished work and resumes unfinished work.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

from harness.config import EvalConfig, RunConfig
from harness.evaluate import TaskRef, make_hflm_kwargs, run_lm_eval, split_results
from harness.io import atomic_write_json
from harness.models import resolve_model
from harness.store import Run
from harness.training import TrainContext, TrainSettings

log = logging.getLogger(__name__)


def load_examples(cfg: RunConfig):
    from harness.recipes import RecipeOptions, load_recipe

    options = RecipeOptions(
        langs=tuple(cfg.train_langs) if cfg.train_langs else None,
        per_lang=cfg.train_limit,
        seed=cfg.seed,
        path=cfg.recipe_path,
    )
    return load_recipe(cfg.recipe, options)


def train_run(run: Run, method, base_model: str) -> None:
    """Prepare the data and train, unless the run already holds a trained checkpoint."""
    cfg = run.config
    if not method.trains or run.is_trained():
        return
    run.set_phase("data")
    examples = load_examples(cfg)
    method.check_examples(examples)
    counts = Counter(ex.lang for ex in examples)
    atomic_write_json(run.dir / "data.json", {"recipe": cfg.recipe, "examples": len(examples),
                                              "per_language": dict(sorted(counts.items()))})  # fmt: skip
    log.info("%s: %d training examples in %d languages", run.id, len(examples), len(counts))
    run.set_phase("training")
    ctx = TrainContext(
        base_model=base_model,
        examples=examples,
        settings=TrainSettings.from_dict(cfg.train),
        seed=cfg.seed,
        run_dir=run.dir,
        output_dir=run.model_dir,
        trust_remote_code=cfg.trust_remote_code,
    )
    method.train(ctx)
    run.set_phase("trained", data_stats=ctx.extra.get("data_stats", {}))


def evaluate_run(run: Run, method, base_model: str, refs: list[TaskRef], ecfg: EvalConfig) -> dict[str, Any]:
    """Evaluate the tasks the run does not have yet (one lm-eval call), store each, return all results."""
    key = ecfg.key()
    missing = [r for r in refs if run.stored_result(r.name, key) is None]
    if missing:
        run.set_phase("evaluating", tasks=[r.name for r in refs], eval=key)
        checkpoint = method.checkpoint(run.dir, base_model)
        log.info("%s: evaluating %d tasks on %s", run.id, len(missing), checkpoint)
        lm = method.make_lm(checkpoint, **make_hflm_kwargs(ecfg.batch_size, run.config.trust_remote_code))
        output = run_lm_eval(lm, missing, ecfg.limit, run.config.seed, ecfg.apply_chat_template)
        for ref in missing:
            result, samples = split_results(output, ref)
            run.save_result(ref.name, {**result, "key": key}, samples)
        if hasattr(lm, "artifacts"):
            atomic_write_json(run.dir / "eval_artifacts.json", lm.artifacts())
    results = {r.name: run.stored_result(r.name, key) for r in refs}
    run.set_phase("complete", tasks=[r.name for r in refs], eval=key)
    return results


def execute(cfg: RunConfig, refs: list[TaskRef], ecfg: EvalConfig, runs_root: Path, command: str) -> Run:
    from methods import METHODS

    method = METHODS.get(cfg.method)(**cfg.method_options)
    run = Run(runs_root, cfg)
    run.init(command)
    if run.status().get("phase") == "complete" and all(run.stored_result(r.name, ecfg.key()) for r in refs):
        log.info("%s: reusing the finished run", run.id)
        return run
    base_model = resolve_model(cfg.model)
    try:
        train_run(run, method, base_model)
        evaluate_run(run, method, base_model, refs, ecfg)
    except Exception as e:
        run.set_phase("failed", error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        raise
    return run
