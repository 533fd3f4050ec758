"""`harness run --dry-run`: everything a run builds except the weights, printed as a plan.

One line per planned run (its id and what executing it would do: train, resume, reuse, evaluate N tasks);
then the tasks and their items, the training data per language, the training settings and the
`transformers.TrainingArguments` the Trainer would get (the batch laid out over the processes of an
accelerate launch), and the model built on the meta device from its config: parameters, tokens per
optimizer step, and the memory full fine-tuning needs for weights, gradients and Adam states; the activations
per GPU (`harness.training.memory`: one training pass, and a method's own, e.g. CC-Tuning's two passes), the
total per GPU and whether it fits an 80 GB GPU; and the host memory per process while the model loads.

Nothing is downloaded where the Hub is unreachable, and no weights are read. A model's config comes from a
local checkpoint, else from `harness/orchestration/model_configs/<org>__<name>/config.json` (shipped for the paper's
models), else from the Hub or its local cache. A tokenizer that is not at hand is reported in one line and
the figures that need it (tokens, examples over the cutoff) are skipped.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import socket
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from harness.core.config import EvalConfig, RunConfig
from harness.core.method import METHODS
from harness.core.store import Run
from harness.data.models import DEFAULT_MODEL, cache_dir, default_model_gguf, resolve_model, sharded_loading
from harness.evaluation.evaluate import TaskRef
from harness.orchestration.options import PlannedRun, run_label
from harness.orchestration.sweep import run_state
from harness.plumbing.errors import HarnessError
from harness.tasks.catalog import BENCHMARKS, item_count
from harness.training import distributed, memory
from harness.training.settings import TrainContext, TrainSettings, batch_layout
from harness.training.trainer import SFTDataset, latest_checkpoint, training_arguments

MODEL_CONFIGS = Path(__file__).resolve().parent / "model_configs"

# Full fine-tuning in mixed precision, bytes per parameter: bf16 weights and gradients, fp32 master
# weights and Adam's two moments (the ZeRO paper's 16 bytes per parameter). Activations come on top.
WEIGHT_BYTES, GRAD_BYTES, OPTIM_BYTES = 2, 2, 4 + 4 + 4
GIB = 1024**3


@functools.cache
def hub_reachable() -> bool:
    """Whether the Hugging Face Hub answers (a 3-second TCP connect): offline, files come from the local
    cache only, instead of from retries that take half a minute per file."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=3).close()
    except OSError:
        return False
    return True


def local_config_dir(model: str) -> Path | None:
    """`model_configs/<org>__<name>/` when it holds the config of Hub id `model`."""
    folder = MODEL_CONFIGS / model.replace("/", "__")
    return folder if "/" in model and (folder / "config.json").is_file() else None


def model_config(model: str, trust_remote_code: bool = False) -> tuple[Any, str]:
    """The model's `PretrainedConfig` and where it came from, without reading any weights."""
    from transformers import AutoConfig

    if model == DEFAULT_MODEL:
        converted = cache_dir() / "models" / "SmolLM2-135M-Instruct"
        if (converted / "config.json").is_file():
            return AutoConfig.from_pretrained(str(converted)), str(converted)
        gguf = default_model_gguf()  # the GGUF's metadata only, not its tensors
        return AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name), str(gguf)
    if Path(model).expanduser().exists():
        folder = resolve_model(model)
        return AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code), folder
    local = local_config_dir(model)
    if local is not None:
        config = AutoConfig.from_pretrained(str(local), trust_remote_code=trust_remote_code)
        return config, str(local / "config.json")
    online = hub_reachable()
    try:
        config = AutoConfig.from_pretrained(
            model, trust_remote_code=trust_remote_code, local_files_only=not online
        )
    except (OSError, ValueError) as e:
        why = (
            "the Hugging Face Hub is unreachable and it is not in the local cache"
            if not online
            else str(e).strip().splitlines()[0]
        )
        raise HarnessError(
            f"cannot read the config of --model {model}: {why}; put its config.json in "
            f"{MODEL_CONFIGS / model.replace('/', '__')}/"
        ) from None
    return config, f"{model} (Hub)"


