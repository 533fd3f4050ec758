"""The method protocol: what every fine-tuning method provides, and its registry.

A method is a class registered by name. It declares its options (with defaults), may transform the
training examples (data-level methods), trains a checkpoint through `harness.training.trainer.run_trainer`,
and may provide everything the rest of the harness asks of a method, so that the core never names one:

- `eval_options`: options that only change evaluation (or what is fitted after training); runs that
  differ only in them share one trained model (`RunConfig.training_config`);
- `make_lm`: the lm-eval model that evaluates its checkpoint (plain `HFLM` by default), and
  `owns_checkpoint`: whether a checkpoint folder is one of its own (so `harness eval` of a bare folder
  picks its evaluator);
- `share_model`: how another run's trained model is reused for this run's options (hard links by
  default);
- `check_settings`, `check_model` and `cannot_evaluate`: refusals, before any work, of training settings,
  options out of range for the model, and kinds of task its evaluator cannot score; `plan_notes`: dry-run
  lines about its choices;
- `report_figures`: the figures `harness report` draws for its runs;
- `alignment_views`: representations of its own for the per-layer alignment analysis (`harness analyze`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from harness.plumbing.errors import HarnessError, unknown
from harness.plumbing.io import link_tree
from harness.plumbing.registry import Registry
from harness.plumbing.values import typed_like

if TYPE_CHECKING:
    from harness.core.config import RunConfig
    from harness.data.base import Example
    from harness.training.settings import TrainContext, TrainSettings

# The built-in methods (package `methods`) register through the entry point this project declares in
# pyproject.toml; other installed packages may declare their own in the same group.
METHODS: Registry[type[Method]] = Registry("method", plugins="cc_harness.methods")


def register_method(name: str):
    """Class decorator: `@register_method("vanilla")`."""

    def deco(cls: type[Method]) -> type[Method]:
        cls.name = name
        return METHODS.register(name)(cls)

    return deco


class Method:
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}  # option name -> default value (its type is the option's type)
    trains: ClassVar[bool] = True  # False for `none` (the zero-shot base model)
    requires_english: ClassVar[bool] = False  # every example needs `instruction_en`
    # Options that do not change the trained weights, only what is fitted after training or how the
    # checkpoint is evaluated: a run differing from another only in these shares its trained model.
    eval_options: ClassVar[frozenset[str]] = frozenset()
    # lm-eval output types (`loglikelihood_rolling`, ...) its evaluator cannot score -> why: such tasks are
    # refused before training.
    cannot_evaluate: ClassVar[dict[str, str]] = {}

    def __init__(self, **options: Any) -> None:
        self.options = self.resolve_options(options)

    @classmethod
    def resolve_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        resolved = dict(cls.defaults)
        for key, value in options.items():
            if key not in cls.defaults:
                valid = list(cls.defaults) or ["(this method has no options)"]
                raise unknown(f"option for method '{cls.name}'", key, valid)
            default = cls.defaults[key]
            if default is not None:
                try:
                    value = typed_like(value, default)
                except ValueError:
                    raise HarnessError(
                        f"option {key}={value!r} of method '{cls.name}' must be {type(default).__name__}"
                    ) from None
            resolved[key] = value
        return resolved

    def check_examples(self, examples: list[Example]) -> None:
        if self.requires_english:
            for ex in examples:
                if not ex.instruction_en:
                    raise HarnessError(
                        f"training example {ex.id} ({ex.lang}) has no instruction_en; method '{self.name}' "
                        "needs the English parallel of every instruction (use a parallel recipe such as mini-parallel)"
                    )

    def check_settings(self, settings: TrainSettings) -> None:
        """Refuse, with one line, training settings this method cannot honour (checked before any work)."""

    def check_model(self, config: dict[str, Any], where: str) -> None:
        """Refuse, with one line, option values the model cannot take (a layer it does not have), before any
        work. `config`: the model's `config.json`; `where`: how to name the model in the message."""

    def plan_notes(self, settings: TrainSettings, tokenizer=None, model_config=None) -> list[str]:
        """Lines the dry-run plan prints about this method's choices (`tokenizer`: None when not at hand;
        `model_config`: the base model's text config, e.g. for the size of the method's own parameters)."""
        return []

    def prepare_examples(self, examples: list[Example], ctx: TrainContext) -> list[Example]:
        """The examples actually trained on (data-level baselines augment here)."""
        return examples

    def train(self, ctx: TrainContext) -> None:
        raise NotImplementedError

    def make_lm(self, checkpoint: str, **lm_kwargs: Any):
        """The lm-eval model that evaluates `checkpoint`."""
        from lm_eval.models.huggingface import HFLM

        return HFLM(pretrained=checkpoint, **lm_kwargs)

    @classmethod
    def owns_checkpoint(cls, folder: Path) -> bool:
        """Whether `folder` is a checkpoint of this method that needs this method's evaluator (a plain
        Hugging Face checkpoint belongs to no method)."""
        return False

    def share_model(self, source: Path, run_dir: Path, model_dir: Path, cfg: RunConfig) -> None:
        """Give this run the model trained in the run folder `source` (same training config, other
        evaluation-time options): fill the new, empty `model_dir` and write any of the method's own run
        files into `run_dir`. Default: hard-link the trained model as it is."""
        link_tree(source / "model", model_dir)

    @classmethod
    def report_figures(cls, ctx: Any) -> dict[str, list[Any]]:
        """Figures of this method's runs for `harness report`: section title -> `harness.reports.figures.Figure`s.
        `ctx` is a `harness.reports.figures.FigureContext` (the runs, their scores, the benchmark tables and the
        folder to draw into); drawn only when the report holds runs of this method."""
        return {}

    def checkpoint(self, run_dir: Path, base_model: str) -> str:
        """The checkpoint to evaluate: the trained model, or the base model for methods that don't train."""
        return str(run_dir / "model") if self.trains else base_model

    def alignment_views(self, checkpoint: str) -> Any:
        """Representations of its own for the alignment analysis (`harness.evaluation.alignment`), or None: a
        callable `(model, tokenizer, texts, lang, batch_size) -> {name: (n, k, d) tensor}` giving k per-layer
        vectors (lined up with the last k layers) for the templated prompt of each text in language `lang`;
        each is compared with the same view of the English parallels (`lang="en"`). An optional attribute
        `descriptions` (name -> one line) labels them in the report. Default: none."""
        return None


def checkpoint_owner(folder: str | Path) -> type[Method] | None:
    """The registered method whose own checkpoint `folder` is (`Method.owns_checkpoint`), if any."""
    for name in METHODS:
        cls = METHODS.get(name)
        if cls.owns_checkpoint(Path(folder)):
            return cls
    return None
