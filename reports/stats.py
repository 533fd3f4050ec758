"""Paired bootstrap confidence intervals for score differences between two variants.

The data of one comparison is, per language (a *stratum*), two matrices of per-item scores over the
same items: `a` (S_a seeds x n items) for the variant and `b` (S_b x n) for the reference (vanilla SFT or
the zero-shot model). The statistic is the mean over strata of the mean item difference, with each
side's scores first averaged over its seeds: for one language, the delta in points of that language's
score; for several, the delta of the languages' average (the tables' `avg non-en`).

How the interval is resampled, and why:

- **Items, paired.** Each replicate draws the items of every stratum with replacement, the same draw for
  both sides (they answered the same items), so item difficulty cancels and only the difference varies.
  Strata are resampled separately (a stratified bootstrap): each language keeps its item count, as in
  the evaluation.
- **Seeds, hierarchical.** With several runs per variant, each replicate also draws that variant's seeds
  with replacement (independently per side: seed 1 of one method has nothing to do with seed 1 of
  another), and averages the drawn seeds' scores per item before the items are drawn. The draw of seeds
  is shared by every stratum of a replicate, because a seed is one trained model that answers in every
  language. Averaging over seeds first and resampling items only would treat the seed average as fixed
  and ignore training noise: its interval is too narrow whenever seeds disagree. The two-level bootstrap
  keeps both sources of variance; with one run per side it reduces exactly to the paired item bootstrap.
  With two or three seeds the seed level is coarse (few distinct draws), which the report states by
  showing the seed counts.

The interval is the percentile interval (2.5 %, 97.5 %) of `iters` replicates from a seeded generator;
everything is vectorised with numpy (replicates x items arrays).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Delta:
    """A difference of mean scores with its bootstrap interval (same unit as the scores)."""

    delta: float
    lo: float
    hi: float
    n_items: int  # items over all strata
    seeds_a: int
    seeds_b: int
    # Why the interval must not be read as evidence ("hi: cc collapsed"): a delta between cells where a
    # model gives one answer for (nearly) every item measures the gold share of that answer, not skill.
    caveat: str = ""

    @property
    def excludes_zero(self) -> bool:
        return self.lo > 0 or self.hi < 0

    @property
    def significant(self) -> bool:
        """The interval excludes zero and no side of the comparison is degenerate (`caveat`)."""
        return self.excludes_zero and not self.caveat


def seed_weights(rng: np.random.Generator, seeds: int, iters: int) -> np.ndarray:
    """(iters, seeds) weights of a with-replacement draw of `seeds` seeds, each row summing to 1."""
    if seeds == 1:
        return np.ones((iters, 1))
    draws = rng.integers(0, seeds, size=(iters, seeds))  # (iters, seeds): which seed each draw picked
    counts = np.stack([(draws == s).sum(axis=1) for s in range(seeds)], axis=1)  # (iters, seeds)
    return counts / seeds


def paired_bootstrap(
    strata: Sequence[tuple[np.ndarray, np.ndarray]],
    iters: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> Delta | None:
    """Delta of the mean over strata of mean(a) - mean(b), and its bootstrap interval.

    Each stratum is `(a, b)`: arrays of per-item scores, (S_a, n) and (S_b, n) (or (n,) for one run),
    with columns aligned on the same items. Every stratum must have the same S_a and S_b (the same runs).
    Returns None when no stratum has an item.
    """
    pairs = [(np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))) for a, b in strata]
    pairs = [(a, b) for a, b in pairs if a.shape[1] > 0]
    if not pairs:
        return None
    s_a, s_b = pairs[0][0].shape[0], pairs[0][1].shape[0]
    for a, b in pairs:
        if a.shape[0] != s_a or b.shape[0] != s_b or a.shape[1] != b.shape[1]:
            raise ValueError("every stratum needs the same runs per side and the same items on both sides")
    observed = float(np.mean([a.mean(axis=0).mean() - b.mean(axis=0).mean() for a, b in pairs]))
    rng = np.random.default_rng(seed)
    w_a = seed_weights(rng, s_a, iters)  # (iters, S_a), shared by every stratum
    w_b = seed_weights(rng, s_b, iters)
    stats = np.zeros(iters)
    for a, b in pairs:
        diff = w_a @ a - w_b @ b  # (iters, n): per replicate, seed-averaged item differences
        idx = rng.integers(0, a.shape[1], size=(iters, a.shape[1]))  # (iters, n): items drawn
        stats += np.take_along_axis(diff, idx, axis=1).mean(axis=1)
    stats /= len(pairs)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(stats, [tail, 100 - tail])
    return Delta(observed, float(lo), float(hi), sum(a.shape[1] for a, _ in pairs), s_a, s_b)


def align(
    side_a: Sequence[dict[str, float]], side_b: Sequence[dict[str, float]]
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Per-item score matrices over the items every run of both sides has: each run is a mapping
    item id -> score. Returns a (S_a, n), b (S_b, n) and the n item ids (sorted)."""
    common = set.intersection(*(set(run) for run in [*side_a, *side_b])) if side_a and side_b else set()
    ids = sorted(common, key=str)
    a = np.array([[run[i] for i in ids] for run in side_a], dtype=float).reshape(len(side_a), len(ids))
    b = np.array([[run[i] for i in ids] for run in side_b], dtype=float).reshape(len(side_b), len(ids))
    return a, b, ids
