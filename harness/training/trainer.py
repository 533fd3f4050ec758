"""Shared training machinery: settings, tokenised SFT data, and a `transformers.Trainer` run with
checkpoint resume, a JSONL training log, optional LoRA, and an atomic final save.

Every method trains through `run_trainer`; a method that needs its own loss passes a Trainer
subclass overriding `compute_loss` (CC-Tuning does). No hand-written training loop.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.data.base import Example
from harness.data.chat import encode_example
from harness.data.models import check_same_model, load_model, load_tokenizer, sharded_loading
from harness.plumbing import faults
from harness.plumbing.errors import HarnessError
from harness.plumbing.io import atomic_write_text
from harness.training import distributed
from harness.training.loss import full_logits, response_logits, response_loss_func
from harness.training.reporting import place_loggers, wandb_run
from harness.training.settings import TrainContext, TrainSettings, batch_layout, check_report_packages

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


class SFTDataset:
    """Tokenised examples with the prompt masked out of the labels; per-language counts of examples
    dropped (the prompt alone exceeds `max_length`) and truncated (the response was cut). A map-style
    dataset (`len` and indexing) as the transformers Trainer takes it; torch is imported only to batch.

    Subclasses add fields per example by overriding `encode` (CC-Tuning adds the English prompt)."""

    def __init__(self, tokenizer, examples: list[Example], max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.items: list[dict[str, Any]] = []
        self.dropped: Counter[str] = Counter()
        self.truncated: Counter[str] = Counter()
        for ex in examples:
            item = self.encode(ex)
            if item is None:
                self.dropped[ex.lang] += 1
                continue
            self.truncated[ex.lang] += item.pop("truncated")
            self.items.append(item)
        if not self.items:
            raise HarnessError(
                f"no training example fits max_length={max_length} tokens; raise it with --set max_length=N"
            )
        if self.dropped:
            log.warning("dropped %d examples longer than %d tokens: %s", sum(self.dropped.values()),
                        max_length, dict(self.dropped))  # fmt: skip

    def encode(self, ex: Example) -> dict[str, Any] | None:
        """One example's fields (with a `truncated` flag), or None to drop it."""
        enc = encode_example(self.tokenizer, ex.instruction, ex.output, self.max_length)
        if enc is None:
            return None
        return {"input_ids": enc.input_ids, "labels": enc.labels, "rst": enc.prompt_len - 1,
                "truncated": enc.truncated}  # fmt: skip

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]

    def stats(self) -> dict[str, Any]:
        return {
            "examples": len(self.items),
            "tokens": sum(len(it["input_ids"]) for it in self.items),
            "max_length": self.max_length,
            "dropped_too_long": dict(sorted(self.dropped.items())),
            "truncated": dict(sorted((k, v) for k, v in self.truncated.items() if v)),
        }


