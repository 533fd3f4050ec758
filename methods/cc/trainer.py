"""The transformers Trainer for CC-Tuning: CCModel's loss, the Decision Maker's per-step diagnostics
in the run's log, and checkpoints for a model that is not a PreTrainedModel and may tie its embeddings.

Kept apart from `methods/cc/method.py` because importing `transformers.Trainer` takes seconds, which listing
methods should not pay.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback

from harness.methods.cc.model import histogram_entropy
from harness.training.reporting import report_scalars


class _LayerChoiceLog(TrainerCallback):
    """After every optimizer step, appends the step's Decision Maker diagnostics to the run's log:
    the chosen-layer histogram, its entropy, and the mean entropy of the DM's softmax; and sends them to
    the loggers of the `report_to` setting as scalars (`layer_scalars`)."""

    def __init__(self, trainer: CCTrainer, path: Path | None) -> None:
        self.trainer = trainer
        self.path = path

    def on_step_end(self, args, state, control, **kwargs):
        counts, dm_entropy = self.trainer.pop_layer_choices()
        row = {"cc_layer_hist": counts, "cc_layer_entropy": histogram_entropy(counts)}
        if dm_entropy is not None:
            row["cc_dm_entropy"] = dm_entropy
        if state.is_world_process_zero and self.path is not None:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": state.global_step, **row}) + "\n")
        report_scalars(self.trainer, args, state, control, layer_scalars(row))


def layer_scalars(row: dict) -> dict[str, float]:
    """A log row's diagnostics as scalars for TensorBoard / wandb: the entropies as they are, and the
    histogram as one count per layer (`cc_layer_hist/<layer>`)."""
    scalars = {key: value for key, value in row.items() if key != "cc_layer_hist"}
    return {**scalars, **{f"cc_layer_hist/{layer}": n for layer, n in enumerate(row["cc_layer_hist"])}}


class CCTrainer(Trainer):
    """The Trainer with CCModel's loss, per-step layer-choice diagnostics, and a checkpoint format for a
    model that is not a PreTrainedModel and may tie its embeddings."""

    def __init__(self, *args, diagnostics_path: Path | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._layer_counts = torch.zeros(self.model.num_layers, dtype=torch.long)
        self._dm_entropy: list[float] = []
        self.add_callback(_LayerChoiceLog(self, diagnostics_path))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(
            model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
        )
        if model.training:
            self._layer_counts += torch.bincount(
                outputs.layer_choice.cpu(), minlength=len(self._layer_counts)
            )
            if outputs.dm_entropy is not None:
                self._dm_entropy.extend(outputs.dm_entropy.tolist())
        return (loss, outputs) if return_outputs else loss

    def pop_layer_choices(self) -> tuple[list[int], float | None]:
        """The layer histogram and mean DM entropy since the last call (one optimizer step), over the
        examples of every process when training is data parallel (every process calls this each step)."""
        counts = self._layer_counts
        entropy_sum = torch.tensor([sum(self._dm_entropy), len(self._dm_entropy)], dtype=torch.float64)
        if self.accelerator.num_processes > 1:
            device = self.accelerator.device
            counts = self.accelerator.reduce(counts.to(device), "sum").cpu()
            entropy_sum = self.accelerator.reduce(entropy_sum.to(device), "sum").cpu()
        total, n = entropy_sum.tolist()
        counts, entropy = counts.tolist(), (total / n if n else None)
        self._layer_counts.zero_()
        self._dm_entropy.clear()
        return counts, entropy

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        from safetensors.torch import save_file, save_model

        if not self.args.should_save:
            return
        output_dir = output_dir or self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        path = os.path.join(output_dir, "model.safetensors")  # read back by Trainer._load_from_checkpoint
        if state_dict is None:  # save_model drops the duplicate names of tied weights
            save_model(self.accelerator.unwrap_model(self.model), path, metadata={"format": "pt"})
        else:
            save_file(
                {k: v.detach().clone().contiguous() for k, v in state_dict.items()},
                path,
                metadata={"format": "pt"},
            )
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        from safetensors.torch import load_model

        path = os.path.join(resume_from_checkpoint, "model.safetensors")
        # a checkpoint of another format (FSDP, DeepSpeed) loads the Trainer's own way
        if not os.path.isfile(path):
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        load_model(model or self.model, path)  # strict, and aware of the tied names `_save` dropped