def load_tokenizer_if_at_hand(model: str, trust_remote_code: bool = False):
    """The model's tokenizer from a local folder, the Hub cache, or the Hub when reachable; else why not."""
    from transformers import AutoTokenizer

    try:
        if model == DEFAULT_MODEL:
            converted = cache_dir() / "models" / "SmolLM2-135M-Instruct"
            if (converted / "config.json").is_file():
                return AutoTokenizer.from_pretrained(str(converted))
            gguf = default_model_gguf()
            return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        local = Path(model).expanduser().exists()
        return AutoTokenizer.from_pretrained(
            model, trust_remote_code=trust_remote_code, local_files_only=local or not hub_reachable()
        )
    except (OSError, ValueError, HarnessError) as e:
        if not Path(model).expanduser().exists() and not hub_reachable():
            return "not available offline (not in the local cache)"
        return f"cannot be loaded ({(str(e).strip().splitlines() or [type(e).__name__])[0]})"


def meta_model(config, trust_remote_code: bool = False):
    """The model built from its config on the meta device: every parameter's shape, no memory."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)


@functools.cache
def _accelerate_config(path: str):
    from accelerate.commands.config.config_args import load_config_from_file

    if not Path(path).is_file():
        raise HarnessError(f"--accelerate-config {path}: file not found")
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise HarnessError(
            f"--accelerate-config {path}: malformed YAML ({getattr(e, 'problem', e)})"
        ) from None
    if not isinstance(data, dict):
        raise HarnessError(f"--accelerate-config {path}: expected a mapping of accelerate options (as `accelerate "
                           f"config` writes), got {type(data).__name__}")  # fmt: skip
    try:
        return load_config_from_file(path)
    except Exception as e:  # accelerate raises ValueError / TypeError / yaml errors for a bad file
        raise HarnessError(f"--accelerate-config {path}: {str(e).strip().splitlines()[0]}") from None


@dataclass(frozen=True)
class Launch:
    """How training is spread over processes: how many, by what scheme, and what each process holds only a
    shard of ("": nothing, DDP; "optimizer": ZeRO-1; "gradients": ZeRO-2 / FSDP SHARD_GRAD_OP, with the
    optimizer states; "all": ZeRO-3 / FSDP full shard)."""

    world: int
    scheme: str
    sharded: str = ""
    loading: str = ""  # how each process loads the model: "zero3", "fsdp" or "" (`harness.data.models.sharded_loading`)

    def bytes_per_device(self, weights: float, grads: float, optim: float) -> float:
        n = self.world
        return {
            "all": (weights + grads + optim) / n,
            "gradients": weights + (grads + optim) / n,
            "optimizer": weights + grads + optim / n,
        }.get(self.sharded, weights + grads + optim)


def launch_layout(accelerate_config: str | None) -> Launch:
    """From the accelerate config when given, else from the environment of an `accelerate launch`."""
    if accelerate_config is None:
        world = distributed.world_size()
        return Launch(world, "DDP" if world > 1 else "one process", loading=sharded_loading())
    cfg = _accelerate_config(accelerate_config)
    kind = getattr(cfg.distributed_type, "value", str(cfg.distributed_type))
    world = cfg.num_processes if cfg.num_processes and cfg.num_processes > 0 else 1
    if kind == "DEEPSPEED":
        ds = cfg.deepspeed_config or {}
        stage = ds.get("zero_stage")
        if stage is None and ds.get("deepspeed_config_file"):
            try:
                ds = json.loads(Path(ds["deepspeed_config_file"]).read_text(encoding="utf-8"))
                stage = ds["zero_optimization"]["stage"]
            except (OSError, KeyError, ValueError):
                stage = None  # a file relative to another folder, or without the field: said as ZeRO-?
        sharded = {1: "optimizer", 2: "gradients", 3: "all"}.get(stage, "")
        loading = "zero3" if stage == 3 and ds.get("zero3_init_flag") else ""
        return Launch(world, f"DeepSpeed ZeRO-{stage if stage is not None else '?'}", sharded, loading)
    if kind == "FSDP":
        fsdp = cfg.fsdp_config or {}
        version = int(fsdp.get("fsdp_version", 1))
        if version == 2:
            full = bool(fsdp.get("fsdp_reshard_after_forward", True))
        else:
            full = str(fsdp.get("fsdp_sharding_strategy", "FULL_SHARD")).upper() in ("FULL_SHARD", "1")
        loading = "fsdp" if fsdp.get("fsdp_cpu_ram_efficient_loading") else ""
        return Launch(world, f"FSDP{version} {'full shard' if full else 'gradient shard'}",
                      "all" if full else "gradients", loading)  # fmt: skip
    return Launch(world, "DDP" if world > 1 else "one process")


def _what(cfg: RunConfig, refs: list[TaskRef], ecfg: EvalConfig, root: Path) -> str:
    state = run_state(PlannedRun(cfg, refs, ecfg, run_label(cfg)), root)
    ckpt = latest_checkpoint(Run(root, cfg.training_config()).dir / "checkpoints")
    if ckpt and "train" in state:
        state = state.replace("train", f"resume training from {Path(ckpt).name}", 1)
    return state


def _int(n: float) -> str:
    return f"{n:,.0f}"


def _count(n: float) -> str:
    """8.03B, 135M, 31K."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}" if unit == "B" else f"{n / size:.0f}{unit}"
    return _int(n)


