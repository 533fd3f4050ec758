"""Vanilla SFT: supervised fine-tuning on the multilingual instruction data as it is.

The baseline of the CC-Tuning paper (Ye et al., ACL 2025): next-token cross-entropy on the response
tokens of each chat-templated example, prompt tokens masked, full fine-tuning (LoRA optional through
the `lora` training setting).
"""

from __future__ import annotations

import logging

from harness.core.method import Method, checkpoint_owner, register_method
from harness.training.settings import TrainContext
from harness.training.trainer import SFTDataset, load_for_training, run_trainer

log = logging.getLogger(__name__)


@register_method("vanilla")
class Vanilla(Method):
    description = "Supervised fine-tuning on the instruction data as it is (prompt masked, response-only loss)."

    def train(self, ctx: TrainContext) -> None:
        # Data-level subclasses (aug_en, aug_mt, sdrrl) override prepare_examples; it runs before the model
        # is loaded, so a method that generates with the base model (sdrrl) never holds two copies.
        examples = self.prepare_examples(ctx.examples, ctx)
        tokenizer, model = load_for_training(ctx)
        dataset = SFTDataset(tokenizer, examples, ctx.settings.max_length)
        log.info("training data: %s", dataset.stats())
        ctx.extra["data_stats"] = dataset.stats()
        run_trainer(ctx, model, tokenizer, dataset)


@register_method("none")
class NoTraining(Method):
    description = "No training: evaluates the base model as it is (the zero-shot row of every report)."
    trains = False

    def train(self, ctx: TrainContext) -> None:  # nothing to train
        return None

    def make_lm(self, checkpoint: str, **lm_kwargs):
        """A checkpoint a method owns (CC-Tuning's holds `cc.safetensors`) is evaluated with that method's
        evaluator at its default options; any other with lm-eval's `HFLM`."""
        owner = checkpoint_owner(checkpoint)
        if owner is not None and owner is not type(self):
            return owner().make_lm(checkpoint, **lm_kwargs)
        return super().make_lm(checkpoint, **lm_kwargs)