def pad_collate(pad_token_id: int):
    """Right-pad every list-valued field: `*input_ids` with the pad id (+ a matching `*attention_mask`),
    `*labels` with -100; scalar fields become tensors. Right padding keeps each RST index unchanged."""
    import torch

    def collate(batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for key in batch[0]:
            values = [b[key] for b in batch]
            if not isinstance(values[0], list):
                out[key] = torch.tensor(values)
                continue
            width = max(len(v) for v in values)
            fill = -100 if key.endswith("labels") else pad_token_id
            out[key] = torch.tensor([v + [fill] * (width - len(v)) for v in values])
            if key.endswith("input_ids"):
                mask_key = key[: -len("input_ids")] + "attention_mask"
                out[mask_key] = torch.tensor([[1] * len(v) + [0] * (width - len(v)) for v in values])
        return out

    return collate


def apply_lora(model, settings: TrainSettings, modules_to_save: list[str] | None = None):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules="all-linear",
        modules_to_save=modules_to_save,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def enable_gradient_checkpointing(model, use_reentrant: bool = True) -> None:
    """Gradient checkpointing of a transformers model's decoder layers (`activation_checkpointing_enable`,
    or its older name), re-entrant or not. transformers also makes the input embeddings' output require
    grad (`enable_input_require_grads`), so that frozen embeddings (LoRA) still pass the gradient into
    re-entrant checkpoints."""
    kwargs = {"use_reentrant": use_reentrant}
    enable = getattr(model, "activation_checkpointing_enable", None)
    try:
        if enable is not None:
            enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    except ValueError as e:  # transformers: "X does not support activation checkpointing"
        raise HarnessError(
            f"gradient_checkpointing=true: {e}; train with --set gradient_checkpointing=false"
        ) from None


def load_for_training(ctx: TrainContext):
    """The base model's tokenizer and model, wrapped with LoRA adapters when the settings ask for them.

    Under an `accelerate launch` with DeepSpeed ZeRO-3 and `zero3_init_flag`, or FSDP with
    `fsdp_cpu_ram_efficient_loading` (`sharded_loading`), the TrainingArguments come first, as transformers
    asks for sharded training: they join the process group and (ZeRO-3) keep the `HfDeepSpeedConfig` alive
    under which `from_pretrained` partitions the weights while loading them, so that no process holds the
    whole model in host RAM; under FSDP only rank 0 reads the weights, the others build on the meta device
    and receive theirs from it when accelerate wraps the model. `run_trainer` trains with those arguments
    (`ctx.extra["training_args"]`). Elsewhere every process loads the whole model, as before."""
    tokenizer = load_tokenizer(ctx.base_model, ctx.trust_remote_code)
    mode = sharded_loading()
    if mode:
        args = training_arguments(ctx, world_size=distributed.world_size())
        _ = args.device  # sets up the process group (ZeRO-3 partitions over it while loading)
        ctx.extra["training_args"] = args
        log.info("loading %s sharded (%s)", ctx.base_model, mode)
    on_meta = mode == "fsdp" and distributed.rank() != 0  # accelerate broadcasts rank 0's weights
    model = load_model(ctx.base_model, trust_remote_code=ctx.trust_remote_code, on_meta=on_meta)
    return tokenizer, apply_lora(model, ctx.settings) if ctx.settings.lora else model


@functools.cache
def sft_trainer_class():
    """`transformers.Trainer` with the loss over the response tokens only (`harness.training.loss`): the
    output layer sees the response positions alone, the loss is the Trainer's `compute_loss_func`, so
    gradient accumulation and the token count over processes are the Trainer's own. The default trainer of
    `run_trainer`; `HARNESS_FULL_LOGITS=1` gives the plain Trainer's full logits. (A function, so that
    importing this module does not import transformers' Trainer.)"""
    from transformers import Trainer

    class SFTTrainer(Trainer):
        def __init__(self, *args, **kwargs) -> None:
            if not full_logits():
                kwargs.setdefault("compute_loss_func", response_loss_func)
            super().__init__(*args, **kwargs)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if self.compute_loss_func is not response_loss_func or "labels" not in inputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            with response_logits(self.accelerator.unwrap_model(model), inputs["labels"]):
                inputs = {**inputs, "use_cache": False}
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    return SFTTrainer


def _log_callback(path: Path, checkpoint_at_end: bool):
    from transformers import TrainerCallback

    class JsonlLogger(TrainerCallback):
        """Appends each log record to the run's train_log.jsonl. With `checkpoint_at_end`, also saves a
        checkpoint at the last step, so a run killed after training (while CC-Tuning fits W_T, which takes
        minutes) does not train again; for a plain save of a few seconds it is not worth its cost."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                with open(path, "a", encoding="utf-8") as f:
                    f.write(json.dumps({"step": state.global_step, **logs}, default=float) + "\n")
                    f.flush()
                    os.fsync(f.fileno())

        def on_step_end(self, args, state, control, **kwargs):
            if checkpoint_at_end and state.max_steps > 0 and state.global_step >= state.max_steps:
                control.should_save = True

        def on_save(self, args, state, control, **kwargs):
            faults.point("train_step")

    return JsonlLogger()


def truncate_log(path: Path, step: int) -> None:
    """Drop the log records after `step` (written after the checkpoint a resumed run starts from)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
        if record.get("step", 0) <= step:
            kept.append(line + "\n")
    atomic_write_text(path, "".join(kept))


def _finished(checkpoint: str) -> bool:
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))
    return state.get("max_steps", 0) > 0 and state.get("global_step", 0) >= state["max_steps"]


