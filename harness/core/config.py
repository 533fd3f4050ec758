"""Run configuration: what defines a trained model (hashed into the run id) and what an evaluation asks."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from harness.core.method import METHODS
from harness.data.base import Example
from harness.data.recipes import RecipeOptions, load_recipe
from harness.plumbing.errors import HarnessError, unknown
from harness.training.settings import WATCH_SETTINGS


@dataclass
class RunConfig:
    """Everything that determines the trained checkpoint. Two configs with the same `run_id` train the
    same model, so an identical run is reused (or resumed) instead of redone."""

    method: str = "vanilla"
    model: str = "smollm2-135m-instruct"
    method_options: dict[str, Any] = field(default_factory=dict)
    recipe: str = "mini-parallel"
    train_langs: list[str] | None = None  # None = every language the recipe has
    train_limit: int | None = 200  # examples per language (None = all)
    recipe_path: str | None = None
    seed: int = 0
    profile: str = "cpu"
    train: dict[str, Any] = field(default_factory=dict)  # resolved TrainSettings
    trust_remote_code: bool = False

    def identity(self) -> dict[str, Any]:
        """The fields that define the checkpoint (a method that does not train depends on the model only;
        the training settings that only change how a run is watched, `WATCH_SETTINGS`, are left out)."""
        if not METHODS.get(self.method).trains:
            return {"method": self.method, "model": self.model, "method_options": self.method_options}
        return {**asdict(self), "train": {k: v for k, v in self.train.items() if k not in WATCH_SETTINGS}}

    @property
    def run_id(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, ensure_ascii=True, default=str)
        return f"{self.method}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"

    def eval_options(self) -> dict[str, Any]:
        """The chosen method options that are evaluation-time choices (`Method.eval_options`)."""
        names = METHODS.get(self.method).eval_options
        return {k: v for k, v in self.method_options.items() if k in names}

    def training_config(self) -> RunConfig:
        """This config without its evaluation-time options: the run whose folder trains the model.
        Equal to `self` (same `run_id`) when no evaluation-time option is chosen."""
        if not self.eval_options():
            return self
        opts = {k: v for k, v in self.method_options.items() if k not in self.eval_options()}
        return RunConfig(**{**asdict(self), "method_options": opts})

    @property
    def training_id(self) -> str:
        """The id of the run that holds the trained model (`run_id` unless the model is shared)."""
        return self.training_config().run_id

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def training_examples(self) -> list[Example]:
        """The examples this run trains on: its recipe, languages, per-language limit and seed."""
        options = RecipeOptions(
            langs=tuple(self.train_langs) if self.train_langs else None,
            per_lang=self.train_limit,
            seed=self.seed,
            path=self.recipe_path,
        )
        return load_recipe(self.recipe, options)

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str) -> RunConfig:
        names = [f.name for f in fields(cls)]
        for key in values:
            if key not in names:
                raise unknown("config key", key, names, where)
        return cls(**values)


@dataclass
class EvalConfig:
    """What to evaluate: resolved lm-eval task names, item limit per task, and evaluator settings."""

    tasks: list[str]
    limit: int | None = None
    batch_size: int = 8
    apply_chat_template: bool = True
    gen_batch_size: int | None = None

    def key(self) -> dict[str, Any]:
        """What a stored per-task result must match to be reused."""
        return {"limit": self.limit, "apply_chat_template": self.apply_chat_template}


def load_config_file(path: str, what: str = "--config") -> dict[str, Any]:
    """A YAML (or JSON) mapping of CLI option names to values, read with `yaml.safe_load`. `what` names the
    file in errors (`--config`, `sweep file`)."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HarnessError(f"{what} {path}: file not found") from None
    except IsADirectoryError:
        raise HarnessError(f"{what} {path}: is a folder; expected a YAML file of options") from None
    except PermissionError:
        raise HarnessError(f"{what} {path}: cannot be read (permission denied)") from None
    except UnicodeDecodeError:
        raise HarnessError(f"{what} {path}: not a text file; expected a YAML file of options") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise HarnessError(f"{path}{line}: malformed YAML ({getattr(e, 'problem', e)})") from None
    if data is None:
        raise HarnessError(f"{path}: empty config file")
    if not isinstance(data, dict):
        raise HarnessError(f"{path}: expected a mapping of option names to values, got {type(data).__name__}")
    return data
