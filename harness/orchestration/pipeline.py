"""The run pipeline: data recipe -> method.train() -> checkpoint -> lm-eval -> run store.

Every step is skipped when its output is already in the store, so re-running an identical command
reuses finished work and resumes unfinished work.

A run that differs from another only in evaluation-time method options (`Method.eval_options`, e.g.
CC-Tuning's `wt_samples`, `use_wt`) does not train: the model is trained (or reused) in the folder of
its training config (`RunConfig.training_id`) and handed to the run's own `model/` by the method
(`Method.share_model`: hard links; CC-Tuning refits W_T there when the run's fit options differ). A sweep
over M trains once.
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
from harness.core.method import METHODS
from harness.core.provenance import PhaseClock
from harness.core.store import Run
from harness.data.models import check_same_model, resolve_model
from harness.evaluation.cache import CachedLM, checkpoint_fingerprint, merge_rank_caches, open_run_cache
from harness.evaluation.evaluate import TaskRef, make_hflm_kwargs, run_lm_eval, split_results
from harness.evaluation.lm_eval_files import new_tracker, write_lm_eval_files
from harness.orchestration.options import PlannedRun, check_inputs
from harness.plumbing import faults
from harness.plumbing.errors import HarnessError
from harness.plumbing.io import atomic_write_json
from harness.training import distributed
from harness.training.settings import TrainContext, TrainSettings

log = logging.getLogger(__name__)

# Evaluation requests are computed and cached this many batches at a time (the most a kill can lose).
EVAL_CHUNK_BATCHES = 16


def train_run(run: Run, method, base_model: str) -> None:
    """Prepare the data and train, unless the run already holds a trained checkpoint."""
    cfg = run.config
    if not method.trains or run.is_trained():
        return
    run.set_phase("data")
    clock = PhaseClock()
    examples = cfg.training_examples()
    method.check_examples(examples)
    counts = Counter(ex.lang for ex in examples)
    if distributed.is_main():
        atomic_write_json(run.dir / "data.json", {"recipe": cfg.recipe, "examples": len(examples),
                                                  "per_language": dict(sorted(counts.items()))})  # fmt: skip
    log.info("%s: %d training examples in %d languages", run.id, len(examples), len(counts))
    run.record_phase("data", clock, examples=len(examples))
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
    clock = PhaseClock()
    method.train(ctx)
    run.record_phase("training", clock, dtype="bf16 mixed precision" if ctx.settings.bf16 else "float32")
    run.set_phase("trained", data_stats=ctx.extra.get("data_stats", {}))


def evaluate_run(run: Run, method, base_model: str, refs: list[TaskRef], ecfg: EvalConfig) -> dict[str, Any]:
    """Evaluate the tasks the run does not have yet (one lm-eval call), store each, return all results.
    Under a data-parallel launch every process evaluates its share of the items of the tasks the main process
    finds missing; lm-eval gathers the results into the main process, which alone writes them."""
    key = ecfg.key()
    missing = distributed.broadcast([r for r in refs if run.stored_result(r.name, key) is None])
    if missing:
        run.set_phase("evaluating", tasks=[r.name for r in refs], eval=key)
        checkpoint = method.checkpoint(run.dir, base_model)
        if method.trains:
            check_same_model(checkpoint, base_model)
        log.info("%s: evaluating %d tasks on %s", run.id, len(missing), checkpoint)
        clock = PhaseClock()
        lm_kwargs = make_hflm_kwargs(ecfg.batch_size, run.config.trust_remote_code)
        with distributed.evaluating():
            evaluated = _run_lm_eval(run, method, checkpoint, missing, ecfg, lm_kwargs)
        if evaluated is not None:  # the main process: lm-eval's output holds every process's results
            output, tracker, lm = evaluated
            log.info("%s: %d responses from the run's cache, %d computed", run.id, lm.hits, lm.computed)
            if hasattr(lm.lm, "artifacts"):
                atomic_write_json(run.dir / "eval_artifacts.json", lm.lm.artifacts())
            write_lm_eval_files(run.dir, tracker, output, model_name=str(run.config.model))
            for ref in missing:
                result, samples = split_results(output, ref)
                run.save_result(ref.name, {**result, "key": key}, samples)
                faults.point("result")
            run.record_phase("evaluation", clock, dtype=lm_kwargs["dtype"], tasks=[r.name for r in missing],
                             responses_cached=lm.hits, responses_computed=lm.computed)  # fmt: skip
    results = {r.name: run.stored_result(r.name, key) for r in refs}
    run.set_phase("complete", tasks=[r.name for r in refs], eval=key)
    return results


def _run_lm_eval(run: Run, method, checkpoint: str, refs: list[TaskRef], ecfg: EvalConfig, lm_kwargs: dict):
    """Load the method's evaluator behind the run's response cache and run lm-eval, in every process of a
    launch (each with its own cache file, merged into the run's by the main process before and after).
    Returns, in the main process, lm-eval's output, its tracker and the cached evaluator; None in the
    others."""
    main, rank, world = distributed.is_main(), distributed.rank(), distributed.world_size()
    launched = world > 1
    if launched and ecfg.limit is not None and ecfg.limit < world:
        # Fewer items than processes: lm-eval would give some processes none (and fail in them).
        log.info("%s: --limit %d is below the %d processes: the main process evaluates alone",
                 run.id, ecfg.limit, world)  # fmt: skip
        rank, world = 0, 1
    if main:
        merge_rank_caches(run.dir)  # what a killed data-parallel evaluation computed, before anyone reads
    distributed.barrier()
    evaluated = None
    if main or world > 1:
        cache = open_run_cache(run.dir, rank, world)
        try:
            # The model's files are hashed (for the cache key) in a thread while the model loads: the ~0.6 s
            # of SHA-256 over the default model would otherwise add to every evaluation. The main process
            # hashes them.
            with ThreadPoolExecutor(1) as pool:
                fingerprint = pool.submit(checkpoint_fingerprint, checkpoint, cache) if main else None
                try:
                    inner = method.make_lm(checkpoint, **lm_kwargs)
                except (OSError, ValueError) as e:
                    if isinstance(e, OSError) and e.errno is not None:
                        raise  # the disk, reported by the CLI
                    raise HarnessError(f"cannot load the model {checkpoint}: {str(e).splitlines()[0]}") from None
                # The cache key holds the model's files and everything that shapes its answers.
                model_key = fingerprint and hashlib.sha256(json.dumps([
                    fingerprint.result(), run.config.method, method.options,
                    {k: v for k, v in lm_kwargs.items() if k != "trust_remote_code"},
                ], sort_keys=True, default=str).encode()).hexdigest()  # fmt: skip
                if world > 1:
                    model_key = distributed.broadcast(model_key)
            lm = CachedLM(inner, cache, model_key, chunk_size=EVAL_CHUNK_BATCHES * ecfg.batch_size, rank=rank,
                          world_size=world)  # fmt: skip
            tracker = new_tracker(run.dir) if main else None
            output = run_lm_eval(lm, refs, ecfg.limit, run.config.seed, ecfg.apply_chat_template, tracker,
                                 model_name=str(checkpoint))  # fmt: skip
            lm.finish()
            evaluated = (output, tracker, lm) if main else None
        finally:
            cache.close()
    if launched:
        distributed.barrier()  # every process has closed its cache file
        if main:
            merge_rank_caches(run.dir)
    return evaluated


def share_trained_model(run: Run, source: Run, method) -> None:
    """Give `run` the trained model of `source` (a run of the same training config): the method fills a
    fresh model folder from it (`Method.share_model`: hard links, refitting what its options change),
    which is renamed into place only when complete; the training log and data stats are copied alongside."""
    if run.is_trained():
        return
    run.set_phase("training", training_run=source.id)
    log.info("%s: the trained model of %s", run.id, source.id)
    clock = PhaseClock()
    tmp = Path(tempfile.mkdtemp(prefix=".model.", dir=run.dir))
    try:
        method.share_model(source.dir, run.dir, tmp, run.config)
        if run.model_dir.exists():
            shutil.rmtree(run.model_dir)
        os.replace(tmp, run.model_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for name in ("train_log.jsonl", "data.json"):
        if (source.dir / name).is_file():
            shutil.copyfile(source.dir / name, run.dir / name)
    run.record_phase("training", clock, shared_from=source.id)
    run.set_phase("trained", training_run=source.id, data_stats=source.status().get("data_stats", {}))


def failed(run: Run, e: Exception) -> None:
    run.set_phase("failed", error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


def execute(
    cfg: RunConfig,
    refs: list[TaskRef],
    ecfg: EvalConfig,
    runs_root: Path,
    command: str,
) -> Run:
    """Train (or reuse) the run's model, then evaluate it. Under a data-parallel launch every process calls
    this for the same runs in the same order: every process trains, the main process alone writes the store
    (a model shared from another run's folder is linked, and W_T refitted, by it), and once the model is on
    disk every process evaluates its share (`evaluate_run`, `harness.training.distributed`)."""
    method = METHODS.get(cfg.method)(**cfg.method_options)
    run = Run(runs_root, cfg)
    with run.locked(log.warning):  # one writer per run: another process on it waits here
        run.init(command)
        finished = run.status().get("phase") == "complete"
        finished = finished and all(run.stored_result(r.name, ecfg.key()) for r in refs)
        if distributed.broadcast(finished):  # the main process decides for every process of a launch
            log.info("%s: reusing the finished run", run.id)
            return run
        base_model = resolve_model(cfg.model)
        try:
            if method.trains and cfg.training_id != run.id:
                source = Run(runs_root, cfg.training_config())
                with source.locked(log.warning):
                    if not source.is_trained():
                        source.init(command)
                        try:
                            train_run(source, METHODS.get(cfg.method)(**source.config.method_options), base_model)
                        except Exception as e:
                            failed(source, e)
                            raise
                if distributed.is_main():
                    share_trained_model(run, source, method)
            else:
                train_run(run, method, base_model)
            distributed.barrier()  # the model the main process wrote is on disk before any process loads it
            evaluate_run(run, method, base_model, refs, ecfg)
        except Exception as e:
            failed(run, e)
            raise
        return run


def execute_all(planned: list[PlannedRun], output: Path, command: str) -> list[Run]:
    """Train and evaluate every planned run, in order. Under a data-parallel launch (`accelerate launch`)
    every process takes part in each run (`execute`); the processes other than the main one get an empty
    list (the main one prints)."""
    check_inputs(planned, output)
    runs = [execute(run.config, run.refs, run.ecfg, output, command) for run in planned]
    return runs if distributed.is_main() else []

