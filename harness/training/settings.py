"""Training settings (the paper's defaults and the CPU profile), their validation, the batch layout over
processes, and `TrainContext`: what a method receives to train. No torch at import time."""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from harness.data.base import Example
from harness.plumbing.errors import HarnessError, near, unknown
from harness.plumbing.values import typed_like


@dataclass(frozen=True)
class TrainSettings:
    """Training hyper-parameters. Defaults are the CC-Tuning paper's (full fine-tuning, lr 1e-5, cosine,
    warm-up 0.1, 3 epochs, batch 16, bf16, cutoff 1024); `PROFILES["cpu"]` scales them down."""

    epochs: float = 3.0
    learning_rate: float = 1e-5
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.1
    batch_size: int = 16  # effective batch: per_device_batch_size x gradient accumulation x processes
    per_device_batch_size: int = 4
    max_length: int = 1024
    bf16: bool = True
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    logging_steps: int = 5
    save_steps: int = 100
    max_steps: int = -1  # > 0 overrides epochs (for smoke tests)
    # recompute each decoder layer's activations in the backward pass instead of storing them, as the
    # paper's runs did (LLaMA-Factory's default); re-entrant (torch's `use_reentrant=True`) as there
    gradient_checkpointing: bool = True
    gradient_checkpointing_reentrant: bool = True
    # where the Trainer also sends its logs besides train_log.jsonl: "none", "tensorboard" (into
    # <run>/tensorboard/), "wandb" (its files under the run folder) or "tensorboard,wandb". How a run is
    # watched, not what it trains: left out of the run id (`WATCH_SETTINGS`).
    report_to: str = "none"

    def __post_init__(self) -> None:
        object.__setattr__(self, "report_to", ",".join(report_integrations(self.report_to)) or "none")

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "training settings") -> TrainSettings:
        defaults = {f.name: f.default for f in fields(cls)}
        for key in values:
            if key not in defaults:
                raise unknown("training setting", key, defaults, where)
        typed = {key: _typed(key, value, defaults[key], where) for key, value in values.items()}
        if "report_to" in typed:
            report_integrations(typed["report_to"], where)
        settings = cls(**typed)
        if settings.lr_scheduler not in COMMON_SCHEDULERS:  # ask transformers (~4 s to import) only then
            from transformers.trainer_utils import SchedulerType

            valid = [t.value for t in SchedulerType]
            if settings.lr_scheduler not in valid:
                raise unknown("lr_scheduler", settings.lr_scheduler, valid, where)
        for key, (ok, expected) in RANGES.items():
            value = getattr(settings, key)
            if not ok(value) and not (key == "epochs" and settings.max_steps >= 1):
                raise HarnessError(f"training setting {key}={values.get(key, value)!r} in {where}: {expected} "
                                   f"(default: {defaults[key]})")  # fmt: skip
        return settings

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def integrations(self) -> tuple[str, ...]:
        """The loggers of `report_to` (empty for "none")."""
        return report_integrations(self.report_to)


# Schedulers that every transformers version since 4.30 has (others are checked against the installed one).
COMMON_SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial")

# The valid range of each numeric setting, checked before any work (a negative epoch count would train
# zero steps and store the untrained model as a finished run).
RANGES: dict[str, tuple[Any, str]] = {
    "epochs": (lambda v: v > 0, "must be above 0 (or give max_steps)"),
    "learning_rate": (lambda v: v > 0, "must be above 0"),
    "warmup_ratio": (lambda v: 0 <= v <= 1, "must be a ratio from 0 to 1"),
    "batch_size": (lambda v: v >= 1, "must be at least 1"),
    "per_device_batch_size": (lambda v: v >= 1, "must be at least 1"),
    "max_length": (lambda v: v >= 1, "must be at least 1 token"),
    "weight_decay": (lambda v: v >= 0, "must be 0 or above"),
    "max_grad_norm": (lambda v: v >= 0, "must be 0 (no clipping) or above"),
    "lora_r": (lambda v: v >= 1, "must be at least 1"),
    "lora_alpha": (lambda v: v > 0, "must be above 0"),
    "lora_dropout": (lambda v: 0 <= v < 1, "must be from 0 up to (not including) 1"),
    "logging_steps": (lambda v: v >= 1, "must be at least 1"),
    "save_steps": (lambda v: v >= 1, "must be at least 1"),
    "max_steps": (lambda v: v == -1 or v >= 1, "must be -1 (train for `epochs`) or at least 1"),
}

# Training settings that change how a run is watched, not the model it trains: `RunConfig.identity` leaves
# them out, so that turning TensorBoard on does not train the same model again (an existing run is reused,
# and only a run that trains writes logs).
WATCH_SETTINGS = ("report_to",)

