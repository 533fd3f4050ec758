"""Representation alignment with English, per layer, for any checkpoint (`harness analyze`, `run --analyze`).

Over N parallel sentences (the held-out FLORES/SIB-200 sentences: dev + test splits, never trained on), each
sentence is the instruction of a chat-templated prompt (`harness.data.chat.format_prompt`), as CC-Tuning's
pairs are. One forward pass per prompt gives the hidden state of every layer (0: the embeddings, L: after the
last decoder layer and the model's final norm), pooled two ways:

- `rst`: at the last prompt token (the RST of CC-Tuning's default, `rst=last`);
- `mean`: averaged over the sentence's own tokens (found through the tokenizer's character offsets), so the
  template's tokens do not dilute it.

A method may add named representations of its own (`Method.alignment_views`: CC-Tuning's feed-forward
activations at its RST, as they are and mapped by W_T). For every layer, with x_i the representation of
sentence i in a language and e_j that of English sentence j (cos: cosine similarity):

    parallel    = mean_i cos(x_i, e_i)
    nonparallel = mean_{i != j} cos(x_i, e_j)
    retrieval   = share of i with argmax_j cos(x_i, e_j) = i      (top-1 English retrieval; chance 1/N)

and the same after centering (`centered_*`: each side minus its mean over the N sentences, per layer).

Stored in `<run>/analysis/alignment.json` (atomically, after each language), keyed by N, the sentence ids, the
checkpoint's fingerprint and the method's options: a rerun computes only the languages it lacks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from harness.core.method import METHODS
from harness.core.store import StoredRun, read_json
from harness.data.base import LANGUAGES, check_languages, data_dir, read_jsonl
from harness.data.chat import format_prompt
from harness.data.models import load_model, load_tokenizer, resolve_model
from harness.evaluation.cache import checkpoint_fingerprint
from harness.plumbing import faults
from harness.plumbing.errors import HarnessError
from harness.plumbing.io import atomic_write_json

log = logging.getLogger(__name__)

FORMAT = 1  # of alignment.json: a change of what is computed bumps it (old files are recomputed)
ANALYSIS_DIR = "analysis"
ALIGNMENT_FILE = "alignment.json"
SPLITS = ("dev", "test")  # FLORES/SIB-200 sentences no recipe trains on (303 in all)
# Measured on the default model (docs/alignment.md): 48 sentences x 21 languages + English are ~146k prompt
# tokens, ~3 min per checkpoint at the 700-900 tokens/s of an idle 2-core CPU (7-15 min measured on a busy
# one); CC-Tuning about twice that (its views need a second forward pass).
DEFAULT_SENTENCES = 48
DEFAULT_BATCH_SIZE = 16
# Padded tokens per forward pass at most: bounds the memory of every layer's hidden states (a batch of long
# Telugu prompts would otherwise hold 16 x 600 tokens x 31 layers of them).
MAX_BATCH_TOKENS = 4096
POOLINGS = {
    "rst": "hidden state at the RST (the last token of the chat-templated prompt)",
    "mean": "hidden states averaged over the sentence's own tokens",
}
METRICS = ("parallel", "nonparallel", "retrieval")


# -- the metrics (pure) ----------------------------------------------------------------------------


def cosine_similarities(x: np.ndarray, e: np.ndarray) -> np.ndarray:
    """(n, d) x (m, d) -> (n, m) cosine similarities (a zero vector has similarity 0 with everything)."""
    x = np.asarray(x, np.float64)
    e = np.asarray(e, np.float64)
    xn = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    en = e / np.maximum(np.linalg.norm(e, axis=-1, keepdims=True), 1e-12)
    return xn @ en.T


def pair_metrics(x: np.ndarray, e: np.ndarray) -> dict[str, float]:
    """One layer: x (n, d) in a language, e (n, d) their English parallels, row i of each the same sentence.
    Mean cosine of the parallel pairs, of the non-parallel ones (i != j; NaN for n = 1) and top-1 English
    retrieval accuracy (ties go to the lowest index)."""
    sims = cosine_similarities(x, e)
    n = sims.shape[0]
    if n == 0 or sims.shape[1] != n:
        raise ValueError(f"pair_metrics: {n} sentences against {sims.shape[1]} English ones")
    diagonal = np.trace(sims)
    return {
        "parallel": float(diagonal / n),
        "nonparallel": float((sims.sum() - diagonal) / (n * (n - 1))) if n > 1 else float("nan"),
        "retrieval": float(np.mean(np.argmax(sims, axis=1) == np.arange(n))),
    }


def alignment_metrics(x: np.ndarray, e: np.ndarray) -> dict[str, list[float]]:
    """Every layer: x, e (n, layers, d) -> metric name -> one value per layer (`pair_metrics`), as they are
    and `centered_*`: after subtracting each side's mean over its n sentences (per layer), which removes what
    all sentences of a language share (its identity, and the common direction that makes raw cosines high)."""
    x, e = np.asarray(x, np.float64), np.asarray(e, np.float64)
    if x.shape != e.shape or x.ndim != 3:
        raise ValueError(
            f"alignment_metrics: shapes {x.shape} and {e.shape}, expected two equal (n, layers, d)"
        )
    raw = [pair_metrics(x[:, layer], e[:, layer]) for layer in range(x.shape[1])]
    xc, ec = x - x.mean(0, keepdims=True), e - e.mean(0, keepdims=True)
    centered = [pair_metrics(xc[:, layer], ec[:, layer]) for layer in range(x.shape[1])]
    return {**{name: [row[name] for row in raw] for name in METRICS},
            **{f"centered_{name}": [row[name] for row in centered] for name in METRICS}}  # fmt: skip


# -- the sentences ---------------------------------------------------------------------------------


@dataclass
class ParallelSentences:
    ids: list[int]
    english: list[str]
    texts: dict[str, list[str]]  # lang -> the sentences of `ids`, in order


def parallel_sentences(langs: Sequence[str], n: int, data: Path | None = None) -> ParallelSentences:
    """The first `n` held-out sentence ids of `parallel/flores_sib`, in English and in each of `langs`."""
    root = (data or data_dir()) / "parallel" / "flores_sib"
    english = {int(r["id"]): r["text"] for r in read_jsonl(root / "en.jsonl") if r.get("split") in SPLITS}
    if n < 2:
        raise HarnessError(
            f"--sentences {n}: at least 2 are needed (retrieval needs a sentence to tell apart)"
        )
    if n > len(english):
        raise HarnessError(f"--sentences {n}: there are {len(english)} held-out parallel sentences (FLORES "
                           f"{' + '.join(SPLITS)} under {root})")  # fmt: skip
    ids = sorted(english)[:n]
    texts = {}
    for lang in langs:
        rows = {int(r["id"]): r["text"] for r in read_jsonl(root / f"{lang}.jsonl")}
        absent = [i for i in ids if not rows.get(i)]
        if absent:
            raise HarnessError(
                f"{root / f'{lang}.jsonl'}: no sentence with id {absent[0]} ({len(absent)} missing)"
            )
        texts[lang] = [rows[i] for i in ids]
    return ParallelSentences(ids, [english[i] for i in ids], texts)


# -- the model part --------------------------------------------------------------------------------


@dataclass
class EncodedSentence:
    ids: list[int]  # the templated prompt's tokens
    first: int  # the sentence's own tokens are ids[first:end]
    end: int

    @property
    def rst(self) -> int:
        return len(self.ids) - 1


def encode_sentence(tokenizer, sentence: str) -> EncodedSentence:
    """The chat-templated prompt of `sentence` and where the sentence's own tokens are in it: the tokens whose
    characters overlap the sentence's (a slow tokenizer without offsets: by tokenising the text before it)."""
    sentence = sentence.strip()
    text = format_prompt(tokenizer, sentence)
    start = text.rfind(sentence)
    if not sentence or start < 0:
        raise HarnessError(f"the prompt template does not hold the sentence as given: {sentence[:60]!r}")
    stop = start + len(sentence)
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        inside = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if a < stop and b > start and b > a]
        ids, first, end = enc["input_ids"], inside[0], inside[-1] + 1
    else:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        first = len(tokenizer(text[:start], add_special_tokens=False)["input_ids"])
        end = max(first + 1, len(tokenizer(text[:stop], add_special_tokens=False)["input_ids"]))
    return EncodedSentence(list(ids), first, min(end, len(ids)))


