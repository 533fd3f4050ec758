"""A per-run cache of evaluation responses, so a killed evaluation resumes where it stopped.

lm-eval's own `CachingLM` keys a response by the request alone (`hash_args(kind, args)`): two models
evaluated with the same cache file would share answers. Here the key also holds a fingerprint of the
model (the SHA-256 of every file of the checkpoint folder, a method's own files included) and
of the evaluator (its class, method options and settings), and the cache lives in the run's own
folder (`eval_cache.sqlite`).

Requests are computed in fixed-size chunks, longest first, each committed (SQLite: atomic and durable)
before the next starts. A chunk's batch composition depends only on the requests still missing, which after a
kill are exactly the uncommitted chunks: a resumed evaluation batches them as the uninterrupted one
did and gives bit-identical numbers.

An evaluator may also keep state across requests (CC-Tuning's layer-choice histogram): if it has
`cache_state()` / `restore_state(state)`, the state is saved with each chunk and restored on resume.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

from lm_eval.api.model import LM

from harness.plumbing import faults

log = logging.getLogger(__name__)

KINDS = ("loglikelihood", "loglikelihood_rolling", "generate_until")


class ResponseCache:
    """A SQLite table of JSON responses keyed by SHA-256, plus a small key/value table of state."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # Used by one thread at a time (the fingerprint is computed in a helper thread, then handed over).
        self.db = sqlite3.connect(str(path), check_same_thread=False)
        self.db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self.db.execute("CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self.db.commit()

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for i in range(0, len(keys), 500):
            part = keys[i : i + 500]
            rows = self.db.execute(
                f"SELECT key, value FROM responses WHERE key IN ({','.join('?' * len(part))})", part
            )
            found.update((k, json.loads(v)) for k, v in rows)
        return found

    def put_many(self, items: list[tuple[str, Any]], state: tuple[str, Any] | None = None) -> None:
        """Store responses (and optionally one state value) in one transaction."""
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO responses VALUES (?, ?)", [(k, json.dumps(v)) for k, v in items]
            )
            if state is not None:
                self.db.execute("INSERT OR REPLACE INTO state VALUES (?, ?)", (state[0], json.dumps(state[1])))

    def get_state(self, key: str) -> Any:
        row = self.db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        self.db.close()


def checkpoint_fingerprint(ref: str, cache: ResponseCache | None = None) -> str:
    """SHA-256 over the names and contents of every file of a checkpoint folder (or the Hub id when
    `ref` is not a folder). File digests are memoised in `cache` by (size, mtime), so a 500 MB model
    is read once per run, not once per evaluation."""
    folder = Path(ref)
    if not folder.is_dir():
        return hashlib.sha256(f"hub:{ref}".encode()).hexdigest()
    memo = (cache.get_state("file_digests") if cache else None) or {}
    outer = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel.startswith(".") or "/." in rel:
            continue  # temporary files of an interrupted write
        st = path.stat()
        stamp = f"{st.st_size}:{st.st_mtime_ns}"
        entry = memo.get(str(path))
        if not entry or entry[0] != stamp:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    h.update(block)
            entry = memo[str(path)] = [stamp, h.hexdigest()]
        outer.update(f"{rel}\0{entry[1]}\n".encode())
    if cache is not None:
        cache.put_many([], state=("file_digests", memo))
    return outer.hexdigest()


class CachedLM(LM):
    """Wraps an lm-eval `LM`: answers cached requests from the run's cache, computes the others chunk by
    chunk and commits each chunk before starting the next."""

    def __init__(self, lm: LM, cache: ResponseCache, model_key: str, chunk_size: int = 128) -> None:
        super().__init__()
        self.lm = lm
        self.cache = cache
        self.model_key = model_key
        self.chunk_size = max(1, chunk_size)
        self.hits = 0
        self.computed = 0
        self._state_key = f"lm_state:{model_key}"
        if hasattr(lm, "restore_state"):
            state = cache.get_state(self._state_key)
            if state is not None:
                lm.restore_state(state)

    # -- pass-throughs lm-eval uses ---------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        if name == "lm":
            raise AttributeError(name)
        return getattr(self.lm, name)

    @property
    def rank(self) -> int:
        return self.lm.rank

    @property
    def world_size(self) -> int:
        return self.lm.world_size

    @property
    def device(self):
        return self.lm.device

    @property
    def tokenizer_name(self) -> str:
        return self.lm.tokenizer_name

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return self.lm.chat_template(chat_template)

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.lm.apply_chat_template(chat_history, add_generation_prompt=add_generation_prompt)

    # -- requests ----------------------------------------------------------------------------------
    def loglikelihood(self, requests: list, disable_tqdm: bool = False) -> list:
        return self._cached("loglikelihood", requests)

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list:
        return self._cached("loglikelihood_rolling", requests)

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list:
        return self._cached("generate_until", requests)

    def key(self, kind: str, args: tuple) -> str:
        return hashlib.sha256(json.dumps([self.model_key, kind, list(args)], default=str).encode()).hexdigest()

    def _cached(self, kind: str, requests: list) -> list:
        keys = [self.key(kind, r.args) for r in requests]
        sampled = [kind == "generate_until" and bool(r.args[1].get("do_sample")) for r in requests]
        found = self.cache.get_many([k for k, s in zip(keys, sampled, strict=True) if not s])
        results: list[Any] = [_restore(kind, found[k]) if k in found else None for k in keys]
        # Longest first, as HFLM orders a call, so that each chunk batches requests of similar length
        # (chunks in the order lm-eval gives would pad short requests to long ones). The order depends
        # only on the missing requests themselves: a resumed evaluation forms the same chunks.
        missing = sorted((i for i, k in enumerate(keys) if k not in found), key=lambda i: (-_size(requests[i]), i))
        self.hits += len(requests) - len(missing)
        if found:
            log.info("%s: %d of %d responses from the run's cache", kind, len(requests) - len(missing), len(requests))
        for start in range(0, len(missing), self.chunk_size):
            chunk = missing[start : start + self.chunk_size]
            responses = getattr(self.lm, kind)([requests[i] for i in chunk])
            for i, response in zip(chunk, responses, strict=True):
                results[i] = response
            state = (self._state_key, self.lm.cache_state()) if hasattr(self.lm, "cache_state") else None
            self.cache.put_many([(keys[i], results[i]) for i in chunk if not sampled[i]], state=state)
            self.computed += len(chunk)
            faults.point("eval_chunk")
        return results


def _size(request) -> int:
    """A request's length in characters (context, plus the continuation of a log-likelihood request)."""
    return sum(len(a) for a in request.args if isinstance(a, str))


def _restore(kind: str, value: Any) -> Any:
    return tuple(value) if kind == "loglikelihood" else value
