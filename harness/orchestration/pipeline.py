"""The run pipeline: data recipe -> method.train() -> checkpoint -> lm-eval -> run store.

Every step is skipped when its output is already in the store, so re-running an identical command
reuses finished work and resumes unfinished work.

A run that differs from another only in evaluation-time method options (CC-Tuning's `wt_samples`,
`use_wt`, ...: `harness.core.config.EVAL_TIME_OPTIONS`) does not train: the model is trained (or reused) in
the folder of its training config (`RunConfig.training_id`), hard-linked into the run's own `model/`,
and W_T is refitted there when the run's fit options differ. A sweep over M trains once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from harness.core.config import EvalConfig, RunConfig
from harness.core.models import check_same_model, resolve_model
from harness.core.store import Run
from harness.evaluation.cache import CachedLM, ResponseCache, checkpoint_fingerprint
from harness.evaluation.evaluate import TaskRef, make_hflm_kwargs, run_lm_eval, split_results
from harness.plumbing import faults
from harness.plumbing.errors import HarnessError
from harness.plumbing.io import atomic_write_json
from harness.training import distributed
from harness.training.trainer import TrainContext, TrainSettings

log = logging.getLogger(__name__)

# Evaluation requests are computed and cached this many batches at a time (the most a kill can lose).
EVAL_CHUNK_BATCHES = 16


def load_examples(cfg: RunConfig):
    from harness.data.recipes import RecipeOptions, load_recipe

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
    if distributed.is_main():
        atomic_write_json(run.dir / "data.json", {"recipe": cfg.recipe, "examples": len(examples),
                                                  "per_language": dict(sorted(counts.items()))})  # fmt: skip
    log.info("%s: %d training examples in %d languages", run.id, len(examples), len(counts))
    faults.point("data")
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
        if method.trains:
            check_same_model(checkpoint, base_model)
        log.info("%s: evaluating %d tasks on %s", run.id, len(missing), checkpoint)
        lm_kwargs = make_hflm_kwargs(ecfg.batch_size, run.config.trust_remote_code)
        cache = ResponseCache(run.dir / "eval_cache.sqlite")
        try:
            # The model's files are hashed (for the cache key) in a thread while the model loads: the
            # ~0.6 s of SHA-256 over the default model would otherwise add to every evaluation.
            with ThreadPoolExecutor(1) as pool:
                fingerprint = pool.submit(checkpoint_fingerprint, checkpoint, cache)
                try:
                    inner = method.make_lm(checkpoint, **lm_kwargs)
                except (OSError, ValueError) as e:
                    if isinstance(e, OSError) and e.errno is not None:
                        raise  # the disk, reported by the CLI
                    raise HarnessError(f"cannot load the model {checkpoint}: {str(e).splitlines()[0]}") from None
                # The cache key holds the model's files and everything that shapes its answers.
                model_key = hashlib.sha256(json.dumps([
                    fingerprint.result(), run.config.method, method.options,
                    {k: v for k, v in lm_kwargs.items() if k != "trust_remote_code"},
                ], sort_keys=True, default=str).encode()).hexdigest()  # fmt: skip
            lm = CachedLM(inner, cache, model_key, chunk_size=EVAL_CHUNK_BATCHES * ecfg.batch_size)
            output = run_lm_eval(lm, missing, ecfg.limit, run.config.seed, ecfg.apply_chat_template)
            log.info("%s: %d responses from the run's cache, %d computed", run.id, lm.hits, lm.computed)
            if hasattr(inner, "artifacts"):
                atomic_write_json(run.dir / "eval_artifacts.json", inner.artifacts())
            for ref in missing:
                result, samples = split_results(output, ref)
                run.save_result(ref.name, {**result, "key": key}, samples)
                faults.point("result")
        finally:
            cache.close()
    results = {r.name: run.stored_result(r.name, key) for r in refs}
    run.set_phase("complete", tasks=[r.name for r in refs], eval=key)
    return results


# CC-Tuning options that change the fitted W_T (the others of EVAL_TIME_OPTIONS only change evaluation).
WT_FIT_OPTIONS = ("wt_samples", "wt_source", "wt_per_language")
CC_FILES = ("cc.safetensors", "cc.json")


def link_tree(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> None:
    """Hard-link every file of `src` into `dst` (copy where the file system cannot link), except `skip`.
    Linked files must never be written in place: replace them (write + rename) instead."""
    for path in sorted(src.rglob("*")):
        if path.is_dir() or path.name in skip:
            continue
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)


def refit_transform(cfg: RunConfig, method, model_dir: Path, source_dir: Path) -> dict[str, Any]:
    """Fit W_T with the trained checkpoint in `model_dir` for this run's fit options and write
    `cc.safetensors` + `cc.json` there (the Decision Maker comes from the training run's `source_dir`).
    Returns the fit's summary."""
    from harness.core.models import load_model, load_tokenizer
    from methods.cc.transform import CCWeights, fit_transform, load_cc, save_cc

    trained = load_cc(source_dir)
    pairs = method.transform_pairs(load_examples(cfg))
    tokenizer = load_tokenizer(str(model_dir), cfg.trust_remote_code)
    model = load_model(str(model_dir), trust_remote_code=cfg.trust_remote_code)
    fit = fit_transform(
        model,
        tokenizer,
        pairs,
        method.options["wt_samples"],
        cfg.seed,
        per_language=method.options["wt_per_language"],
        source=method.options["wt_source"],
        batch_size=TrainSettings.from_dict(cfg.train).per_device_batch_size,
        rst=trained.options.get("rst", "last"),  # as the model was trained
    )
    weights = CCWeights(
        decision_maker=trained.decision_maker,
        transform_matrix=fit.transform_matrix,
        per_language=fit.per_language_matrices,
        options=trained.options,
        transform=fit.summary(),
    )
    save_cc(model_dir, weights)
    return fit.summary()


def share_trained_model(run: Run, source: Run, method) -> None:
    """Give `run` the trained model of `source` (a run of the same training config): its files
    hard-linked into `run.model_dir`, W_T refitted when the run's W_T fit options differ from the
    defaults the training run fitted with, and the training log and artifacts copied alongside."""
    if run.is_trained():
        return
    cls = type(method)
    refit = any(method.options[k] != cls.defaults[k] for k in WT_FIT_OPTIONS if k in cls.defaults)
    run.set_phase("training", training_run=source.id)
    log.info("%s: model of %s%s", run.id, source.id, ", refitting W_T" if refit else "")
    tmp = Path(tempfile.mkdtemp(prefix=".model.", dir=run.dir))
    try:
        link_tree(source.model_dir, tmp, skip=CC_FILES if refit else ())
        summary = refit_transform(run.config, method, tmp, source.model_dir) if refit else None
        if run.model_dir.exists():
            shutil.rmtree(run.model_dir)
        os.replace(tmp, run.model_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for name in ("train_log.jsonl", "data.json"):
        if (source.dir / name).is_file():
            shutil.copyfile(source.dir / name, run.dir / name)
    artifacts = source.dir / "cc_artifacts.json"
    if artifacts.is_file():
        values = json.loads(artifacts.read_text(encoding="utf-8"))
        values["options"] = method.options
        if summary is not None:
            values["transform"] = summary
        atomic_write_json(run.dir / "cc_artifacts.json", values)
    run.set_phase("trained", training_run=source.id, data_stats=source.status().get("data_stats", {}))


def failed(run: Run, e: Exception) -> None:
    run.set_phase("failed", error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


def execute(
    cfg: RunConfig,
    refs: list[TaskRef],
    ecfg: EvalConfig,
    runs_root: Path,
    command: str,
    train_only: bool = False,
) -> Run:
    """Train (or reuse) the run's model, then evaluate it. `train_only` stops after training: what every
    process of a data-parallel launch does before the main process evaluates alone (`harness.training.distributed`);
    a model shared from another run's folder is linked (and W_T refitted) in the evaluation pass."""
    from methods import METHODS

    method = METHODS.get(cfg.method)(**cfg.method_options)
    run = Run(runs_root, cfg)
    run.init(command)
    if run.status().get("phase") == "complete" and all(run.stored_result(r.name, ecfg.key()) for r in refs):
        log.info("%s: reusing the finished run", run.id)
        return run
    base_model = resolve_model(cfg.model)
    try:
        if method.trains and cfg.training_id != run.id:
            source = Run(runs_root, cfg.training_config())
            if not source.is_trained():
                source.init(command)
                try:
                    train_run(source, METHODS.get(cfg.method)(**source.config.method_options), base_model)
                except Exception as e:
                    failed(source, e)
                    raise
            if train_only:
                return run
            share_trained_model(run, source, method)
        else:
            train_run(run, method, base_model)
            if train_only:
                return run
        evaluate_run(run, method, base_model, refs, ecfg)
    except Exception as e:
        failed(run, e)
        raise
    return run