# report_to name -> (the module to find, the pip package to install)
INTEGRATIONS: dict[str, tuple[str, str]] = {
    "tensorboard": ("tensorboard", "tensorboard"),
    "wandb": ("wandb", "wandb"),
}


def report_integrations(value: Any, where: str = "training settings") -> tuple[str, ...]:
    """The loggers a `report_to` value names: "none", one of `INTEGRATIONS`, or a comma list of them (a
    list from a YAML file too); each once, in the order given."""
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    names = [str(item).strip().lower() for item in items]
    valid = f"expected none, {', '.join(INTEGRATIONS)} or a comma list of them (e.g. tensorboard,wandb)"
    if names == ["none"]:
        return ()
    wrong = [name for name in names if name not in INTEGRATIONS]
    if wrong:
        hint = near(wrong[0], [*INTEGRATIONS, "none"]) if wrong[0] not in ("", "none") else ""
        raise HarnessError(f"training setting report_to={value!r} in {where}{hint}: {valid}")
    return tuple(dict.fromkeys(names))


def check_report_packages(settings: TrainSettings, where: str = "--set report_to") -> None:
    """One error line naming the pip package to install when a logger of `report_to` is missing."""
    for name in settings.integrations:
        module, package = INTEGRATIONS[name]
        if importlib.util.find_spec(module) is None:
            raise HarnessError(
                f"{where}={settings.report_to}: the {package} package is not installed; install it with "
                f"`pip install {package}` (or this project's extra: `pip install -e '.[logging]'`), "
                "or train with --set report_to=none"
            )


def _typed(key: str, value: Any, default: Any, where: str) -> Any:
    if key == "report_to" and isinstance(value, list | tuple):  # a YAML list: [tensorboard, wandb]
        value = ",".join(map(str, value))
    try:
        return typed_like(value, default)
    except ValueError as e:
        raise HarnessError(
            f"training setting {key}={value!r} in {where}: expected {e} (default: {default})"
        ) from None


# The paper's setting targets 7-8B models on GPUs; the CPU profile makes the default model learn in
# minutes on 2 cores: two epochs, a higher learning rate for a 135M model, gradient checkpointing as in
# the paper's runs (re-entrant; it lowers the main job's peak memory far more than it costs in time:
# bench/RESULTS.md, "Training memory"), and a 512-token cutoff
# (the English-centric tokenizer needs ~190 tokens for a Hindi SIB-200 prompt and ~370 for a Telugu
# one, against ~90 for English: a shorter cutoff silently drops whole languages). Dropped and truncated
# examples are counted per language in the run's data stats.
PROFILES: dict[str, TrainSettings] = {
    "paper": TrainSettings(),
    "cpu": TrainSettings(
        epochs=2.0,
        learning_rate=1e-4,
        batch_size=8,
        per_device_batch_size=8,
        max_length=512,
    ),
}


def default_profile() -> str:
    import torch

    return "paper" if torch.cuda.is_available() else "cpu"


@dataclass
class TrainContext:
    """What a method receives to train: the base model, the examples, and where to write."""

    base_model: str  # a loadable reference: local checkpoint folder or Hub id
    examples: list[Example]
    settings: TrainSettings
    seed: int
    run_dir: Path  # checkpoints go to run_dir/checkpoints, the log to run_dir/train_log.jsonl
    output_dir: Path  # the final checkpoint (run_dir/model)
    trust_remote_code: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def log_path(self) -> Path:
        return self.run_dir / "train_log.jsonl"


def batch_layout(settings: TrainSettings, world_size: int = 1) -> tuple[int, int]:
    """(per-device batch, gradient accumulation steps) whose product with `world_size` is exactly the
    effective `batch_size`; the per-device batch is lowered when the processes would exceed it (the paper's
    batch 16 on 8 GPUs: 2 per device, no accumulation)."""
    per_device = min(settings.per_device_batch_size, max(1, settings.batch_size // world_size))
    accum, rest = divmod(settings.batch_size, per_device * world_size)
    if accum < 1 or rest:
        raise HarnessError(
            f"batch_size {settings.batch_size} is not a multiple of per_device_batch_size x processes "
            f"({per_device} x {world_size}); choose values with --set batch_size=N --set per_device_batch_size=N"
        )
    return per_device, accum


def resolve_settings(profile: str, overrides: dict[str, Any]) -> TrainSettings:
    """The profile's settings with the `--set` / config overrides, checked before any work (the loggers of
    `report_to` installed, too)."""
    if profile not in PROFILES:
        raise unknown("training profile", profile, PROFILES, "--profile")
    settings = TrainSettings.from_dict({**PROFILES[profile].to_dict(), **overrides}, where="--set / config")
    check_report_packages(settings)
    return settings
