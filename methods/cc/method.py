"""CC-Tuning: a cross-lingual connection in the latent space, learned during multilingual SFT.

Reference: Ye et al., "CC-Tuning: A Cross-Lingual Connection Mechanism for Improving Joint Multilingual
Supervised Fine-Tuning", ACL 2025 (arXiv 2506.00875); authors' code: github.com/YYF-Tommy/CC-Tuning.
`shared/docs/METHOD.md` describes the method step by step; this module follows it.

Training: for each example an English pass records the feed-forward outputs a (L x d) at the English
prompt's Response Start Token (RST); a Decision Maker (bias-free d -> L linear map) picks one layer by
straight-through hard Gumbel-softmax from mean_l(a_l + e), e the non-English input embedding at the RST;
the chosen activation is added to the residual stream after layer 0 at the non-English RST; the loss is
the response-only next-token cross-entropy of that fused pass. After training a Transform Matrix W_T
(least squares, all layers stacked) maps a prompt's own activations onto its English translation's, so
inference needs no translation. `cc.safetensors` next to the checkpoint holds W_DM and W_T, and
`<run_dir>/cc_artifacts.json` the layer-choice histograms and the W_T fit for the report.

English-pass gradient (`detach_english`, default true). The authors' code has no `no_grad` around the
English pass, but their shipped configuration trains with LLaMA-Factory's gradient checkpointing,
re-entrant: each checkpointed layer's first forward runs under `no_grad`, so the captured English
activations carry no gradient and nothing flows back into the English pass in the runs behind the paper's
table (the Decision Maker still learns: its input embedding and the fused pass are outside that). The
default reproduces those runs, and is the cheaper path. `detach_english=false` is the variant the
paper's text suggests: gradients through the English pass; it needs `gradient_checkpointing=false` or
`gradient_checkpointing_reentrant=false` (refused otherwise, since re-entrant checkpointing would
silently drop them). `tests/methods/test_cc_faithful_gradients.py` shows which parameters receive
gradient in each mode.

RST (`rst`, default "last"): the last prompt token, the position whose output is the first response
token, for any chat template (and our plain template for a base model without one). `rst=authors` takes
the authors' token per family (`harness.methods.cc.rst.AUTHORS_RST`: Qwen2 `assistant`, Mistral the token before
`[/INST]`, Llama-3 the last token as ours); the paper configs for Qwen2.5-7B and Mistral-7B-v0.3 use it.

Where this differs from the authors' code otherwise (each deliberate, see METHOD.md **[ours]**):
- the RST is located for any chat template (theirs: special-token counting for three model families),
  and the layers and feed-forward blocks are found by hooks on any decoder-only model (for Gemma 2/3 the
  feed-forward output is that of `post_feedforward_layernorm`, which is what enters the residual stream);
- English training examples are their own x_en (every example takes the same path), and W_T is fitted
  on non-English pairs only (English pairs would pull it towards the identity);
- at evaluation the Decision Maker takes the argmax (theirs samples Gumbel noise, so scores vary from
  run to run; `eval_gumbel` restores that), and the second pass reuses the first pass's key/value cache
  before the RST instead of running two full forward passes (the same numbers, see
  tests/methods/test_cc_lm.py);
- ablations: `fixed_source_layer`, `fuse_after_layer`, `dm_hard`, `dm_tau`, `use_wt`, `wt_samples`,
  `wt_source` (training pairs or the parallel corpus), `wt_per_language`;
- training runs through the transformers Trainer like every method here (DeepSpeed/FSDP through
  `accelerate launch`), not their DeepSpeed script.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from harness.core.config import RunConfig
from harness.core.method import Method, register_method
from harness.data.base import Example
from harness.data.chat import encode_prompt
from harness.data.models import load_model
from harness.methods.cc.alignment import CCAlignmentViews
from harness.methods.cc.figures import ARTIFACTS, cc_figures
from harness.methods.cc.model import NO_ROLLING, CCModel, CCOptions, histogram_entropy
from harness.methods.cc.pairs import Pair, pairs_from_examples, pairs_from_parallel
from harness.methods.cc.rst import AUTHORS_RST, RST_MODES, describe_rst, rst_offset
from harness.methods.cc.transform import CC_SIDECAR, CC_WEIGHTS, TransformFit, fit_and_save, refit_checkpoint
from harness.plumbing.errors import HarnessError, unknown
from harness.plumbing.io import atomic_write_json, link_tree
from harness.reports.figures import Figure, FigureContext
from harness.training.memory import ActivationNote, Pass, Shape, estimate, fmt
from harness.training.settings import TrainContext, TrainSettings
from harness.training.trainer import SFTDataset, drop_tied_copies, load_for_training, run_trainer

log = logging.getLogger(__name__)

# The options that change the fitted W_T (the other `eval_options` only change evaluation).
WT_FIT_OPTIONS = ("wt_samples", "wt_source", "wt_per_language")


class CCDataset(SFTDataset):
    """`SFTDataset` plus the English prompt and its RST for every example (English examples are their
    own English prompt); an example is dropped when either prompt exceeds `max_length`. Both RSTs are
    `rst_offset` tokens from the end of their prompt (`harness.methods.cc.rst.rst_offset`)."""

    def __init__(self, tokenizer, examples: list[Example], max_length: int, rst_offset: int = 1) -> None:
        self.rst_offset = rst_offset
        super().__init__(tokenizer, examples, max_length)

    def encode(self, ex: Example) -> dict[str, Any] | None:
        item = super().encode(ex)
        english = ex.instruction if ex.lang == "en" or not ex.instruction_en else ex.instruction_en
        en_ids = encode_prompt(self.tokenizer, english)
        if item is None or len(en_ids) > self.max_length:
            return None
        shift = self.rst_offset - 1  # SFTDataset's RST is the last prompt token
        return {**item, "rst": item["rst"] - shift, "en_input_ids": en_ids, "en_rst": len(en_ids) - self.rst_offset}

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "english_prompt_tokens": sum(len(it["en_input_ids"]) for it in self.items)}


def english_gradient(options: dict[str, Any], settings: TrainSettings) -> str:
    """Whether the English pass receives gradient in a training run, in words."""
    checkpointing = (
        f"gradient checkpointing {'re-entrant' if settings.gradient_checkpointing_reentrant else 'non-re-entrant'}"
        if settings.gradient_checkpointing
        else "no gradient checkpointing"
    )
    if options["detach_english"]:
        return f"no gradient through the English pass (detach_english=true, as the authors' runs); {checkpointing}"
    return f"gradient through the English pass (detach_english=false); {checkpointing}"


def activation_note(options: dict[str, Any], settings: TrainSettings, model_config) -> ActivationNote:
    """The dry run's line on CC-Tuning's activation memory per GPU (`harness.training.memory`): the English pass
    over the English prompt, then the fused pass with logits at the response positions, each sequence at the
    cutoff (worst case), with and without gradient through the English pass and gradient checkpointing; it
    carries this run's figure for the fit verdict."""
    shape, e = Shape.of(model_config), 2 if settings.bf16 else 4
    batch, seq = settings.per_device_batch_size, settings.max_length

    def peak(english_grad: bool, checkpointing: bool) -> float:
        a = batch * shape.layers * shape.hidden * e
        passes = [Pass(batch, seq, english_grad, keeps=a), Pass(batch, seq, True, logits=batch * (seq - 1))]
        return estimate(shape, passes, checkpointing=checkpointing, e=e).peak

    cells = [
        f"{'gradient' if grad else 'no gradient'} through the English pass, checkpointing {'on' if gc else 'off'} "
        f"{fmt(peak(grad, gc))}"
        for grad in (False, True) for gc in (False, True)
    ]  # fmt: skip
    this = peak(not options["detach_english"], settings.gradient_checkpointing)
    text = (f"cc: activations per GPU (estimate; English pass + fused pass, {batch} x {seq} tokens each): "
            + "; ".join(cells) + f" (with gradient, non-re-entrant checkpointing); this run: {fmt(this)}")  # fmt: skip
    return ActivationNote(text, this)


