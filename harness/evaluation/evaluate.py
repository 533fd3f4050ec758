"""The lm-eval bridge: resolve task names, evaluate a model through `lm_eval.simple_evaluate` with our
task folder, and turn lm-eval's output into per-task results and per-item samples."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness.data.base import LANGUAGES, check_languages
from harness.evaluation.diagnostics import cell_diagnostics
from harness.plumbing.errors import HarnessError, near
from harness.tasks.catalog import BENCHMARKS, TASKS_DIR, parse_task_name
from harness.tasks.utils import extract_answer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskRef:
    name: str  # the lm-eval task name
    benchmark: str  # ours ("xnli") or the lm-eval task name for foreign tasks
    protocol: str  # "gen" / "mc" for ours, "" otherwise
    lang: str  # language code for ours, "" otherwise
    output_type: str = ""  # lm-eval's request kind: generate_until, multiple_choice, loglikelihood(_rolling)


@functools.cache
def _task_manager(ours_only: bool = False):
    """lm-eval's index of its tasks and ours (about 10 s to build), or of ours alone (a fraction of a second),
    built once per process: every evaluation of a sweep or of several runs loads its tasks from it (each
    load builds new task objects)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASKS_DIR), include_defaults=not ours_only)


def resolve_tasks(names: list[str], langs: list[str] | None = None) -> list[TaskRef]:
    """Expand user task names into lm-eval tasks, one per benchmark x protocol x language.

    Accepted: `all`; a benchmark (`xnli`: its paper protocol); a benchmark and protocol (`xnli_mc`);
    one task (`xnli_mc_sw`); or any task lm-eval ships (evaluated as it is). `langs` restricts ours.
    """
    if langs:
        check_languages(langs, LANGUAGES)
    refs: list[TaskRef] = []
    foreign: list[str] = []
    for raw in names:
        name = raw.strip()
        if not name:
            continue
        if name == "all":
            expanded = [(b, BENCHMARKS[b].protocols[0], None) for b in BENCHMARKS]
        elif name in BENCHMARKS:
            expanded = [(name, BENCHMARKS[name].protocols[0], None)]
        elif "_" in name and name.rsplit("_", 1)[0] in BENCHMARKS:
            bench, protocol = name.rsplit("_", 1)
            if protocol not in BENCHMARKS[bench].protocols:
                raise HarnessError(
                    f"benchmark '{bench}' has no protocol '{protocol}'; valid: "
                    + ", ".join(BENCHMARKS[bench].group_name(p) for p in BENCHMARKS[bench].protocols)
                )
            expanded = [(bench, protocol, None)]
        elif parse_task_name(name):
            bench, protocol, lang = parse_task_name(name)
            expanded = [(bench, protocol, [lang])]
        else:
            foreign.append(name)
            continue
        for bench, protocol, only in expanded:
            b = BENCHMARKS[bench]
            chosen = [lang for lang in b.languages if (only is None or lang in only)]
            if langs:
                chosen = [lang for lang in chosen if lang in langs]
                if not chosen and name != "all":
                    raise HarnessError(
                        f"benchmark '{bench}' has none of the languages {', '.join(langs)}; "
                        f"its languages: {', '.join(b.languages)}"
                    )
            kind = PROTOCOL_OUTPUT_TYPES[protocol]
            refs.extend(TaskRef(b.task_name(protocol, lang), bench, protocol, lang, kind) for lang in chosen)
    if foreign:
        manager = _task_manager()
        known = set(manager.all_tasks)
        for name in foreign:
            if name not in known:
                ours = [f"{b}_{p}" for b in BENCHMARKS for p in BENCHMARKS[b].protocols]
                hint = near(name, ours + list(BENCHMARKS)) or near(name, known)
                raise HarnessError(
                    f"unknown task '{name}'{hint}; valid: all, {', '.join(BENCHMARKS)}, "
                    f"{', '.join(ours)}, <benchmark>_<protocol>_<lang>, or any lm-eval task (lm_eval ls tasks)"
                )
            refs.append(TaskRef(name, name, "", "", _output_type(manager, name)))
    if not refs:
        raise HarnessError("no tasks to evaluate: give --tasks (see `harness tasks`)")
    return list(dict.fromkeys(refs))


# Our protocols' lm-eval output types (tasks/_gen.yaml, tasks/_mc.yaml).
PROTOCOL_OUTPUT_TYPES = {"gen": "generate_until", "mc": "multiple_choice"}