def latest_checkpoint(folder: Path) -> str | None:
    if not folder.is_dir():
        return None
    ckpts = [p for p in folder.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return str(max(ckpts, key=lambda p: int(p.name.split("-")[1]))) if ckpts else None


def training_arguments(ctx: TrainContext, world_size: int = 1):
    import torch
    from transformers import TrainingArguments

    s = ctx.settings
    per_device, accum = batch_layout(s, world_size)
    return TrainingArguments(
        output_dir=str(ctx.run_dir / "checkpoints"),
        num_train_epochs=s.epochs,
        max_steps=s.max_steps,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accum,
        learning_rate=s.learning_rate,
        lr_scheduler_type=s.lr_scheduler,
        warmup_steps=s.warmup_ratio,
        weight_decay=s.weight_decay,
        max_grad_norm=s.max_grad_norm,
        bf16=s.bf16,
        use_cpu=not torch.cuda.is_available(),
        logging_steps=s.logging_steps,
        save_strategy="steps",
        save_steps=s.save_steps,
        save_total_limit=1,
        seed=ctx.seed,
        data_seed=ctx.seed,
        train_sampling_strategy="group_by_length",
        remove_unused_columns=False,
        report_to=list(s.integrations) or "none",  # their folders: `harness.training.reporting`
        run_name=ctx.run_dir.name,  # the run id names the run in wandb
        # checkpointed layers run their forward twice: DDP must not look for unused parameters
        ddp_find_unused_parameters=False if s.gradient_checkpointing else None,
        disable_tqdm=False,
        dataloader_num_workers=0,
    )


def run_trainer(
    ctx: TrainContext,
    model,
    tokenizer,
    dataset: SFTDataset,
    trainer_cls=None,
    collator=None,
    save_fn=None,
    checkpoint_at_end: bool = False,
    **trainer_kwargs,
):
    """Train with `trainer_cls` (default `sft_trainer_class()`: the loss over response tokens only), resuming
    from the newest checkpoint in `run_dir/checkpoints`, then save the final model atomically into
    `ctx.output_dir`.

    `save_fn(model, tokenizer, folder)` replaces the default save (merged LoRA weights + tokenizer).
    `checkpoint_at_end`: also checkpoint the last step (for a save_fn that takes long).
    """
    check_report_packages(ctx.settings)  # before the Trainer fails on it, with the package to install
    trainer_cls = trainer_cls or sft_trainer_class()
    if ctx.settings.gradient_checkpointing:  # here, not by the Trainer: a method's own model may wrap it
        enable_gradient_checkpointing(model, ctx.settings.gradient_checkpointing_reentrant)
    # the arguments a sharded load was made under (`load_for_training`), else new ones
    args = ctx.extra.pop("training_args", None) or training_arguments(ctx, world_size=distributed.world_size())
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator or pad_collate(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=[_log_callback(ctx.log_path, checkpoint_at_end)],
        **trainer_kwargs,
    )
    resume = latest_checkpoint(ctx.run_dir / "checkpoints")
    resumed_step = int(Path(resume).name.split("-")[1]) if resume else 0
    main = trainer.is_world_process_zero()  # the one process that writes the run's files
    if resume:
        check_same_model(resume, ctx.base_model)
        log.info("resuming training from %s", resume)
        if main:
            truncate_log(ctx.log_path, resumed_step)
    elif main and ctx.log_path.exists():
        ctx.log_path.unlink()  # a log of steps no checkpoint holds: training starts over
    if resume and _finished(resume):
        # Killed after the last step (while saving or fitting W_T): load the final state and save again.
        # Trainer.train() would run one more step past max_steps when resumed at the very end.
        trainer._load_from_checkpoint(resume)
        result = None
    else:
        if main:
            place_loggers(trainer, ctx.run_dir, resumed_step)
        with wandb_run(ctx, main):
            result = trainer.train(resume_from_checkpoint=resume)
    trainer.accelerator.wait_for_everyone()  # every process has written its part of the last checkpoint
    # ZeRO-3 / FSDP shard the weights: every process takes part in gathering them, the main one saves.
    sharded = trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled
    state_dict = trainer.accelerator.get_state_dict(trainer.model_wrapped) if sharded else None
    if main:
        model = trainer.accelerator.unwrap_model(trainer.model)
        save_atomically(model, tokenizer, ctx.output_dir, save_fn, state_dict)
        shutil.rmtree(ctx.run_dir / "checkpoints", ignore_errors=True)
    trainer.accelerator.wait_for_everyone()  # the others see the saved model before going on
    return result


def save_atomically(model, tokenizer, out_dir: Path, save_fn=None, state_dict: dict | None = None) -> None:
    """Save into a temporary folder, then rename it to `out_dir`. `state_dict`: the full weights gathered
    from a sharded model (ZeRO-3, FSDP), whose own parameters are only this process's shard."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        extra = {} if state_dict is None else {"state_dict": state_dict}
        if save_fn is not None:
            save_fn(model, tokenizer, tmp, **extra)
        else:
            save_model(model, tokenizer, tmp, **extra)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_model(model, tokenizer, folder: Path, state_dict: dict | None = None) -> None:
    """Save a plain HF checkpoint (safetensors); LoRA adapters are merged into the weights first so
    every evaluator can load the result without peft. `state_dict`: gathered weights of a sharded model."""
    if hasattr(model, "merge_and_unload"):
        if state_dict is not None:
            raise HarnessError("lora=true with ZeRO-3 or FSDP sharding is not supported; use DDP")
        model = model.merge_and_unload()
    if state_dict is not None:
        state_dict = drop_tied_copies(model, state_dict)
    model.save_pretrained(folder, safe_serialization=True, state_dict=state_dict)
    tokenizer.save_pretrained(folder)


def drop_tied_copies(model, state_dict: dict) -> dict:
    """`state_dict` without the second names of tied parameters (e.g. `lm_head.weight` tied to the input
    embeddings): a gathered state dict holds one copy per name, which the checkpoint would store twice."""
    every = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    first = {name for name, _ in model.named_parameters()}
    return {k: v for k, v in state_dict.items() if k not in every - first}