def training_layer_histogram(log_path: Path) -> list[dict[str, Any]]:
    """The per-step layer-choice rows of a run's log (the last record of a step wins after a resume)."""
    rows: dict[int, dict[str, Any]] = {}
    if log_path.is_file():
        for line in log_path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line) if line.strip() else {}
            if "cc_layer_hist" in row:
                rows[row["step"]] = row
    return [rows[step] for step in sorted(rows)]


@register_method("cc")
class CCTuning(Method):
    description = (
        "CC-Tuning (Ye et al., ACL 2025): English feed-forward activations fused into the non-English pass "
        "by a learned Decision Maker; a least-squares Transform Matrix replaces the English pass at test time."
    )
    requires_english = True
    # The options that shape the model are `CCOptions`' fields (defined there, once); the rest only change
    # what is fitted after training or how the checkpoint is evaluated (`eval_options`).
    defaults = {
        **CCOptions().to_dict(),
        "wt_samples": 1000,  # M parallel pairs to fit W_T on (all when fewer)
        "wt_source": "train",  # "train": the training pairs; "parallel": shared/data/parallel
        "wt_per_language": False,  # also fit (and evaluate with) one W_T per language
        "use_wt": True,  # False: the prompt's own activations (W_T = identity), an ablation
        "eval_gumbel": False,  # evaluation samples the Decision Maker (the authors') instead of argmax
        "eval_seed": 0,  # the Gumbel noise of `eval_gumbel`, drawn per prompt (methods.cc.lm.prompt_gumbel_noise)
    }
    eval_options = frozenset({"wt_samples", "wt_source", "wt_per_language", "use_wt", "eval_gumbel", "eval_seed"})
    cannot_evaluate = {"loglikelihood_rolling": NO_ROLLING}

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        if self.options["wt_source"] not in ("train", "parallel"):
            raise HarnessError(
                f"option wt_source={self.options['wt_source']!r} of method 'cc': valid: train, parallel"
            )
        if self.options["wt_samples"] < 1:
            raise HarnessError(f"option wt_samples={self.options['wt_samples']} of method 'cc' must be >= 1")
        if self.options["dm_tau"] <= 0:
            raise HarnessError(f"option dm_tau={self.options['dm_tau']} of method 'cc' must be > 0")
        if self.options["rst"] not in RST_MODES:
            raise unknown("value", str(self.options["rst"]), RST_MODES, "option rst of method 'cc'")

    def check_model(self, config: dict[str, Any], where: str) -> None:
        layers = config.get("text_config", config).get("num_hidden_layers")
        if not isinstance(layers, int):
            return
        for key in ("fixed_source_layer", "fuse_after_layer"):
            value = self.options[key]
            if (key == "fixed_source_layer" and value == -1) or 0 <= value < layers:
                continue
            unset = " (or -1: the Decision Maker chooses)" if key == "fixed_source_layer" else ""
            raise HarnessError(f"option {key}={value} of method 'cc' is out of range for {where}: it has {layers} "
                               f"layers, 0..{layers - 1}{unset}")  # fmt: skip

    def check_settings(self, settings: TrainSettings) -> None:
        """`detach_english=false` asks for gradients through the English pass, which re-entrant gradient
        checkpointing cannot give (its first forward runs under no_grad): refuse rather than ignore it."""
        if (
            not self.options["detach_english"]
            and settings.gradient_checkpointing
            and settings.gradient_checkpointing_reentrant
        ):
            raise HarnessError(
                "option detach_english=false of method 'cc' needs gradients through the English pass, which "
                "re-entrant gradient checkpointing drops (the authors' runs); add "
                "--set gradient_checkpointing_reentrant=false, or --set gradient_checkpointing=false"
            )

    def check_examples(self, examples: list[Example]) -> None:
        """Every non-English example needs `instruction_en`; English ones are their own translation."""
        super().check_examples([ex for ex in examples if ex.lang != "en"])

    def plan_notes(self, settings: TrainSettings, tokenizer=None, model_config=None) -> list[str]:
        notes = []
        if model_config is not None:
            size = model_config.hidden_size * model_config.num_hidden_layers
            notes.append(f"cc: the Decision Maker adds {size:,} parameters (hidden size x layers)")
            notes.append(activation_note(self.options, settings, model_config))
        rst = self.options["rst"]
        if tokenizer is not None:
            where = describe_rst(tokenizer, rst)
        elif rst == "authors":
            where = "rst=authors: " + "; ".join(rule for _, _, rule in AUTHORS_RST) + " (located once the tokenizer is at hand)"
        else:
            where = "rst=last: the last prompt token"
        return [*notes, f"cc: {english_gradient(self.options, settings)}", f"cc: Response Start Token: {where}"]

    def transform_pairs(self, examples: list[Example]) -> list[Pair]:
        if self.options["wt_source"] == "parallel":
            return pairs_from_parallel(sorted({ex.lang for ex in examples}))
        return pairs_from_examples(examples)

    def train(self, ctx: TrainContext) -> None:
        from transformers import set_seed

        from harness.methods.cc.trainer import CCTrainer

        self.check_settings(ctx.settings)
        set_seed(ctx.seed)  # the Decision Maker's (and LoRA's) initialisation
        examples = self.prepare_examples(ctx.examples, ctx)
        self.check_examples(examples)
        pairs = self.transform_pairs(examples)  # fail before training, not after
        tokenizer, lm = load_for_training(ctx)
        log.info("CC-Tuning: %s; %s", describe_rst(tokenizer, self.options["rst"]), english_gradient(self.options, ctx.settings))
        dataset = CCDataset(tokenizer, examples, ctx.settings.max_length, rst_offset(tokenizer, self.options["rst"]))
        log.info("training data: %s", dataset.stats())
        ctx.extra["data_stats"] = dataset.stats()
        model = CCModel(lm, CCOptions.from_dict(self.options))

        fits: list[TransformFit] = []

        def save(model: CCModel, tokenizer, folder: Path, state_dict: dict | None = None) -> None:
            """The LM checkpoint (LoRA merged), then W_T fitted with it, then cc.safetensors. When ZeRO-3 /
            FSDP sharded the weights, `state_dict` holds them gathered: the LM is saved from it and loaded
            back whole for the fit."""
            decision_maker = model.decision_maker.weight
            if state_dict is None:
                lm = model.lm.merge_and_unload() if hasattr(model.lm, "merge_and_unload") else model.lm
                lm.save_pretrained(folder, safe_serialization=True)
            else:
                if hasattr(model.lm, "merge_and_unload"):
                    raise HarnessError("lora=true with ZeRO-3 or FSDP sharding is not supported; use DDP")
                state_dict = drop_tied_copies(model, state_dict)
                lm_state = {k.removeprefix("lm."): v for k, v in state_dict.items() if k.startswith("lm.")}
                model.lm.save_pretrained(folder, safe_serialization=True, state_dict=lm_state)
                lm = load_model(str(folder), trust_remote_code=ctx.trust_remote_code)
                lm = lm.to(decision_maker.device)
                decision_maker = state_dict["decision_maker.weight"]
            tokenizer.save_pretrained(folder)
            fit = fit_and_save(
                folder, lm, tokenizer, pairs, self.options, ctx.seed, ctx.settings.per_device_batch_size,
                decision_maker, model.options.to_dict(),
            )  # fmt: skip
            fits.append(fit)

        run_trainer(
            ctx, model, tokenizer, dataset, trainer_cls=CCTrainer, save_fn=save, diagnostics_path=ctx.log_path,
            checkpoint_at_end=True,
        )
        if fits:
            self.write_artifacts(ctx, model.num_layers, fits[-1])

    def write_artifacts(self, ctx: TrainContext, num_layers: int, fit: TransformFit) -> None:
        """`<run_dir>/cc_artifacts.json`: layer choices over training, and the W_T fit."""
        steps = training_layer_histogram(ctx.log_path)
        total = [0] * num_layers
        for row in steps:
            total = [a + b for a, b in zip(total, row["cc_layer_hist"], strict=True)]
        atomic_write_json(
            ctx.run_dir / ARTIFACTS,
            {
                "method": "cc",
                "options": self.options,
                "num_layers": num_layers,
                "train_layer_hist": total,
                "train_layer_entropy": histogram_entropy(total),
                "train_layer_hist_per_step": steps,
                "transform": fit.summary(),
            },
        )

    @classmethod
    def owns_checkpoint(cls, folder: Path) -> bool:
        return (Path(folder) / CC_WEIGHTS).is_file()

    def share_model(self, source: Path, run_dir: Path, model_dir: Path, cfg: RunConfig) -> None:
        """Hard-link the trained model; when this run's W_T fit options differ from those the training run
        fitted with (the defaults), refit W_T with it (`refit_checkpoint`) instead of linking the CC files.
        `cc_artifacts.json` is copied with this run's options and, after a refit, its fit."""
        refit = any(self.options[k] != self.defaults[k] for k in WT_FIT_OPTIONS)
        link_tree(source / "model", model_dir, skip=(CC_WEIGHTS, CC_SIDECAR) if refit else ())
        fit = None
        if refit:
            log.info("%s: refitting W_T (%s)", run_dir.name, ", ".join(f"{k}={self.options[k]}" for k in WT_FIT_OPTIONS))
            batch_size = TrainSettings.from_dict(cfg.train).per_device_batch_size
            pairs = self.transform_pairs(cfg.training_examples())
            fit = refit_checkpoint(model_dir, pairs, self.options, cfg.seed, batch_size, trained_from=source / "model",
                                   trust_remote_code=cfg.trust_remote_code)  # fmt: skip
        if (source / ARTIFACTS).is_file():
            values = json.loads((source / ARTIFACTS).read_text(encoding="utf-8"))
            values["options"] = self.options
            if fit is not None:
                values["transform"] = fit.summary()
            atomic_write_json(run_dir / ARTIFACTS, values)

    @classmethod
    def report_figures(cls, ctx: FigureContext) -> dict[str, list[Figure]]:
        """Layer choices per run, accuracy against a fixed source layer, W_T against M, and sampled
        against argmax decisions at evaluation (`harness.methods.cc.figures`)."""
        return cc_figures(ctx)

    def checkpoint(self, run_dir: Path, base_model: str) -> str:
        folder = run_dir / "model"
        missing = [name for name in (CC_WEIGHTS, CC_SIDECAR) if not (folder / name).is_file()]
        if missing:
            raise HarnessError(
                f"{folder}: CC-Tuning artifacts missing ({', '.join(missing)}); "
                f"delete {folder} and run the same command again to retrain"
            )
        return str(folder)

    def alignment_views(self, checkpoint: str) -> CCAlignmentViews:
        """The feed-forward outputs at the RST, as they are and mapped by W_T (`harness.methods.cc.alignment`)."""
        return CCAlignmentViews(checkpoint, per_language=self.options["wt_per_language"])

    def make_lm(self, checkpoint: str, **lm_kwargs: Any):
        """The CC-aware lm-eval model (records its layer choices: `lm.artifacts()`)."""
        from harness.methods.cc.lm import CCLM

        return CCLM(
            pretrained=checkpoint,
            use_wt=self.options["use_wt"],
            eval_gumbel=self.options["eval_gumbel"],
            eval_seed=self.options["eval_seed"],
            wt_per_language=self.options["wt_per_language"],
            **lm_kwargs,
        )
