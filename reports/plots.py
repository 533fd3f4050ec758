"""The report's figures (matplotlib, Agg backend, PNG). Each function draws one figure from plain data
and writes it to `path`; none of them reads the run store. matplotlib is imported on the first figure
(`_pyplot`), so that importing this module (as methods' figure builders do) costs nothing."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DPI = 100


@functools.cache
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, bbox_inches="tight")  # "tight": legends placed outside the axes fit
    _pyplot().close(fig)
    return path


def language_bars(
    langs: Sequence[str],
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    title: str,
    ylabel: str,
    path: Path,
) -> Path:
    """Grouped bars: one group per language, one bar per variant. `series`: variant -> (means, spreads)
    per language (spread: half the range over seeds, 0 for one run; NaN where a language is missing)."""
    n = max(len(series), 1)
    width = 0.8 / n
    x = np.arange(len(langs))
    fig, ax = _pyplot().subplots(figsize=(max(6.0, 0.55 * len(langs) * max(n, 2) / 2 + 2), 3.6))
    for i, (label, (means, spreads)) in enumerate(series.items()):
        means_arr = np.asarray(means, float)
        spread_arr = np.asarray(spreads, float)
        ax.bar(x - 0.4 + width * (i + 0.5), np.nan_to_num(means_arr), width, label=label,
               yerr=np.where(spread_arr > 0, spread_arr, np.nan), capsize=2)  # fmt: skip
    ax.set_xticks(x, list(langs))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(n, 4), loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    return _save(fig, path)


def layer_choice(
    train_hist: Sequence[int] | None,
    eval_hist: Sequence[int] | None,
    per_step: Sequence[tuple[int, Sequence[int]]],
    title: str,
    path: Path,
) -> Path:
    """The Decision Maker's layer choices: share of examples per source layer over training and over
    the evaluation prompts, and the per-step choices over training as a heat map (steps x layers)."""
    panels = 3 if per_step else 2
    fig, axes = _pyplot().subplots(1, panels, figsize=(2.9 * panels, 2.3))
    for ax, hist, name in (
        (axes[0], train_hist, "training steps"),
        (axes[1], eval_hist, "evaluation prompts"),
    ):
        if hist and sum(hist):
            total = sum(hist)
            ax.bar(np.arange(len(hist)), np.asarray(hist, float) / total * 100, color="tab:blue")
            ax.set_title(f"over {name} (n={total})", fontsize=9)
        else:
            ax.set_title(f"over {name}: no record", fontsize=9)
        ax.set_xlabel("source layer", fontsize=8)
        ax.set_ylabel("% of choices", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    if per_step:
        steps = [s for s, _ in per_step]
        matrix = np.array([np.asarray(h, float) / max(sum(h), 1) for _, h in per_step]).T  # (layers, steps)
        ax = axes[2]
        image = ax.imshow(matrix, aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=1,
                          extent=(steps[0] - 0.5, steps[-1] + 0.5, -0.5, matrix.shape[0] - 0.5))  # fmt: skip
        ax.set_xlabel("training step", fontsize=8)
        ax.set_ylabel("source layer", fontsize=8)
        ax.set_title("share per step", fontsize=9)
        ax.tick_params(labelsize=7)
        fig.colorbar(image, ax=ax, fraction=0.046).ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


@dataclass
class Curve:
    """A line of points (x, y, spread) with a label; optionally its line style ("--": dashed) and color
    (e.g. "C0": two curves of one group in one color)."""

    label: str
    x: list[float]
    y: list[float]
    spread: list[float]
    linestyle: str = "-"
    color: str | None = None


def against(
    curves: Sequence[Curve],
    references: dict[str, float],
    title: str,
    xlabel: str,
    ylabel: str,
    path: Path,
    logx: bool = False,
    logy: bool = False,
    integer_x: bool = False,
) -> Path:
    """Lines of y against x (error bars: half the range over seeds), with horizontal reference lines
    (e.g. the Decision Maker, vanilla SFT)."""
    fig, ax = _pyplot().subplots(figsize=(6.4, 3.6))
    for curve in curves:
        order = np.argsort(curve.x)
        x = np.asarray(curve.x, float)[order]
        y = np.asarray(curve.y, float)[order]
        spread = np.asarray(curve.spread, float)[order]
        ax.errorbar(x, y, yerr=np.where(spread > 0, spread, np.nan), marker="o", capsize=3, label=curve.label,
                    linestyle=curve.linestyle, color=curve.color)  # fmt: skip
    styles = ["--", ":", "-."]
    for i, (label, value) in enumerate(references.items()):
        ax.axhline(value, linestyle=styles[i % len(styles)], color=f"C{len(curves) + i}", label=label)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    if integer_x:
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def seed_spread(
    langs: Sequence[str],
    reference: Sequence[float],
    samples: Sequence[Sequence[float]],
    ylabel: str,
    title: str,
    path: Path,
) -> Path:
    """Per language: each sampled evaluation's score (dots), their mean (bar) and a reference score
    (diamond), e.g. the sampled Decision Maker over evaluation seeds against the argmax one."""
    fig, ax = _pyplot().subplots(figsize=(max(4.0, 0.55 * len(langs) + 1.5), 3.2))
    x = np.arange(len(langs))
    values = np.asarray(samples, float)  # (n, langs)
    for row in values:
        ax.scatter(x, row, s=12, color="0.55", zorder=2)
    ax.scatter(x, np.nanmean(values, axis=0), marker="_", s=400, color="black", zorder=3,
               label=f"sampled: mean of {len(values)}")  # fmt: skip
    ax.scatter(x, reference, marker="D", s=30, color="tab:red", zorder=4, label="argmax")
    ax.set_xticks(x, langs, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def loss_curves(curves: dict[str, tuple[list[int], list[float]]], path: Path) -> Path:
    """Training loss against the optimizer step, one line per run."""
    fig, ax = _pyplot().subplots(figsize=(7.0, 3.8))
    for i, (label, (steps, losses)) in enumerate(curves.items()):
        ax.plot(steps, losses, label=label, color=f"C{i % 10}", linestyle="-" if i < 10 else "--")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    if len(curves) <= 16:
        ax.legend(fontsize=7, loc="upper right")
    return _save(fig, path)


NO_ANSWER_COLOR = "#bdbdbd"


def answer_distribution(
    labels: Sequence[str],
    panels: dict[str, list[tuple[str, dict[str, float]]]],
    title: str,
    path: Path,
) -> Path:
    """Predicted answers against the gold labels: one panel per language, one horizontal bar per row
    (`gold` first, then each variant), split into the share of each label (`labels` order, one color
    each) and of outputs with no readable answer (grey). `panels`: lang -> [(row name, answer ->
    share)]; an answer outside `labels` counts as no answer."""
    cols = min(len(panels), 4) or 1
    grid_rows = -(-len(panels) // cols) or 1
    height = max(len(rows) for rows in panels.values()) if panels else 1
    fig, axes = _pyplot().subplots(grid_rows, cols, figsize=(3.4 * cols + 1.5, (0.32 * height + 0.9) * grid_rows),
                             squeeze=False, sharex=True)  # fmt: skip
    colors = _pyplot().get_cmap("tab10").colors
    for ax, (lang, rows) in zip(axes.flat, panels.items(), strict=False):
        names = [name for name, _ in rows]
        y = np.arange(len(rows))[::-1]
        left = np.zeros(len(rows))
        for i, label in enumerate([*labels, ""]):
            widths = np.array([shares.get(label, 0.0) if label else
                               1.0 - sum(shares.get(lab, 0.0) for lab in labels) for _, shares in rows])  # fmt: skip
            ax.barh(y, widths, left=left, color=colors[i % len(colors)] if label else NO_ANSWER_COLOR,
                    label=label or "no answer", edgecolor="white", linewidth=0.5)  # fmt: skip
            left += widths
        ax.set_yticks(y, names, fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_title(lang, fontsize=10)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=8, ncol=min(len(names), 8), loc="lower center",
               bbox_to_anchor=(0.5, -0.02 - 0.04 * grid_rows), frameon=False)  # fmt: skip
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def consistency_bars(columns: Sequence[str], panels: dict[str, dict[str, Sequence[float]]], title: str,
                     path: Path) -> Path:  # fmt: skip
    """Side-by-side panels of grouped bars (one group per language, one bar per variant), all in % (0-100).
    `panels`: panel title -> variant -> value per column (NaN where the variant has none)."""
    fig, axes = _pyplot().subplots(1, len(panels), figsize=(max(4.5, 0.5 * len(columns) + 2.5) * len(panels), 3.4),
                                   squeeze=False)  # fmt: skip
    for ax, (name, series) in zip(axes.flat, panels.items(), strict=True):
        width = 0.8 / max(len(series), 1)
        x = np.arange(len(columns))
        for i, (label, values) in enumerate(series.items()):
            ax.bar(x - 0.4 + width * (i + 0.5), np.nan_to_num(np.asarray(values, float)), width, label=label)
        ax.set_xticks(x, list(columns))
        ax.set_ylim(0, 100)
        ax.set_title(name, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=8, ncol=min(len(names), 4) or 1, loc="lower center",
               bbox_to_anchor=(0.5, -0.08), frameon=False)  # fmt: skip
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def layer_curves(grid: dict[str, dict[str, dict[str, tuple[Sequence[int], Sequence[float]]]]], title: str,
                 path: Path) -> Path:  # fmt: skip
    """A metric against the layer: one row of panels per metric (`grid`: row label -> panel title -> line label
    -> (layers, values)), one line per label, the same color for a label in every panel, one legend below."""
    rows = [r for r in grid if grid[r]] or list(grid)
    cols = max((len(grid[r]) for r in rows), default=1) or 1
    fig, axes = _pyplot().subplots(len(rows), cols, figsize=(3.3 * cols + 0.5, 2.7 * len(rows) + 0.6),
                                   squeeze=False, sharex=True, sharey="row")  # fmt: skip
    colors: dict[str, str] = {}
    for r, row in enumerate(rows):
        for c, (panel, lines) in enumerate(grid[row].items()):
            ax = axes[r][c]
            for label, (layers, values) in lines.items():
                color = colors.setdefault(label, f"C{len(colors) % 10}")
                style = "-" if len(colors) <= 10 else "--"
                ax.plot(layers, values, label=label, color=color, linestyle=style, linewidth=1.4)
            ax.set_title(panel, fontsize=8)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
            ax.xaxis.get_major_locator().set_params(integer=True)
            if c == 0:
                ax.set_ylabel(row, fontsize=8)
            if r == len(rows) - 1:
                ax.set_xlabel("layer", fontsize=8)
        for ax in axes[r][len(grid[row]):]:
            ax.axis("off")
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, fontsize=8, ncol=min(len(labels), 4) or 1, loc="lower center",
               bbox_to_anchor=(0.5, -0.04 - 0.03 * (len(labels) // 4)), frameon=False)  # fmt: skip
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


UNRELIABLE_COLOR = "#e0e0e0"


def answer_language_bars(categories: Sequence[str], panels: dict[str, list[tuple[str, Sequence[float | None]]]],
                         title: str, path: Path) -> Path:  # fmt: skip
    """Stacked horizontal bars of shares (0-1): one panel per language, one bar per variant split into
    `categories` (one color each). `panels`: lang -> [(variant, share per category)]; a share of None
    (not measurable) leaves its part of the bar hatched grey ("unreliable")."""
    cols = min(len(panels), 4) or 1
    grid_rows = -(-len(panels) // cols) or 1
    height = max((len(rows) for rows in panels.values()), default=1)
    fig, axes = _pyplot().subplots(grid_rows, cols, figsize=(3.4 * cols + 1.5, (0.32 * height + 0.9) * grid_rows),
                                   squeeze=False, sharex=True)  # fmt: skip
    colors = ["tab:blue", "tab:orange", "tab:red", "#7f7f7f", "#c7c7c7", "tab:green", "tab:purple"]
    for ax, (lang, rows) in zip(axes.flat, panels.items(), strict=False):
        y = np.arange(len(rows))[::-1]
        left = np.zeros(len(rows))
        for i, name in enumerate(categories):
            widths = np.array([0.0 if shares[i] is None else shares[i] for _, shares in rows], float)
            ax.barh(y, widths, left=left, color=colors[i % len(colors)], label=name, edgecolor="white", linewidth=0.5)
            left += widths
        unreliable = np.array([any(s is None for s in shares) for _, shares in rows], bool)
        if unreliable.any():
            ax.barh(y, np.where(unreliable, 1.0 - left, 0.0), left=left, color=UNRELIABLE_COLOR, hatch="//",
                    label="unreliable", edgecolor="white")  # fmt: skip
        ax.set_yticks(y, [name for name, _ in rows], fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1], ["0", "25", "50", "75", "100 %"], fontsize=8)
        ax.set_title(lang, fontsize=10)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, names = {}, []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in handles:
                handles[lab] = h
                names.append(lab)
    fig.legend([handles[n] for n in names], names, fontsize=8, ncol=min(len(names), 6) or 1, loc="lower center",
               bbox_to_anchor=(0.5, -0.02 - 0.14 / grid_rows), frameon=False)  # fmt: skip
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)
