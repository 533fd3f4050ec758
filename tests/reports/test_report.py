"""The report generator on synthetic run stores (no model): the bootstrap on known cases, the table
pivot, deltas, escaping of untrusted text, skipped runs, every output file, and the page in a real
browser (headless Chromium, when installed)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.core.config import RunConfig
from harness.plumbing.io import atomic_write_json, atomic_write_jsonl, atomic_write_yaml
from harness.reports.benches import AVG, AVG_NON_EN, score_table
from harness.reports.report import build_report
from harness.reports.runs import load_runs, variant_labels
from harness.reports.stats import align, paired_bootstrap
from harness.reports.table import frame_of, language_table, load_frame
from harness.reports.write import write_report
from harness.training.settings import PROFILES

EVIL = "<script>document.body.dataset.pwned='1'</script>"
EVAL_KEY = {"limit": 40, "apply_chat_template": True}


# -- a synthetic run store ----------------------------------------------------------------------------


def write_run(root: Path, method: str, seed: int = 0, options: dict | None = None,
              accuracy: dict[str, float] | None = None, phase: str = "complete",
              tasks: dict[str, list[str]] | None = None, items: int = 40, training_run: str | None = None,
              num_layers: int = 4, command: str = "harness run --method X") -> Path:  # fmt: skip
    """A run folder in the store's exact format (config.yaml, status.json, results/, samples/,
    train_log.jsonl, cc_artifacts.json, eval_artifacts.json). Item i of a language is correct when
    i < accuracy * items (so scores and deltas are known exactly), shifted by the seed."""
    cfg = RunConfig(method=method, model="tiny", method_options=options or {}, seed=seed,
                    train=PROFILES["cpu"].to_dict(), train_langs=["en", "sw", "yo"], train_limit=30)  # fmt: skip
    run = root / cfg.run_id
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_yaml(run / "config.yaml", {"run_id": cfg.run_id, "command": command, **cfg.to_dict()})
    tasks = tasks or {"sib200_mc": ["sw", "yo", "en"], "xnli_gen": ["sw", "en"]}
    accuracy = accuracy or {}
    names = []
    for bench, langs in tasks.items():
        benchmark, protocol = bench.rsplit("_", 1)
        for lang in langs:
            task = f"{bench}_{lang}"
            names.append(task)
            correct = round(accuracy.get(lang, accuracy.get("*", 0.5)) * items)
            rows = []
            for i in range(items):
                ok = float((i + seed) % items < correct)
                gold = str(1 + i % 7)
                output = gold if ok else str(1 + (i + 1) % 7)
                if protocol == "gen" and i == 0:
                    output = f"{EVIL} the answer is {output}"
                row = {"id": i, "prompt": f"<|im_start|>user\nItem {i} in {lang}: pick a topic & <b>go</b>",
                       "output": output, "extracted": output[-1], "gold": gold, "acc": ok}  # fmt: skip
                if protocol == "mc":
                    row["loglikelihoods"] = [-1.0] * 7
                rows.append(row)
            atomic_write_jsonl(run / "samples" / f"{task}.jsonl", rows)
            result = {"task": task, "benchmark": benchmark, "protocol": protocol, "lang": lang,
                      "metrics": {"acc": sum(r["acc"] for r in rows) / items}, "primary_metric": "acc",
                      "n": items, "key": EVAL_KEY}  # fmt: skip
            atomic_write_json(run / "results" / f"{task}.json", result)
    status = {"phase": phase, "updated": "2026-01-01T00:00:00", "tasks": names, "eval": EVAL_KEY}
    if training_run:
        status["training_run"] = training_run
    atomic_write_json(run / "status.json", status)
    if method != "none":
        log = []
        for step in range(1, 11):
            if method == "cc":
                hist = [0] * num_layers
                hist[(step + seed) % num_layers] += 6
                hist[1] += 2
                log.append(
                    {"step": step, "cc_layer_hist": hist, "cc_layer_entropy": 0.5, "cc_dm_entropy": 1.2}
                )
            log.append({"step": step, "loss": 3.0 / (1 + 0.2 * step) + 0.01 * seed, "learning_rate": 1e-4})
        atomic_write_jsonl(run / "train_log.jsonl", log)
    if method == "cc":
        opts = {"fixed_source_layer": -1, "wt_samples": 1000, "wt_source": "train", "use_wt": True,
                **(options or {})}  # fmt: skip
        steps = [r for r in log if "cc_layer_hist" in r]
        total = [sum(r["cc_layer_hist"][k] for r in steps) for k in range(num_layers)]
        m = min(opts["wt_samples"], 150 if opts["wt_source"] == "train" else 10_000)
        atomic_write_json(run / "cc_artifacts.json", {
            "method": "cc", "options": opts, "num_layers": num_layers, "train_layer_hist": total,
            "train_layer_entropy": 1.1, "train_layer_hist_per_step": steps,
            "transform": {"m": m, "mse": 0.5 / m ** 0.5, "source": opts["wt_source"], "per_language": {}},
        })  # fmt: skip
        atomic_write_json(run / "eval_artifacts.json", {
            "eval_layer_hist": [3, 20, 1, 0], "eval_layer_hist_per_language": {"sw": [3, 10, 1, 0]},
            "eval_prompts": 24, "decision": "argmax", "use_wt": opts["use_wt"], "wt_per_language": False,
            "fixed_source_layer": opts["fixed_source_layer"], "fuse_after_layer": 0,
        })  # fmt: skip
    return run


def fake_store(root: Path) -> dict[str, Path]:
    """Zero-shot, vanilla x 3 seeds, cc x 3 seeds, fixed-layer and W_T ablations, W_T off, and two
    incomplete runs."""
    runs = {"none": write_run(root, "none", accuracy={"*": 0.25, "en": 0.5})}
    for seed in range(3):
        runs[f"vanilla{seed}"] = write_run(root, "vanilla", seed, accuracy={"*": 0.5, "en": 0.7})
        runs[f"cc{seed}"] = write_run(root, "cc", seed, accuracy={"*": 0.75, "en": 0.7})
    for layer, acc in ((0, 0.5), (2, 0.6), (3, 0.55)):
        runs[f"fixed{layer}"] = write_run(root, "cc", 0, {"fixed_source_layer": layer}, {"*": acc})
    for m, acc in ((10, 0.4), (100, 0.6), (1000, 0.7)):
        runs[f"wt{m}"] = write_run(root, "cc", 0, {"wt_source": "parallel", "wt_samples": m}, {"*": acc},
                                   training_run=runs["cc0"].name)  # fmt: skip
    runs["wt_off"] = write_run(root, "cc", 0, {"use_wt": False}, {"*": 0.45}, training_run=runs["cc0"].name)
    runs["training"] = write_run(root, "vanilla", 7, phase="training")
    missing = write_run(root, "vanilla", 8, accuracy={"*": 0.5, "en": 0.7})  # a 4th vanilla seed, but yo
    (missing / "results" / "sib200_mc_yo.json").unlink()
    runs["missing"] = missing
    return runs


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    root = tmp_path_factory.mktemp("store")
    return root, fake_store(root)


@pytest.fixture(scope="module")
def report_dir(store, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    write_report([str(store[0])], out, iters=500)
    return out


# -- bootstrap ----------------------------------------------------------------------------------------


def test_bootstrap_identical_and_constant_shift() -> None:
    rng = np.random.default_rng(1)
    b = rng.random(50)
    same = paired_bootstrap([(b, b)])
    assert (same.delta, same.lo, same.hi, same.n_items) == (0.0, 0.0, 0.0, 50) and not same.significant
    shifted = paired_bootstrap([(b + 2.0, b)])
    assert shifted.delta == pytest.approx(2.0) and shifted.lo == pytest.approx(2.0)
    assert shifted.hi == pytest.approx(2.0) and shifted.significant
    # strata: the statistic is the mean over strata (a language average), each paired on its items
    two = paired_bootstrap([(b + 1.0, b), (b[:20] + 3.0, b[:20])])
    assert (two.delta, two.n_items) == (pytest.approx(2.0), 70) and two.lo == pytest.approx(2.0)


def test_bootstrap_binomial_interval() -> None:
    """30 of 100 items gained, none lost: delta 0.3, the interval ~ 0.3 +- 1.96 sqrt(.3 .7 / 100)."""
    a = np.zeros(100)
    a[:30] = 1.0
    d = paired_bootstrap([(a, np.zeros(100))], iters=4000, seed=3)
    assert d.delta == pytest.approx(0.3)
    half = 1.96 * (0.3 * 0.7 / 100) ** 0.5
    assert d.lo == pytest.approx(0.3 - half, abs=0.02) and d.hi == pytest.approx(0.3 + half, abs=0.02)
    assert paired_bootstrap([(a, np.zeros(100))], iters=4000, seed=3) == d  # seeded: reproducible


def test_bootstrap_pairs_items() -> None:
    """Item difficulty cancels: both sides share a large item effect, the difference is small and
    constant but for a few items; a paired interval is narrow, and excludes zero."""
    difficulty = np.linspace(0, 100, 200)
    b = difficulty.copy()
    a = difficulty + 1.0
    a[:10] -= 3.0
    d = paired_bootstrap([(a, b)], seed=0)
    assert d.delta == pytest.approx(0.85) and 0.6 < d.lo < d.hi < 1.0 and d.significant


def test_bootstrap_resamples_seeds() -> None:
    """Two seeds that disagree completely (all right / all wrong): averaging seeds first would give a
    zero-width interval around 0.5; resampling seeds too spans 0 to 1. One seed: items only."""
    a = np.stack([np.ones(50), np.zeros(50)])  # (2 seeds, 50 items)
    b = np.zeros((1, 50))
    d = paired_bootstrap([(a, b)], iters=2000, seed=0)
    assert d.delta == pytest.approx(0.5) and (d.seeds_a, d.seeds_b) == (2, 1)
    assert d.lo == pytest.approx(0.0) and d.hi == pytest.approx(1.0) and not d.significant
    averaged = paired_bootstrap([(a.mean(axis=0), b)])
    assert averaged.lo == averaged.hi == pytest.approx(0.5)
    # the seed draw is shared across strata (a seed is one model in every language)
    shared = paired_bootstrap([(a, b), (a, b)], iters=2000, seed=0)
    assert shared.lo == pytest.approx(0.0) and shared.hi == pytest.approx(1.0)


def test_align_keeps_common_items_only() -> None:
    a, b, ids = align(
        [{"1": 1.0, "2": 0.0, "3": 1.0}], [{"2": 1.0, "3": 1.0, "4": 0.0}, {"2": 0.0, "3": 1.0}]
    )
    assert ids == ["2", "3"] and a.tolist() == [[0.0, 1.0]] and b.tolist() == [[1.0, 1.0], [0.0, 1.0]]
    assert paired_bootstrap([align([{"1": 1.0}], [{"2": 1.0}])[:2]]) is None


# -- tables and deltas --------------------------------------------------------------------------------


def test_table_pivot_means_over_seeds_with_english_apart(store) -> None:
    runs, _ = load_runs([str(store[0])])
    frame = frame_of(runs)
    sub = frame[(frame.benchmark == "sib200") & (frame.protocol == "mc")]
    columns = ["sw", "yo", AVG_NON_EN, "en", AVG]
    scores, spread = score_table(sub, ["sw", "yo", "en"], columns)
    assert list(scores.columns) == columns
    assert list(scores.index[:3]) == ["none", "vanilla", "cc"]  # zero-shot, vanilla, then the rest
    assert scores.loc["vanilla", "sw"] == pytest.approx(50.0) and scores.loc["cc", "en"] == pytest.approx(
        70.0
    )
    assert scores.loc["none", AVG_NON_EN] == pytest.approx(25.0)
    assert scores.loc["none", AVG] == pytest.approx((25 + 25 + 50) / 3)
    assert spread.loc["vanilla", "sw"] == 0.0
    # the existing per-run table still works on the extended frame
    table = language_table(frame)
    assert {"en", "sw", "yo", "avg", "avg non-en"} <= set(table.columns)


def test_variant_labels_name_options_and_differing_settings() -> None:
    base = RunConfig(method="cc", seed=0, train=PROFILES["cpu"].to_dict()).to_dict()
    other_seed = {**base, "seed": 1}
    option = {**base, "method_options": {"wt_samples": 10}}
    base["train"]["epochs"] = 1.0
    longer = {**base, "train": {**base["train"], "epochs": 3.0}}
    assert variant_labels([base, other_seed, option]) == ["cc", "cc", "cc (wt_samples=10)"]
    assert variant_labels([base, longer]) == ["cc [epochs=1.0]", "cc [epochs=3.0]"]
    zero_shot = RunConfig(method="none", seed=3).to_dict()
    assert variant_labels([zero_shot, {**zero_shot, "train_limit": 5}]) == ["none", "none"]


def test_deltas_against_vanilla_and_zero_shot(store) -> None:
    report = build_report([str(store[0])], store[0].parent / "unused", iters=500)
    sib = next(b for b in report.benches if b.bench == "sib200_mc")
    d = sib.deltas["vanilla"]["cc"]
    assert d["sw"].delta == pytest.approx(25.0) and d[AVG_NON_EN].delta == pytest.approx(25.0)
    assert d["en"].delta == pytest.approx(0.0) and not d["en"].significant
    assert d["sw"].significant and d["sw"].n_items == 40
    # vanilla seed 8 lacks yo: it counts for sw, not for yo or the non-English average
    assert (d["sw"].seeds_a, d["sw"].seeds_b) == (3, 4) and (d["yo"].seeds_a, d["yo"].seeds_b) == (3, 3)
    assert d[AVG_NON_EN].n_items == 80 and d[AVG_NON_EN].seeds_b == 3
    zero = sib.deltas["none"]["vanilla"]
    assert zero["sw"].delta == pytest.approx(25.0) and zero["sw"].significant
    assert sib.items == {"sw": "40", "yo": "40", "en": "40"}


# -- skipped runs, escaping, files --------------------------------------------------------------------


def test_incomplete_runs_are_skipped_with_a_warning(store, report_dir: Path) -> None:
    root, runs = store
    frame, skipped = load_frame([str(root)])
    assert f"{runs['training'].name} (training)" in skipped
    assert f"{runs['missing'].name} (missing sib200_mc_yo)" in skipped
    assert runs["training"].name not in set(frame.run)
    page = (report_dir / "index.html").read_text()
    warning = re.search(r'<div class="warning" id="skipped">(.*?)</div>', page, re.S).group(1)
    assert runs["training"].name in warning and "(training)" in warning and "missing sib200_mc_yo" in warning
    assert "Warning: skipped incomplete runs" in (report_dir / "index.md").read_text()


def test_untrusted_text_stays_text(report_dir: Path) -> None:
    page = (report_dir / "items" / "xnli_gen_sw.html").read_text()
    assert (
        EVIL not in page and "&lt;script&gt;document.body.dataset.pwned=&#x27;1&#x27;&lt;/script&gt;" in page
    )
    assert "<b>go</b>" not in page and "&lt;b&gt;go&lt;/b&gt;" in page  # prompts too
    assert page.count("<script>") == 1  # the filter, and nothing else
    assert EVIL not in (report_dir / "index.html").read_text()


def test_report_writes_every_file(report_dir: Path, store) -> None:
    names = {p.relative_to(report_dir).as_posix() for p in report_dir.rglob("*") if p.is_file()}
    assert {"index.html", "index.md", "scores.csv", "deltas.csv", "results.csv", "results.md"} <= names
    assert {"items/sib200_mc_sw.html", "items/xnli_gen_en.html"} <= names
    plots = {n for n in names if n.startswith("plots/")}
    assert {"plots/bars_sib200_mc.png", "plots/bars_xnli_gen.png", "plots/fixed_layer_sib200_mc.png",
            "plots/wt_mse.png", "plots/wt_acc_sib200_mc.png", "plots/training_loss.png"} <= plots  # fmt: skip
    layers = [n for n in plots if n.startswith("plots/layers_")]
    assert len(layers) == 3 + 3 + 1  # cc x 3 seeds, the W_T points, W_T off (not the fixed-layer runs)
    page = (report_dir / "index.html").read_text()
    for src in re.findall(r'<img src="([^"]+)"', page):
        assert (report_dir / src).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert page.count('<table class="scores">') == 2 and page.count('<table class="deltas">') == 6
    # best cell of sib200_mc's sw column: cc (75.0); the Markdown bolds it too
    assert re.search(r'<td class="best">75\.0', page)
    assert "| cc | **75.0** |" in (report_dir / "index.md").read_text()
    deltas = pd.read_csv(report_dir / "deltas.csv")
    row = deltas[(deltas.bench == "sib200_mc") & (deltas.reference == "vanilla") & (deltas.variant == "cc")
                 & (deltas.column == "sw")].iloc[0]  # fmt: skip
    assert row.delta == pytest.approx(25.0) and bool(row.significant) and row["items"] == 40
    # configs and commands of every complete run
    root, runs = store
    assert runs["cc0"].name in page and "harness run --method X" in page and "trained model of" in page


@pytest.mark.parametrize("heldout", [True, False], ids=["with-heldout", "old-artifacts"])
def test_wt_mse_figure_draws_in_sample_and_heldout_mse(tmp_path: Path, monkeypatch, heldout: bool) -> None:
    """The MSE-against-M figure: per group, the in-sample MSE (dashed) and the held-out one (solid) from
    `transform.mse_heldout` of cc_artifacts.json; artifacts written before it existed render the in-sample
    curves alone. The default `wt_source: train` at wt_samples=10 and 1000 (all 150 pairs) is a group too."""
    from harness.reports import plots

    root = tmp_path / "store"
    cc0 = write_run(root, "cc", 0, accuracy={"*": 0.75})
    write_run(root, "cc", 0, {"wt_samples": 10}, {"*": 0.5}, training_run=cc0.name)
    for m in (10, 100, 1000):
        options = {"wt_source": "parallel", "wt_samples": m}
        write_run(root, "cc", 0, options, {"*": 0.6}, training_run=cc0.name)
    for path in root.glob("*/cc_artifacts.json"):
        values = json.loads(path.read_text())
        if heldout:
            values["transform"] |= {"mse_heldout": 2 * values["transform"]["m"] ** -0.25, "heldout": 200}
        atomic_write_json(path, values)
    drawn = []
    original = plots.against

    def against(curves, *args, **kwargs):
        drawn.append((curves, args))
        return original(curves, *args, **kwargs)

    monkeypatch.setattr(plots, "against", against)
    report = build_report([str(root)], tmp_path / "report", iters=50)
    (figure,) = [f for f in report.figures["W_T against M"] if f.title == "MSE against M"]
    assert (tmp_path / "report" / figure.path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (curves,) = [c for c, args in drawn if args[3] == "MSE"]  # (references, title, xlabel, ylabel, path)
    by_label = {c.label: c for c in curves}
    in_sample = {"cc, in-sample", "wt_source=parallel, in-sample"}
    held = {"cc, held-out", "wt_source=parallel, held-out"}
    assert set(by_label) == (in_sample | held if heldout else in_sample)
    parallel = by_label["wt_source=parallel, in-sample"]
    assert parallel.x == [10, 100, 1000] and parallel.linestyle == "--"
    assert parallel.y == pytest.approx([0.5 / m**0.5 for m in (10, 100, 1000)])
    assert by_label["cc, in-sample"].x == [10, 150]  # the default source's training pairs: M = 10 and all
    assert "exactly 0 whenever M*L <= d" in figure.caption
    if heldout:
        curve = by_label["wt_source=parallel, held-out"]
        assert curve.linestyle == "-" and curve.color == parallel.color
        assert curve.y == pytest.approx([2 * m**-0.25 for m in (10, 100, 1000)])
        assert "held-out MSE on H = 200 pairs never used in any fit" in figure.caption
    else:
        assert "recorded no held-out MSE" in figure.caption


# -- the page in a browser ----------------------------------------------------------------------------


def chromium(url: str, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("Chromium is not installed (apt-get install chromium): the page is not rendered")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp / 'chromium-profile'}", "--window-size=1400,2000"]  # fmt: skip
    return subprocess.run([exe, *flags, *extra, url], capture_output=True, text=True)


def test_page_renders_in_headless_chromium(report_dir: Path, tmp_path: Path) -> None:
    dom = chromium((report_dir / "index.html").as_uri(), tmp_path, "--dump-dom").stdout
    assert dom.count("<table") >= 7 and "Skipped 2 incomplete" in dom
    images = re.search(r'data-images="(\d+)" data-images-loaded="(\d+)"', dom)
    assert images and int(images.group(1)) >= 10 and images.group(1) == images.group(2)  # every PNG loaded
    items = chromium((report_dir / "items" / "xnli_gen_sw.html").as_uri(), tmp_path, "--dump-dom").stdout
    assert "data-pwned" not in items and "40 of 40 items" in items  # the filter ran; the output did not
    shot = tmp_path / "index.png"
    chromium((report_dir / "index.html").as_uri(), tmp_path, f"--screenshot={shot}")
    assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 20_000


def test_cli_report(store, tmp_path: Path, capsys) -> None:
    from harness.cli import main

    assert main(["report", str(store[0]), "--out", str(tmp_path / "r"), "--bootstrap", "200"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {tmp_path / 'r' / 'index.html'}" in out and "sib200_mc" in out
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "no such run folder" in capsys.readouterr().err
    json.loads(json.dumps(build_report([str(store[0])], tmp_path / "r2", iters=50).skipped))
