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
`cache_state()` / `restore_state(state)`, the state is saved with each chunk and restored on resume;
`restore_state` may be given several saved states (one per process of a data-parallel evaluation) and
merges them.

Data-parallel evaluation (`accelerate launch`, `harness.training.distributed`): `CachedLM` gives lm-eval
the process's rank and the world size, lm-eval hands each process its share of every task's items (process
r: items r, r + N, ...) and gathers the per-item results into the main process, in the order one process
has them (`CachedLM.gather_object`). Each process writes the responses it computes into a file of its own
(`eval_cache.rank<k>.sqlite`) and reads the run's `eval_cache.sqlite`, which nobody writes meanwhile; the
main process merges the processes' files into it when the evaluation ends, and before the next evaluation
starts when one was killed (`merge_rank_caches`). A response is keyed by the model and the request, not by
the process that computed it: any later evaluation of the run, with one process or several, reuses it.
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
from harness.training import distributed

log = logging.getLogger(__name__)

KINDS = ("loglikelihood", "loglikelihood_rolling", "generate_until")
CACHE_FILE = "eval_cache.sqlite"


class ResponseCache:
    """A SQLite table of JSON responses keyed by SHA-256, plus a small key/value table of state. `shared`:
    another cache file read alongside this one and never written (a data-parallel process's view of the run's
    cache); it must exist."""

    def __init__(self, path: Path, shared: Path | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # Used by one thread at a time (the fingerprint is computed in a helper thread, then handed over).
        self.db = sqlite3.connect(str(path), check_same_thread=False)
        self.db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self.db.execute("CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        self.db.commit()
        self.shared = None
        if shared is not None:
            uri = f"{shared.resolve().as_uri()}?mode=ro"
            self.shared = sqlite3.connect(uri, uri=True, check_same_thread=False)

    def _dbs(self) -> list[sqlite3.Connection]:
        return [self.db] if self.shared is None else [self.db, self.shared]

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for db in self._dbs():
            wanted = [k for k in keys if k not in found]
            for i in range(0, len(wanted), 500):
                part = wanted[i : i + 500]
                query = f"SELECT key, value FROM responses WHERE key IN ({','.join('?' * len(part))})"
                rows = db.execute(query, part)
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
        for db in self._dbs():
            row = db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
            if row:
                return json.loads(row[0])
        return None

    def get_states(self, key: str) -> list[Any]:
        """The values saved under `key` and under `key@<anything>` (one per process of a data-parallel
        evaluation)."""
        query = "SELECT key, value FROM state WHERE key = ? OR substr(key, 1, ?) = ? ORDER BY key"
        args = (key, len(key) + 1, key + "@")
        rows = {k: v for db in reversed(self._dbs()) for k, v in db.execute(query, args)}  # own rows last
        return [json.loads(v) for _, v in sorted(rows.items())]

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        self.db.close()
        if self.shared is not None:
            self.shared.close()


def rank_cache_path(run_dir: Path, rank: int) -> Path:
    """The cache file one process of a data-parallel evaluation writes."""
    return Path(run_dir) / f"eval_cache.rank{rank}.sqlite"


def open_run_cache(run_dir: Path, rank: int = 0, world_size: int = 1) -> ResponseCache:
    """The run's response cache as process `rank` of `world_size` uses it: the run's file itself in a single
    process; under a launch the process's own file, with the run's file (created by `merge_rank_caches`)
    read alongside."""
    if world_size == 1:
        return ResponseCache(Path(run_dir) / CACHE_FILE)
    return ResponseCache(rank_cache_path(run_dir, rank), shared=Path(run_dir) / CACHE_FILE)


def merge_rank_caches(run_dir: Path) -> int:
    """Move the responses and states of every process's file of a data-parallel evaluation into the run's
    `eval_cache.sqlite` (one transaction per file, then the file is deleted); returns how many files were
    merged. For the main process, while no other process has the files open: a merge cut short is redone."""
    main = ResponseCache(Path(run_dir) / CACHE_FILE)
    merged = 0
    try:
        for path in sorted(Path(run_dir).glob("eval_cache.rank*.sqlite")):
            ResponseCache(path).close()  # its tables, and a transaction a kill cut short rolled back
            main.db.execute("ATTACH DATABASE ? AS part", (str(path),))
            try:
                with main.db:
                    main.db.execute("INSERT OR REPLACE INTO responses SELECT key, value FROM part.responses")
                    main.db.execute("INSERT OR REPLACE INTO state SELECT key, value FROM part.state")
            finally:
                main.db.execute("DETACH DATABASE part")
            path.unlink()
            merged += 1
    finally:
        main.close()
    if merged:
        log.info("%s: merged the response caches of %d processes", Path(run_dir).name, merged)
    return merged


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
    chunk and commits each chunk before starting the next. `rank` / `world_size`: this process's place in a
    data-parallel evaluation, which lm-eval reads to split the requests and gather the results."""

    def __init__(
        self,
        lm: LM,
        cache: ResponseCache,
        model_key: str,
        chunk_size: int = 128,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        super().__init__()
        self.lm = lm
        self.cache = cache
        self.model_key = model_key
        self.chunk_size = max(1, chunk_size)
        self.hits = 0
        self.computed = 0
        self._rank, self._world_size = rank, world_size
        if getattr(lm, "world_size", 1) != 1:
            # The evaluator computes the requests it is given, alone. HFLM, launched on several GPUs, takes
            # the launch's world size and would meet the other processes inside its own calls (rolling
            # log-likelihoods, batch size detection), which the cache makes in a different number in each
            # process (or which the others do not make at all when the main process evaluates alone).
            lm._rank, lm._world_size = 0, 1
        base = f"lm_state:{model_key}"
        self._state_key = base if world_size == 1 else f"{base}@rank{rank}"
        if hasattr(lm, "restore_state"):
            for state in cache.get_states(base):  # one process's, or each of a data-parallel evaluation's
                lm.restore_state(state)

    # -- pass-throughs lm-eval uses ---------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        if name == "lm":
            raise AttributeError(name)
        return getattr(self.lm, name)

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

    # -- data-parallel meetings lm-eval calls (`harness.training.distributed`) -----------------------
    def all_gather(self, tensor):
        return tensor if self._world_size == 1 else distributed.all_gather(tensor)

    def gather_object(self, obj: Any, dst: int = 0) -> list[Any] | None:
        """What lm-eval gathers from the processes: per task, the logged samples or the per-item metric
        values. Returned as one part, in the order of a single-process evaluation (see `in_single_order`)."""
        if self._world_size == 1:
            return [obj]
        parts = distributed.gather_object(obj, dst)
        return None if parts is None else [in_single_order(parts)]

    def barrier(self) -> None:
        if self._world_size > 1:
            distributed.barrier()

    def finish(self) -> None:
        """After a data-parallel evaluation, in every process: the main process's counts become those of
        all processes, and its evaluator gets every process's state (for its artifacts)."""
        if self._world_size == 1:
            return
        state = self.lm.cache_state() if hasattr(self.lm, "cache_state") else None
        parts = distributed.gather_object((self.hits, self.computed, state))
        if parts is not None:
            self.hits, self.computed = sum(p[0] for p in parts), sum(p[1] for p in parts)
            for _, _, other in parts[1:]:
                if other is not None:
                    self.lm.restore_state(other)

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
        quiet = {"disable_tqdm": True} if self._rank else {}  # one progress bar: the main process's
        if found:
            log.info("%s: %d of %d responses from the run's cache", kind, len(requests) - len(missing), len(requests))
        for start in range(0, len(missing), self.chunk_size):
            chunk = missing[start : start + self.chunk_size]
            responses = getattr(self.lm, kind)([requests[i] for i in chunk], **quiet)
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


def _interleave(parts: list[list[Any]]) -> list[Any]:
    """Lists of a round-robin split (part r holds items r, r + N, r + 2N, ...) merged into one, in order."""
    return [p[i] for i in range(max(map(len, parts), default=0)) for p in parts if i < len(p)]


def in_single_order(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """lm-eval's per-process results of a data-parallel evaluation (task -> logged samples, or task ->
    {(metric, filter): per-item values}) as one process has them. lm-eval gives process r the items r, r + N,
    ... of each task (`create_iterator`) and chains the processes' lists; interleaving them instead keeps
    the samples in item order and sums each metric in the order of a single process (floating point sums
    depend on the order). Samples are interleaved filter by filter (a process lists all its items for one
    filter, then for the next)."""
    merged: dict[str, Any] = {}
    for task in dict.fromkeys(t for p in parts for t in p):
        values = [p.get(task) or {} for p in parts]
        if any(isinstance(v, dict) and v for v in values):
            keys = dict.fromkeys(k for v in values for k in v)
            merged[task] = {k: _interleave([v.get(k, []) for v in values]) for k in keys}
        else:
            lists = [list(v) for v in values]
            filters = dict.fromkeys(s.get("filter") for v in lists for s in v)
            by_filter = [[[s for s in v if s.get("filter") == f] for v in lists] for f in filters]
            merged[task] = [s for parts_of_filter in by_filter for s in _interleave(parts_of_filter)]
    return merged