def _output_type(manager, name: str) -> str:
    """The output type of an lm-eval task from its index entry (following `include`), without loading its
    data; "" for a group or when lm-eval's index does not say."""
    entry = getattr(manager, "_index", {}).get(name)
    cfg, path = (dict(getattr(entry, "cfg", None) or {}), getattr(entry, "yaml_path", None)) if entry else ({}, None)
    for _ in range(5):  # an include chain
        if cfg.get("output_type") or not cfg.get("include") or path is None:
            break
        path = Path(path).parent / str(cfg["include"])
        try:
            cfg = {**_plain_yaml(path), **{k: v for k, v in cfg.items() if k != "include"}}
        except (OSError, yaml.YAMLError):
            break
    return str(cfg.get("output_type") or "")


def _plain_yaml(path: Path) -> dict[str, Any]:
    """A task YAML with lm-eval's `!function` tags read as plain strings."""

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    return yaml.load(path.read_text(encoding="utf-8"), Loader=Loader) or {}  # a SafeLoader: no object construction


def make_hflm_kwargs(batch_size: int, trust_remote_code: bool) -> dict[str, Any]:
    import torch

    return {
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "dtype": "float32",  # bf16 log-likelihoods drift by up to 0.4 nats on the default model
        "batch_size": batch_size,
        "trust_remote_code": trust_remote_code,
        "use_safetensors": True,  # weights from safetensors only, never a pickle (passed to from_pretrained)
    }


def run_lm_eval(
    lm,
    refs: list[TaskRef],
    limit: int | None,
    seed: int,
    apply_chat_template: bool = True,
    tracker=None,
    model_name: str | None = None,
):
    """One `simple_evaluate` call for all tasks; returns lm-eval's result dict. `tracker` (an
    `EvaluationTracker`) records the experiment's arguments for lm-eval's own result files, with
    `model_name` as the `pretrained=` model argument."""
    from lm_eval import simple_evaluate

    return simple_evaluate(
        model=lm,
        model_args=f"pretrained={model_name}" if model_name else None,
        evaluation_tracker=tracker,
        tasks=[r.name for r in refs],
        limit=limit,
        task_manager=_task_manager(ours_only=all(r.protocol for r in refs)),
        apply_chat_template=apply_chat_template,
        log_samples=True,
        bootstrap_iters=0,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
    )


def split_results(output: dict[str, Any], ref: TaskRef) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The stored result and per-item samples of one task from lm-eval's result dict."""
    res = output["results"][ref.name]
    metrics = {
        k.split(",")[0]: v
        for k, v in res.items()
        if "," in k and not k.split(",")[0].endswith("_stderr") and isinstance(v, int | float)
    }
    n = output.get("n-samples", {}).get(ref.name, {}).get("effective")
    samples = [sample_row(ref, s, metrics) for s in output.get("samples", {}).get(ref.name, [])]
    result = {
        "task": ref.name,
        "benchmark": ref.benchmark,
        "protocol": ref.protocol,
        "lang": ref.lang,
        "metrics": metrics,
        "primary_metric": primary_metric(ref, metrics),
        "n": n if n is not None else len(samples),
    }
    if ref.protocol:  # ours: baselines and the answer distribution (`harness.evaluation.diagnostics`)
        result["diagnostics"] = cell_diagnostics(ref.benchmark, samples)
    return result, samples


def primary_metric(ref: TaskRef, metrics: dict[str, Any]) -> str:
    if ref.benchmark in BENCHMARKS:
        return BENCHMARKS[ref.benchmark].metrics[ref.protocol]
    for key in ("acc", "exact_match", "f1", "rougeL", "bleu"):
        if key in metrics:
            return key
    return next(iter(metrics), "")


def sample_row(ref: TaskRef, s: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    """A per-item record: prompt, model output, extracted answer, gold, score."""
    args = s.get("arguments") or []
    prompt = args[0][0] if args and args[0] else ""
    doc = s.get("doc", {})
    score = {m: s[m] for m in metrics if m in s}
    if len(args) > 1 or (args and not isinstance(args[0][1], dict)):  # log-likelihood over options
        choices = [a[1] for a in args]
        lls = [r[0] if isinstance(r, list | tuple) else r for r in s.get("filtered_resps", [])]
        best = max(range(len(lls)), key=lls.__getitem__) if lls else None
        target = s.get("target")
        gold = choices[target] if isinstance(target, int) and 0 <= target < len(choices) else target
        output = choices[best] if best is not None else ""
        return {"id": doc.get("id", s.get("doc_id")), "prompt": prompt, "output": output,
                "extracted": output, "gold": gold, "loglikelihoods": lls, **score}  # fmt: skip
    resp = s.get("filtered_resps") or [""]
    output = resp[0] if isinstance(resp[0], str) else str(resp[0])
    extracted = output
    if ref.protocol:
        extracted = extract_answer(ref.benchmark, doc, output)
    return {"id": doc.get("id", s.get("doc_id")), "prompt": prompt, "output": output,
            "extracted": extracted, "gold": doc.get("answer", s.get("target")), **score}  # fmt: skip