def _bytes(n: float) -> str:
    return f"{n / GIB:.1f} GiB" if n >= GIB / 10 else f"{n / 1024**2:.1f} MiB"


def plan_lines(
    configs: list[RunConfig],
    refs: list[TaskRef],
    ecfg: EvalConfig,
    root: Path,
    accelerate_config: str | None = None,
) -> list[str]:
    """The dry run's report, line by line."""
    launch = launch_layout(accelerate_config)  # a bad file fails before any slow step
    world = launch.world
    lines = [f"plan: {len(configs)} run{'s' * (len(configs) != 1)} in {root}/"]
    width = max(len(c.run_id) for c in configs)
    label_width = max(len(run_label(c)) for c in configs)
    for i, cfg in enumerate(configs, 1):
        lines.append(f"[{i}/{len(configs)}] {cfg.run_id:<{width}}  {run_label(cfg):<{label_width}}  "
                     f"{_what(cfg, refs, ecfg, root)}")  # fmt: skip

    # Evaluation: tasks and items.
    per_bench: dict[str, list[int]] = {}
    unknown = 0
    for ref in refs:
        if ref.benchmark in BENCHMARKS:
            n = item_count(ref.benchmark, ref.lang)
            per_bench.setdefault(f"{ref.benchmark}_{ref.protocol}", []).append(min(n, ecfg.limit or n))
        else:
            unknown += 1
    items = sum(sum(v) for v in per_bench.values())
    lines.append(f"tasks: {len(refs)} ({_int(items)} items, limit {ecfg.limit or 'none'}"
                 + (f", {unknown} lm-eval tasks of unknown size" if unknown else "") + "): "
                 + "; ".join(f"{b} {len(v)} language{'s' * (len(v) != 1)} {_int(sum(v))}"
                             for b, v in per_bench.items()))  # fmt: skip

    first = configs[0]
    config, source = model_config(first.model, first.trust_remote_code)
    text = config.get_text_config(decoder=True)
    model = meta_model(config, first.trust_remote_code)
    params = sum(p.numel() for p in model.parameters())
    lines.append(f"model: {first.model} (config: {source}): {text.model_type}, {text.num_hidden_layers} layers, "
                 f"hidden {text.hidden_size}, vocab {_int(text.vocab_size)}")  # fmt: skip
    lines.append(f"parameters: {_int(params)} ({_count(params)}), built on the meta device")

    training = [c for c in configs if METHODS.get(c.method).trains]
    if not training:
        lines.append("training: none (no method trains)")
        return lines
    settings = TrainSettings.from_dict(first.train)
    examples = training[0].training_examples()
    counts = Counter(ex.lang for ex in examples)
    seeds = sorted({c.seed for c in training})
    lines.append(f"training data: recipe {first.recipe}, {_int(len(examples))} examples in {len(counts)} languages "
                 f"(seed {seeds[0]}{'; other seeds draw samples of the same sizes' if len(seeds) > 1 else ''}): "
                 + ", ".join(f"{lang} {_int(n)}" for lang, n in sorted(counts.items())))  # fmt: skip
    lines.append(f"training settings ({first.profile}): "
                 + " ".join(f"{k}={v}" for k, v in settings.to_dict().items()))  # fmt: skip

    per_device, accum = batch_layout(settings, world)
    run_dir = root / training[0].training_id
    ctx = TrainContext(first.model, [], settings, first.seed, run_dir=run_dir, output_dir=run_dir / "model")
    args = training_arguments(ctx, world_size=world)
    shown = ("per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs", "max_steps",
             "learning_rate", "lr_scheduler_type", "warmup_steps", "weight_decay", "max_grad_norm", "bf16",
             "seed", "train_sampling_strategy", "save_steps", "output_dir")  # fmt: skip
    values = " ".join(f"{k}={getattr(getattr(args, k), 'value', getattr(args, k))}" for k in shown)
    where = f" ({accelerate_config})" if accelerate_config else ""
    lines.append(f"processes: {world}, {launch.scheme}{where}; effective batch {settings.batch_size} = "
                 f"{per_device} per device x {accum} accumulation x {world}")  # fmt: skip
    lines.append(f"TrainingArguments: {values}")

    tokenizer = load_tokenizer_if_at_hand(first.model, first.trust_remote_code)
    if isinstance(tokenizer, str):
        lines.append(
            f"tokenizer: {first.model} {tokenizer}: token counts and examples over the cutoff skipped"
        )
        tokenizer = None
    seen_methods: set[str] = set()
    activations: dict[str, float | None] = {}  # method and options -> its own activation estimate, if any
    laid_out = dataclasses.replace(settings, per_device_batch_size=per_device)  # as each process trains
    for cfg in training:
        method = METHODS.get(cfg.method)(**cfg.method_options)
        method.check_settings(settings)
        notes = method.plan_notes(laid_out, tokenizer, text)
        own = [note.activations for note in notes if isinstance(note, memory.ActivationNote)]
        label = " ".join([cfg.method, *(f"{k}={v}" for k, v in cfg.method_options.items())])  # seeds alike
        activations.setdefault(label, own[0] if own else None)
        for note in notes:
            if note not in seen_methods:
                seen_methods.add(note)
                lines.append(note)
    n_train = len(examples)
    tokens_line = (f"tokens per optimizer step: at most {_int(settings.batch_size * settings.max_length)} "
                   f"(batch {settings.batch_size} x cutoff {settings.max_length}); per device and micro-batch at "
                   f"most {_int(per_device * settings.max_length)}")  # fmt: skip
    if tokenizer is not None:
        stats = SFTDataset(tokenizer, examples, settings.max_length).stats()
        n_train = stats["examples"]
        mean = stats["tokens"] / max(1, n_train)
        tokens_line += (
            f"; about {_int(mean * settings.batch_size)} with these examples ({mean:.0f} tokens each)"
        )
        lines.append(f"tokenised: {_int(stats['tokens'])} tokens in {_int(n_train)} examples; over the cutoff: "
                     f"dropped {stats['dropped_too_long'] or 0}, truncated {stats['truncated'] or 0}")  # fmt: skip
    batches = math.ceil(n_train / (per_device * world))  # per process; the last one is padded
    per_epoch = math.ceil(batches / accum)
    total = settings.max_steps if settings.max_steps > 0 else math.ceil(settings.epochs * per_epoch)
    lines.append(f"optimizer steps: {_int(per_epoch)} per epoch, {_int(total)} in all "
                 f"({_int(n_train)} examples{'' if tokenizer else ' before the cutoff'})")  # fmt: skip
    lines.append(tokens_line)

    weights, grads, optim = params * WEIGHT_BYTES, params * GRAD_BYTES, params * OPTIM_BYTES
    lora = " (lora=true trains adapters only: far less)" if settings.lora else ""
    lines.append(f"memory of full fine-tuning, activations aside{lora}: bf16 weights {_bytes(weights)} + "
                 f"gradients {_bytes(grads)} + optimizer states (fp32 master weights, Adam m and v) "
                 f"{_bytes(optim)} = {_bytes(weights + grads + optim)}; per device"
                 + (f" with {launch.scheme} over {world} processes" if world > 1 else "")
                 + f": {_bytes(launch.bytes_per_device(weights, grads, optim))}")  # fmt: skip
    states = None if settings.lora else launch.bytes_per_device(weights, grads, optim)
    lines += _memory_lines(memory.Shape.of(config), laid_out, launch, states, activations)
    stored = {"bfloat16": 2, "float16": 2}.get(str(getattr(config, "dtype", None) or "").replace("torch.", ""), 4)
    lines.append(memory.host_memory_line(launch.loading, world, params, stored))
    return lines


