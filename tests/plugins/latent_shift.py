"""Latent shift (`shift`): vanilla SFT, then a mean English-minus-native shift added to the residual stream
at evaluation. The second worked example of docs/adding-a-method.md: a latent-level method in one module.

After training, for every non-English training instruction and its English parallel, the hidden state after
decoder layer `layer` at the last prompt token is taken from the trained model; the shift is the mean
difference v = mean(h_en - h_x), saved beside the checkpoint (`shift.safetensors`, `shift.json`). At
evaluation, `alpha * v` is added to the output of that layer at every position (`ShiftLM`): `alpha=0` is the
SFT model, `alpha=1` moves a non-English prompt's state on average onto its English parallel's.

It uses every part of the method protocol a latent method needs: an evaluator of its own (`make_lm`, and
`owns_checkpoint` so that `harness eval` of a bare checkpoint folder picks it), an evaluation-time option
(`alpha`: runs that differ only in it share one trained model), run artifacts, a dry-run note and a report
figure (accuracy against alpha). It is a plugin of the tests, registered by them, not shipped in `methods/`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from lm_eval.models.huggingface import HFLM
from safetensors.torch import load_file, save_file

from harness.core.method import register_method
from harness.data.chat import encode_prompt
from harness.methods.vanilla import Vanilla
from harness.plumbing.errors import HarnessError
from harness.plumbing.io import atomic_write_json
from harness.reports import plots
from harness.reports.figures import Figure, FigureContext, non_en_average
from harness.training.settings import TrainContext, TrainSettings
from harness.training.trainer import SFTDataset, load_for_training, run_trainer, save_model

SHIFT_WEIGHTS = "shift.safetensors"
SHIFT_META = "shift.json"
ARTIFACTS = "shift_artifacts.json"


def decoder_layers(model) -> torch.nn.ModuleList:
    """The decoder layers of a Llama-style causal LM (the tests' tiny model, SmolLM2)."""
    return model.model.layers


@torch.no_grad()
def last_token_states(model, tokenizer, texts: list[str], layer: int) -> torch.Tensor:
    """The hidden state after decoder layer `layer` at the last token of each chat-templated prompt."""
    rows = []
    for text in texts:
        ids = torch.tensor([encode_prompt(tokenizer, text)], device=model.device)
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states  # [embeddings, layer 0, ...]
        rows.append(hidden[layer + 1][0, -1].float())
    return torch.stack(rows)


class ShiftLM(HFLM):
    """lm-eval's HFLM with `alpha * v` added to the output of decoder layer `layer` (from the checkpoint)."""

    def __init__(self, pretrained: str, alpha: float = 1.0, **kwargs: Any) -> None:
        super().__init__(pretrained=pretrained, **kwargs)
        folder = Path(pretrained)
        self.layer = json.loads((folder / SHIFT_META).read_text(encoding="utf-8"))["layer"]
        self.alpha = alpha
        self.forwards = 0
        vector = load_file(str(folder / SHIFT_WEIGHTS))["vector"].to(self.model.device)

        def add_shift(module, args, output):
            self.forwards += 1
            hidden = output[0] if isinstance(output, tuple) else output
            shifted = hidden + alpha * vector.to(hidden.dtype)
            return (shifted, *output[1:]) if isinstance(output, tuple) else shifted

        decoder_layers(self.model)[self.layer].register_forward_hook(add_shift)

    def artifacts(self) -> dict[str, Any]:
        """Written by the pipeline into the run's `eval_artifacts.json`."""
        return {"method": "shift", "alpha": self.alpha, "layer": self.layer, "shifted_forwards": self.forwards}


@register_method("shift")
class LatentShift(Vanilla):
    description = "Vanilla SFT, then the mean English-minus-native hidden state added at layer `layer` (x alpha)."
    requires_english = True
    defaults = {"layer": 0, "alpha": 1.0}
    eval_options = frozenset({"alpha"})

    def check_examples(self, examples) -> None:
        super().check_examples([ex for ex in examples if ex.lang != "en"])

    def plan_notes(self, settings: TrainSettings, tokenizer=None, model_config=None) -> list[str]:
        where = f"after decoder layer {self.options['layer']}"
        if model_config is not None and self.options["layer"] >= model_config.num_hidden_layers:
            raise HarnessError(f"option layer={self.options['layer']} of method 'shift': the model has "
                               f"{model_config.num_hidden_layers} decoder layers")  # fmt: skip
        return [f"shift: the mean English-minus-native state {where}, added x {self.options['alpha']} at evaluation"]

    def train(self, ctx: TrainContext) -> None:
        examples = self.prepare_examples(ctx.examples, ctx)
        self.check_examples(examples)
        pairs = [(ex.instruction, ex.instruction_en) for ex in examples if ex.lang != "en"]
        tokenizer, model = load_for_training(ctx)
        layer = self.options["layer"]
        if not 0 <= layer < len(decoder_layers(model)):
            raise HarnessError(f"option layer={layer} of method 'shift': the model has {len(decoder_layers(model))} "
                               "decoder layers")  # fmt: skip
        dataset = SFTDataset(tokenizer, examples, ctx.settings.max_length)
        ctx.extra["data_stats"] = dataset.stats()

        def save(model, tokenizer, folder: Path, state_dict: dict | None = None) -> None:
            save_model(model, tokenizer, folder, state_dict=state_dict)
            model.eval()
            native = last_token_states(model, tokenizer, [p[0] for p in pairs], layer)
            english = last_token_states(model, tokenizer, [p[1] for p in pairs], layer)
            vector = (english - native).mean(0)
            save_file({"vector": vector.cpu().contiguous()}, str(folder / SHIFT_WEIGHTS))
            atomic_write_json(folder / SHIFT_META, {"layer": layer, "pairs": len(pairs)})
            atomic_write_json(ctx.run_dir / ARTIFACTS, {"layer": layer, "pairs": len(pairs), "norm": float(vector.norm())})

        run_trainer(ctx, model, tokenizer, dataset, save_fn=save)

    @classmethod
    def owns_checkpoint(cls, folder: Path) -> bool:
        return (Path(folder) / SHIFT_WEIGHTS).is_file()

    def make_lm(self, checkpoint: str, **lm_kwargs: Any):
        return ShiftLM(pretrained=checkpoint, alpha=self.options["alpha"], **lm_kwargs)

    @classmethod
    def report_figures(cls, ctx: FigureContext) -> dict[str, list[Figure]]:
        """Per benchmark: the average non-English score against alpha (one trained model per seed)."""
        runs = ctx.runs_of("shift")
        figures = []
        for bench in ctx.benches:
            avg = non_en_average(ctx.frame, bench)
            points: dict[float, list[float]] = defaultdict(list)
            for run in runs:
                if run.name in avg.index and avg[run.name] == avg[run.name]:  # not NaN
                    points[float(run.resolved_options()["alpha"])].append(float(avg[run.name]))
            if len(points) < 2:
                continue
            alphas = sorted(points)
            means = [sum(points[a]) / len(points[a]) for a in alphas]
            spread = [(max(points[a]) - min(points[a])) / 2 for a in alphas]
            path = plots.against([plots.Curve("shift", alphas, means, spread)], {}, f"{bench.bench}: accuracy against alpha",
                                 "alpha", f"{bench.metric} x 100, avg non-en", ctx.out / "plots" / f"shift_{bench.bench}.png")  # fmt: skip
            figures.append(Figure(ctx.relative(path), bench.bench, "alpha = 0 is the fine-tuned model without the shift"))
        return {"latent shift: accuracy against alpha": figures} if figures else {}
