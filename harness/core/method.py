"""The method protocol: what every fine-tuning method provides, and its registry.

A method is a class registered by name. It declares its options (with defaults), may transform the
training examples (data-level methods), trains a checkpoint through `harness.training.trainer.run_trainer`,
and may provide the lm-eval model used to evaluate that checkpoint (plain `HFLM` by default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from harness.core.config import typed_like
from harness.data.base import Example
from harness.plumbing.errors import HarnessError, unknown
from harness.plumbing.registry import Registry
from harness.training.trainer import TrainContext, TrainSettings

METHODS: Registry[type[Method]] = Registry("method")


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

    def plan_notes(self, settings: TrainSettings, tokenizer=None) -> list[str]:
        """Lines the dry-run plan prints about this method's choices (`tokenizer`: None when not at hand)."""
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

    def checkpoint(self, run_dir: Path, base_model: str) -> str:
        """The checkpoint to evaluate: the trained model, or the base model for methods that don't train."""
        return str(run_dir / "model") if self.trains else base_model