def batches(lengths: Sequence[int], batch_size: int, max_tokens: int = MAX_BATCH_TOKENS) -> list[list[int]]:
    """Consecutive positions of `lengths` (sorted longest first) grouped into batches of at most `batch_size`
    rows and `max_tokens` padded tokens (the longest row alone when it is longer)."""
    out: list[list[int]] = []
    for k in range(len(lengths)):
        if out and len(out[-1]) < batch_size and (len(out[-1]) + 1) * lengths[out[-1][0]] <= max_tokens:
            out[-1].append(k)
        else:
            out.append([k])
    return out


def hidden_representations(
    model, tokenizer, sentences: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE, bar: tqdm | None = None
) -> dict[str, np.ndarray]:
    """Pooling -> (n, layers + 1, d) float32: every layer's hidden state of each sentence's templated prompt,
    at the RST and averaged over the sentence's tokens (`POOLINGS`). Batched (similar lengths together, right
    padding), without the LM head."""
    import torch

    encoded = [encode_sentence(tokenizer, s) for s in sentences]
    decoder = getattr(model, "base_model", model)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i].ids))
    out: dict[str, list[Any]] = {name: [None] * len(encoded) for name in POOLINGS}
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for batch in batches([len(encoded[i].ids) for i in order], batch_size):
            indices = [order[k] for k in batch]
            rows = [encoded[i] for i in indices]
            width = max(len(r.ids) for r in rows)
            ids = torch.tensor([r.ids + [pad] * (width - len(r.ids)) for r in rows], device=device)
            mask = torch.tensor([[1] * len(r.ids) + [0] * (width - len(r.ids)) for r in rows], device=device)
            span = torch.zeros(len(rows), width, device=device)
            for j, r in enumerate(rows):
                span[j, r.first : r.end] = 1.0
            hidden = decoder(
                input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False
            ).hidden_states
            where = torch.tensor([r.rst for r in rows], device=device)
            at_rst = torch.stack([h[torch.arange(len(rows)), where] for h in hidden], dim=1)
            mean = torch.stack([torch.einsum("btd,bt->bd", h, span) for h in hidden], dim=1)
            mean = mean / span.sum(1)[:, None, None]
            for j, i in enumerate(indices):
                out["rst"][i] = at_rst[j].float().cpu().numpy()
                out["mean"][i] = mean[j].float().cpu().numpy()
            if bar is not None:
                bar.update(len(rows))
    model.train(was_training)
    return {name: np.stack(values) for name, values in out.items()}


