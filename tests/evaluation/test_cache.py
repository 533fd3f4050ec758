"""The response cache's data-parallel parts, in one process: the order lm-eval's gathered results are put
back in, each process's own cache file merged into the run's, and an evaluator's state saved per process
and restored from all of them. (`tests/system/test_distributed.py` evaluates in two processes.)"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lm_eval.api.model import LM
from lm_eval.utils import create_iterator

from harness.evaluation.cache import (
    CACHE_FILE,
    CachedLM,
    ResponseCache,
    in_single_order,
    merge_rank_caches,
    open_run_cache,
    rank_cache_path,
)


@pytest.mark.parametrize(("items", "world"), [(5, 2), (7, 3), (2, 2), (6, 4)])
def test_gathered_results_are_put_back_in_the_order_of_one_process(items: int, world: int) -> None:
    """lm-eval gives process r the items r, r + N, ... (`create_iterator`) and lists a process's samples
    filter by filter; what it gathers comes back as one process would have it."""
    filters = ["strict", "flexible"]
    parts = []
    for rank in range(world):
        mine = [doc for doc, _ in create_iterator(enumerate(range(items)), rank=rank, world_size=world)]
        parts.append({
            "task": [{"doc_id": d, "filter": f} for f in filters for d in mine],
            "other": {("acc", "none"): [d / 10 for d in mine], ("f1", "none"): [-d for d in mine]},
        })  # fmt: skip
    merged = in_single_order(parts)
    assert merged["task"] == [{"doc_id": d, "filter": f} for f in filters for d in range(items)]
    ordered = range(items)
    assert merged["other"] == {("acc", "none"): [d / 10 for d in ordered], ("f1", "none"): [-d for d in ordered]}


def test_process_caches_merge_into_the_runs(tmp_path: Path) -> None:
    main = ResponseCache(tmp_path / CACHE_FILE)
    main.put_many([("a", 1)], state=("lm_state:k", {"x": 1}))
    main.close()
    for rank in (0, 1):  # each process writes its own file and reads the run's alongside
        cache = open_run_cache(tmp_path, rank, 2)
        assert cache.path == rank_cache_path(tmp_path, rank) and cache.get_many(["a"]) == {"a": 1}
        cache.put_many([(f"r{rank}", [rank, True])], state=(f"lm_state:k@rank{rank}", {f"y{rank}": rank}))
        cache.close()
    assert merge_rank_caches(tmp_path) == 2
    assert not list(tmp_path.glob("eval_cache.rank*"))
    merged = open_run_cache(tmp_path)
    assert merged.get_many(["a", "r0", "r1"]) == {"a": 1, "r0": [0, True], "r1": [1, True]}
    assert merged.get_states("lm_state:k") == [{"x": 1}, {"y0": 0}, {"y1": 1}]
    assert merged.get_states("lm_state:") == []  # another key's prefix is not the key
    merged.close()
    assert merge_rank_caches(tmp_path) == 0


@dataclass
class Request:
    args: tuple


class Recording(LM):
    """Scores every request -len(context); remembers how it was called and the contexts it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, int] = {}
        self.quiet: list[bool] = []

    def loglikelihood(self, requests: list, disable_tqdm: bool = False) -> list:
        self.quiet.append(disable_tqdm)
        for r in requests:
            self.seen.setdefault(r.args[0], len(self.seen))
        return [(-float(len(r.args[0])), False) for r in requests]

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list:
        raise NotImplementedError

    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list:
        raise NotImplementedError

    def cache_state(self) -> dict[str, Any]:
        return dict(self.seen)

    def restore_state(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            self.seen.setdefault(key, value)


def test_a_process_of_a_launch_keeps_its_state_apart_and_restores_everyones(tmp_path: Path) -> None:
    merge_rank_caches(tmp_path)  # creates the run's file, as the main process does before a launch evaluates
    inner = Recording()
    inner._world_size = 2  # as HFLM sets it on a multi-GPU machine
    lm = CachedLM(inner, open_run_cache(tmp_path, 1, 2), "k", rank=1, world_size=2)
    # lm-eval sees the process's place; the evaluator computes what it is given, alone
    assert (lm.rank, lm.world_size, inner.rank, inner.world_size) == (1, 2, 0, 1)
    assert lm.loglikelihood([Request(("ab", "c")), Request(("abc", "d"))]) == [(-2.0, False), (-3.0, False)]
    assert inner.quiet == [True]  # one progress bar: the main process's
    lm.finish()  # one process here: gathers its own counts and state
    assert (lm.hits, lm.computed) == (0, 2)
    lm.cache.close()
    merge_rank_caches(tmp_path)

    again = Recording()
    lm = CachedLM(again, open_run_cache(tmp_path), "k")
    assert again.seen == {"abc": 0, "ab": 1}  # the process's state, saved under its own key
    assert lm.loglikelihood([Request(("ab", "c"))]) == [(-2.0, False)] and (lm.hits, lm.computed) == (1, 0)
    lm.cache.close()