def _memory_lines(
    shape: memory.Shape,
    settings: TrainSettings,
    launch: Launch,
    states: float | None,
    activations: dict[str, float | None],
) -> list[str]:
    """Activations per GPU (one pass; a method's own estimate is among its notes) and, per method, the total per
    GPU with the fit verdict (not for LoRA, whose states are not those of full fine-tuning): sequences at the
    cutoff, every token after the first a response token (the worst case)."""
    e, batch, seq = 2 if settings.bf16 else 4, settings.per_device_batch_size, settings.max_length
    gc = settings.gradient_checkpointing

    def one_pass(checkpointing: bool) -> float:
        return memory.single_pass(shape, batch, seq, batch * (seq - 1), checkpointing=checkpointing, e=e).peak

    lines = [f"activations per GPU (estimate: harness/training/memory.py, after Korthikanti et al. 2022; "
             f"per-device batch {batch} x cutoff {seq}, every token a response token, {'bf16' if e == 2 else 'float32'}): "
             f"one training pass {_bytes(one_pass(gc))} with gradient checkpointing {'on' if gc else 'off'} "
             f"({_bytes(one_pass(not gc))} {'off' if gc else 'on'})"]  # fmt: skip
    gathered = memory.gathered_bytes(shape) if launch.sharded == "all" else 0.0
    for label, own in activations.items() if states is not None else ():
        budget = memory.Budget(states, one_pass(gc) if own is None else own, gathered)
        parts = f"model states {_bytes(states)}" + (f" + gathered parameters {_bytes(gathered)}" if gathered else "")
        lines.append(f"memory per GPU, {label}: {parts} + activations {_bytes(budget.activations)} = "
                     f"{_bytes(budget.total)}: {budget.verdict()}")  # fmt: skip
    return lines


def print_plan(
    configs: list[RunConfig],
    refs: list[TaskRef],
    ecfg: EvalConfig,
    root: Path,
    accelerate_config: str | None = None,
) -> None:
    """Print the plan (once: in the main process of an `accelerate launch`)."""
    if distributed.is_main():
        print("\n".join(plan_lines(configs, refs, ecfg, root, accelerate_config)))