def representations(model, tokenizer, texts: Sequence[str], lang: str, batch_size: int,
                    views: Callable | None, bar: tqdm | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """The poolings of `hidden_representations`, plus the method's views of the same prompts, if any."""
    reps = hidden_representations(model, tokenizer, texts, batch_size, bar)
    if views is not None:
        for name, value in views(model, tokenizer, list(texts), lang, batch_size).items():
            if name in reps:
                raise HarnessError(
                    f"alignment view {name!r} of the method clashes with a pooling ({', '.join(POOLINGS)})"
                )
            reps[name] = np.asarray(value.float().cpu() if hasattr(value, "float") else value, np.float32)
    return reps


# -- the run store ---------------------------------------------------------------------------------


def alignment_path(run_dir: Path | str) -> Path:
    return Path(run_dir) / ANALYSIS_DIR / ALIGNMENT_FILE


def read_alignment(run_dir: Path | str) -> dict[str, Any] | None:
    """A run's `analysis/alignment.json`, or None when absent, unreadable or of another format."""
    doc = read_json(alignment_path(run_dir))
    return doc if doc and doc.get("format") == FORMAT and isinstance(doc.get("languages"), dict) else None


def view_layers(num_states: int, count: int) -> list[int]:
    """The hidden-state indices a representation of `count` rows per sentence lines up with: all of them for
    the poolings (0 = the embeddings), the last `count` for a method's per-layer view (a decoder layer's own
    output is index layer + 1)."""
    return list(range(num_states - count, num_states))


@dataclass
class AlignmentOutcome:
    run: str
    path: Path
    doc: dict[str, Any]
    computed: list[str]
    reused: list[str]
    seconds: float


def _save(
    path: Path, key: dict[str, Any], base: dict[str, Any], lang: str | None, entry: dict[str, Any] | None
) -> dict:
    """Add one language to the file (merged with what another process may have added under the same key)."""
    current = read_json(path)
    doc = current if current and current.get("key") == key and current.get("format") == FORMAT else base
    doc = {
        **doc,
        **{k: v for k, v in base.items() if k != "languages"},
        "languages": dict(doc.get("languages", {})),
    }
    if lang is not None:
        doc["languages"][lang] = entry
    atomic_write_json(path, doc)
    return doc


def analyze_run(
    run_dir: Path | str,
    sentences: int = DEFAULT_SENTENCES,
    langs: Sequence[str] | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
) -> AlignmentOutcome:
    """Alignment with English per layer for one run's checkpoint (`Method.checkpoint`: the trained model, or
    the base model for a method that does not train), computing only the languages its file lacks."""
    run_dir = Path(run_dir)
    clock = time.perf_counter()
    cfg = StoredRun(run_dir).config()
    langs = [lang for lang in (langs or LANGUAGES) if lang != "en"]
    check_languages(langs, LANGUAGES)
    if not langs:
        raise HarnessError("--langs: English is the reference; give at least one other language")
    method = METHODS.get(cfg.get("method", "vanilla"))(**(cfg.get("method_options") or {}))
    model_ref = str(cfg.get("model"))
    checkpoint = method.checkpoint(run_dir, model_ref if method.trains else resolve_model(model_ref))
    if method.trains and not (Path(checkpoint) / "config.json").is_file():
        raise HarnessError(f"{run_dir}: no trained model yet ({checkpoint} missing); finish the run first")
    data = parallel_sentences(langs, sentences)
    key = {
        "sentences": sentences,
        "ids": hashlib.sha256(",".join(map(str, data.ids)).encode()).hexdigest()[:16],
        "model": checkpoint_fingerprint(checkpoint),
        "method": method.name,
        "options": method.options,
    }
    key = json.loads(json.dumps(key, default=str))  # as the file holds it, for comparing with its key
    path = alignment_path(run_dir)
    previous = read_alignment(run_dir)
    doc = previous if previous and previous.get("key") == key else None
    if previous and doc is None:
        log.info("%s: %s was computed for other sentences or another model: recomputing", run_dir.name, path)
    done = set(doc["languages"]) if doc else set()
    missing = [lang for lang in langs if lang not in done]
    computed: list[str] = []
    if missing:
        trust = bool(cfg.get("trust_remote_code"))
        tokenizer, model = load_tokenizer(checkpoint, trust), load_model(checkpoint, trust_remote_code=trust)
        views = method.alignment_views(checkpoint)
        total = len(data.ids) * (len(missing) + 1)
        with tqdm(total=total, desc=f"alignment {run_dir.name}", unit="sent", disable=not progress) as bar:
            started = time.perf_counter()
            bar.set_postfix_str("en")
            english = representations(model, tokenizer, data.english, "en", batch_size, views, bar)
            num_states = english["rst"].shape[1]
            base = {"format": FORMAT, "key": key, "ids": data.ids, "checkpoint": str(checkpoint),
                    "layers": {name: view_layers(num_states, rep.shape[1]) for name, rep in english.items()},
                    "descriptions": {**POOLINGS, **getattr(views, "descriptions", {})},
                    "english_seconds": round(time.perf_counter() - started, 2), "languages": {}}  # fmt: skip
            for lang in missing:
                started = time.perf_counter()
                bar.set_postfix_str(lang)
                reps = representations(model, tokenizer, data.texts[lang], lang, batch_size, views, bar)
                entry: dict[str, Any] = {
                    name: alignment_metrics(reps[name], english[name]) for name in english
                }
                entry["seconds"] = round(time.perf_counter() - started, 2)
                doc = _save(path, key, base, lang, entry)
                computed.append(lang)
                faults.point("alignment_language")
    assert doc is not None
    return AlignmentOutcome(run_dir.name, path, doc, computed, [lang for lang in langs if lang in done],
                            time.perf_counter() - clock)  # fmt: skip


def mean_over_languages(
    doc: dict[str, Any], name: str, metric: str, langs: Sequence[str] | None = None
) -> list[float]:
    """One representation's metric per layer, averaged over the file's languages (or `langs` among them)."""
    values = [entry[name][metric] for lang, entry in doc["languages"].items()
              if name in entry and (langs is None or lang in langs)]  # fmt: skip
    return list(np.mean(np.asarray(values, float), axis=0)) if values else []
