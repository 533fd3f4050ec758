"""`harness data fetch`, offline: from local copies (`--from`) and through urllib with file:// URLs of the
fixture slices (no socket is opened), resumed after a Ctrl-C and after a SIGKILL at named fault points,
subsets, and the one-line errors for a source that cannot be had."""

from __future__ import annotations

import email.message
import io
import json
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from harness.cli import main
from harness.data.base import FETCHED_MARKER
from harness.data.sources import fetch as fetch_module
from harness.data.sources.fetch import DOWNLOADS, download, fetch
from harness.data.sources.manifest import load, verify
from harness.data.sources.plan import SOURCES, select
from harness.plumbing import faults

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "sources"
MANIFEST = FIXTURES / "manifest.json"
LANGS = "en,sw,zh"  # the fixture slices hold these languages
URL = f"file://{FIXTURES}/{{source}}/{{path}}"


@pytest.fixture(autouse=True)
def no_sockets(monkeypatch):
    monkeypatch.delenv("HARNESS_DATA", raising=False)  # else fetch ends with a note on where data is read

    def refuse(*args, **kwargs):
        raise AssertionError("a test opened a socket")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def files_of(root: Path) -> list[str]:
    """The data files of a built folder (not fetch's own record of a finished build, `FETCHED_MARKER`)."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != FETCHED_MARKER)


def test_fetch_from_local_copies_end_to_end(tmp_path, capsys) -> None:
    out = tmp_path / "data"
    code, stdout, err = cli(capsys, "data", "fetch", "--from", str(FIXTURES), "--to", str(out), "--langs", LANGS,
                            "--manifest", str(MANIFEST))  # fmt: skip
    assert code == 0, err
    assert stdout.splitlines()[0] == f"building 24 files into {out} from local copies in {FIXTURES}"
    for source in SOURCES.values():  # each source is announced with its licence
        assert f"source {source.describe()}" in stdout
    assert "[24/24] parallel/ntrex/zh.jsonl" in stdout
    assert stdout.splitlines()[-1].startswith(f"{out}: 24 files built, 0 already present, 0 differ from the manifest; "
                                              "0 source files downloaded in ")  # fmt: skip
    assert files_of(out) == sorted([*load(MANIFEST).files, "README.md"])
    assert "CC-BY-SA 4.0 (NTREX-128)" in (out / "README.md").read_text()
    assert verify(out, load(MANIFEST)).ok()
    # Again: every file is present and matches, nothing is rebuilt; --force rebuilds all.
    code, stdout, _ = cli(capsys, "data", "fetch", "--from", str(FIXTURES), "--to", str(out), "--langs", LANGS,
                          "--manifest", str(MANIFEST))  # fmt: skip
    assert (
        code == 0
        and "24 files already built and matching the manifest: kept" in stdout
        and "\nsource " not in stdout
    )
    code, stdout, _ = cli(capsys, "data", "fetch", "--from", str(FIXTURES), "--to", str(out), "--langs", LANGS,
                          "--manifest", str(MANIFEST), "--force")  # fmt: skip
    assert code == 0 and ": 24 files built, 0 already present" in stdout


def test_fetch_reports_files_that_differ_from_the_manifest(tmp_path, capsys) -> None:
    """Against the shipped manifest (the full data) the fixture slices differ: each is reported, exit 1."""
    out = tmp_path / "data"
    code, stdout, err = cli(capsys, "data", "fetch", "--from", str(FIXTURES), "--to", str(out), "--langs", "sw",
                            "--benchmarks", "ntrex")  # fmt: skip
    assert code == 1
    assert "[1/1] parallel/ntrex/sw.jsonl DIFFERS from the manifest" in stdout
    assert err.startswith(f"differs: {out}/parallel/ntrex/sw.jsonl: differs from the manifest (size ")
    assert (out / DOWNLOADS).exists() is False  # --from downloads nothing


def test_fetch_through_urllib_with_file_urls(tmp_path, capsys) -> None:
    out = tmp_path / "data"
    code, stdout, err = cli(capsys, "data", "fetch", "--to", str(out), "--langs", LANGS, "--manifest", str(MANIFEST),
                            "--source-url", URL)  # fmt: skip
    assert code == 0, err
    assert f"  downloading file://{FIXTURES}/ntrex/NTREX-128/newstest2019-ref.swa.txt (" in stdout
    n_sources = len({(o.source.name, p) for o in select(None, LANGS.split(",")) for p in o.inputs})
    assert f"; {n_sources} source files downloaded in " in stdout.splitlines()[-1]
    assert files_of(out) == sorted([*load(MANIFEST).files, "README.md"])  # the downloads are cleaned up
    assert verify(out, load(MANIFEST)).ok()


def test_fetch_resumes_after_ctrl_c_without_downloading_finished_files(tmp_path, monkeypatch) -> None:
    """Ctrl-C while the 5th source file is downloading: it is left as .part; the next run keeps the two
    finished outputs, downloads no finished source file again, and completes the .part."""
    out, manifest = tmp_path / "data", load(MANIFEST)
    outputs = select(["xnli"], LANGS.split(","))
    monkeypatch.setenv(faults.ENV, "interrupt@fetch_chunk#5")
    monkeypatch.setattr(faults, "_hits", Counter())
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            fetch(out, outputs, manifest, url_template=URL, say=lambda line: None)
    finally:
        signal.signal(signal.SIGINT, previous)
    parts = [p for p in files_of(out) if p.endswith(".part")]
    assert parts == [f"{DOWNLOADS}/cc-tuning/Inference/data/XNLI/split_sample/zh.json.part"]
    assert [p for p in files_of(out) if p.startswith("benchmarks")] == ["benchmarks/xnli/en.jsonl",
                                                                       "benchmarks/xnli/sw.jsonl"]  # fmt: skip
    monkeypatch.delenv(faults.ENV)
    report = fetch(out, outputs, manifest, url_template=URL, say=lambda line: None)
    assert report.kept == ["benchmarks/xnli/en.jsonl", "benchmarks/xnli/sw.jsonl"]
    assert report.built == ["benchmarks/xnli/zh.jsonl"] and not report.differing
    assert [u.rpartition("XNLI/")[2] for u in report.downloaded] == [
        "split_sample/zh.json",
        "ans_sample/zh.json",
    ]
    assert files_of(out) == ["README.md", *(o.path for o in outputs)]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_fetch_resumes_after_sigkill(tmp_path) -> None:
    """A real SIGKILL right after the 3rd built file: the same command again finishes the job."""
    out = tmp_path / "data"
    argv = [sys.executable, "-m", "harness.cli", "data", "fetch", "--to", str(out), "--langs", LANGS,
            "--benchmarks", "mgsm,ntrex", "--manifest", str(MANIFEST), "--source-url", URL]  # fmt: skip
    env = {**os.environ, faults.ENV: "kill@fetch_output#3"}
    killed = subprocess.run(
        argv, capture_output=True, text=True, env=env, cwd=ROOT, preexec_fn=_default_sigint
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert "[3/7] benchmarks/mgsm/sw.jsonl" in killed.stdout and (out / DOWNLOADS).is_dir()
    assert not (out / FETCHED_MARKER).exists()  # an unfinished folder: `data_dir()` does not read from it
    env.pop(faults.ENV)
    again = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "3 files already built and matching the manifest: kept" in again.stdout
    assert "mgsm_sw.tsv" not in again.stdout and "mgsm_zh.tsv" in again.stdout  # downloaded once only
    assert again.stdout.count("downloading") == 4  # mgsm_zh.tsv and the three NTREX files
    assert sorted(files_of(out)) == sorted(
        ["README.md", *(o.path for o in select(["mgsm", "ntrex"], LANGS.split(",")))]
    )
    marked = json.loads((out / FETCHED_MARKER).read_text())["files"]
    assert marked == sorted(o.path for o in select(["mgsm", "ntrex"], LANGS.split(",")))


class FakeResponse(io.BytesIO):
    def __init__(self, data: bytes, status: int):
        super().__init__(data)
        self.status = status
        self.headers = email.message.Message()
        self.headers["Content-Length"] = str(len(data))


def test_a_part_file_is_continued_with_a_range_request(tmp_path, monkeypatch) -> None:
    whole = b"0123456789abcdefghij"
    dest = tmp_path / "f.txt"
    dest.with_name("f.txt.part").write_bytes(whole[:8])
    asked = []

    def urlopen(request, timeout):
        asked.append(request.get_header("Range"))
        return FakeResponse(whole[8:], 206)

    monkeypatch.setattr(fetch_module.urllib.request, "urlopen", urlopen)
    download("https://example.org/f.txt", dest, SOURCES["ntrex"], say=lambda line: None)
    assert asked == ["bytes=8-"] and dest.read_bytes() == whole and not dest.with_name("f.txt.part").exists()


def test_a_source_that_cannot_be_downloaded_is_one_error_line(tmp_path, capsys) -> None:
    url = f"file://{tmp_path}/nowhere/{{path}}"
    code, _, err = cli(capsys, "data", "fetch", "--to", str(tmp_path / "d"), "--benchmarks", "ntrex", "--langs", "sw",
                       "--source-url", url)  # fmt: skip
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0] == (
        f"error: source ntrex: cannot download file://{tmp_path}/nowhere/NTREX-128/newstest2019-ref.swa.txt "
        f"([Errno 2] No such file or directory: '{tmp_path}/nowhere/NTREX-128/newstest2019-ref.swa.txt'); "
        "bring it by hand: git clone https://github.com/MicrosoftTranslator/NTREX <dir>/ntrex && git -C <dir>/ntrex "
        f"checkout {SOURCES['ntrex'].commit}, then run harness data fetch --from <dir>"
    )


def test_a_source_missing_from_local_copies_is_one_error_line(tmp_path, capsys) -> None:
    code, _, err = cli(capsys, "data", "fetch", "--from", str(FIXTURES), "--to", str(tmp_path / "d"),
                       "--benchmarks", "ntrex", "--langs", "yo")  # fmt: skip
    missing = FIXTURES / "ntrex" / "NTREX-128" / "newstest2019-ref.yor.txt"
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: source ntrex: {missing} not found; --from needs one folder per source "
                          "(cc-tuning, url-nlp, sib-200, ntrex), each a checkout of its repository at the pinned "
                          "commit: git clone https://github.com/MicrosoftTranslator/NTREX "
                          f"{FIXTURES / 'ntrex'}")  # fmt: skip


def test_subsets_and_bad_names(tmp_path, capsys) -> None:
    out = tmp_path / "data"
    code, _, err = cli(capsys, "data", "fetch", "--from", str(FIXTURES), "--to", str(out), "--benchmarks",
                       "mgsm,sib200", "--langs", "sw", "--manifest", str(MANIFEST))  # fmt: skip
    assert code == 0, err
    assert files_of(out) == ["README.md", "benchmarks/mgsm/exemplars.json", "benchmarks/mgsm/sw.jsonl",
                             "parallel/flores_sib/sw.jsonl"]  # fmt: skip
    code, _, err = cli(capsys, "data", "fetch", "--to", str(out), "--benchmarks", "xnli,mgms")
    assert code == 2 and err.startswith(
        "error: unknown benchmark 'mgms' in --benchmarks (did you mean 'mgsm'?); valid: "
    )
    assert "ntrex" in err and "sib200" in err
    code, _, err = cli(capsys, "data", "fetch", "--to", str(out), "--langs", "sw,swa")
    assert code == 2 and err.startswith(
        "error: unknown language 'swa' in --langs (did you mean 'sw'?); valid: ar, "
    )
    code, _, err = cli(capsys, "data", "fetch", "--to", str(out), "--from", str(tmp_path / "none"))
    assert code == 2 and err == (f"error: --from {tmp_path / 'none'}: not a folder; expected one sub-folder per source "
                                 "(cc-tuning, url-nlp, sib-200, ntrex)\n")  # fmt: skip
