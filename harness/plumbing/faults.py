"""Fault injection for crash tests (the way SQLite tests its atomic commit): named points in the
pipeline where a test can make the process die by SIGKILL, interrupt itself as Ctrl-C does, or a write
fail with "disk full". A fault fires at a named point, never at a moment: a test that signalled the
process from outside would race it (the tiny test runs can finish before the signal arrives).

`HARNESS_FAULT` holds one rule, `<action>@<point>[#<n>]`:

    kill@data              SIGKILL right after the training data is prepared
    kill@train_step#2      SIGKILL after the 2nd training checkpoint is written
    kill@wt_fit            SIGKILL while W_T is being fitted (after training)
    kill@eval_chunk#1      SIGKILL after the 1st chunk of evaluation requests is cached
    kill@result            SIGKILL after the first task result is stored
    kill@report            SIGKILL halfway through writing a report
    interrupt@train_step#2 SIGINT to the process itself after the 2nd training checkpoint is written: the
                           KeyboardInterrupt of a real Ctrl-C, raised there and handled by the CLI
    stop@locked            SIGSTOP right after the run's lock is taken: the process holds the lock, frozen,
                           until a test sends SIGCONT (it waits for the stop with `waitpid(WUNTRACED)`)
    enospc@write:results   "No space left on device" on the first atomic write whose path contains `results`

`kill`, `interrupt` and `stop` work at every point above. Points count their passes within one process, so in
a sweep (its runs share the process) `#n` counts on across runs.

Unset (always, outside tests), every point is a no-op costing one dictionary lookup.
"""

from __future__ import annotations

import errno
import os
import signal
from collections import Counter

ENV = "HARNESS_FAULT"
# The signal each action of `point` sends to the process itself.
_SIGNALS = {"kill": signal.SIGKILL, "interrupt": signal.SIGINT, "stop": signal.SIGSTOP}
_hits: Counter[str] = Counter()


def _rule() -> tuple[str, str, int] | None:
    spec = os.environ.get(ENV)
    if not spec or "@" not in spec:
        return None
    action, _, rest = spec.partition("@")
    point, _, nth = rest.partition("#")
    return action, point, int(nth) if nth else 1


def point(name: str) -> None:
    """A place where `kill@<name>[#n]` kills the process, and `interrupt@<name>[#n]` interrupts it, the
    n-th time it is passed. Every point is passed in the main thread, where `raise_signal` runs Python's
    SIGINT handler before it returns: the KeyboardInterrupt comes from this very point, not some later one."""
    rule = _rule()
    if rule is None or rule[0] not in _SIGNALS or rule[1] != name:
        return
    _hits[name] += 1
    if _hits[name] == rule[2]:
        signal.raise_signal(_SIGNALS[rule[0]])


def check_write(path: os.PathLike | str) -> None:
    """Raise ENOSPC for the atomic write `enospc@write:<text>` names (its n-th match)."""
    rule = _rule()
    if rule is None or rule[0] != "enospc" or not rule[1].startswith("write:"):
        return
    if rule[1].split(":", 1)[1] in str(path):
        _hits["write"] += 1
        if _hits["write"] == rule[2]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
