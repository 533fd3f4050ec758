"""`harness data verify` (a good folder, a changed byte, a missing file, extra files), writing a manifest,
the shared data folder against the shipped manifest, and where the harness reads data (`data_dir`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from harness.cli import main
from harness.data import base
from harness.data.base import FETCHED_MARKER, data_dir, user_data_dir
from harness.data.sources.fetch import fetch
from harness.data.sources.manifest import load, verify
from harness.data.sources.plan import every_output, select
from harness.plumbing.errors import HarnessError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sources"
MANIFEST = FIXTURES / "manifest.json"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The fixture slices built once (en, sw, zh), to be copied by each test."""
    out = tmp_path_factory.mktemp("built") / "data"
    report = fetch(
        out, select(None, ["en", "sw", "zh"]), load(MANIFEST), from_root=FIXTURES, say=lambda line: None
    )
    assert len(report.built) == 24 and not report.differing
    return out


@pytest.fixture
def folder(built, tmp_path) -> Path:
    return Path(shutil.copytree(built, tmp_path / "data"))


def verify_cli(capsys, *argv: str) -> tuple[int, list[str]]:
    code = main(["data", "verify", *argv])
    return code, capsys.readouterr().out.splitlines()


def test_a_good_folder(folder, capsys) -> None:
    code, lines = verify_cli(capsys, str(folder), "--manifest", str(MANIFEST))
    assert code == 0
    assert lines == [
        f"{folder}: 24 files match the manifest, 0 differ, 0 missing, 0 extra (not in the manifest)"
    ]


def test_a_changed_byte(folder, capsys) -> None:
    path = folder / "benchmarks" / "xnli" / "sw.jsonl"
    data = bytearray(path.read_bytes())
    data[10] ^= 1
    path.write_bytes(bytes(data))
    code, lines = verify_cli(capsys, str(folder), "--manifest", str(MANIFEST))
    assert code == 1
    assert len(lines) == 2 and lines[0].startswith(
        f"differs: {path}: differs from the manifest (size {len(data)}, "
    )
    assert (
        lines[1]
        == f"{folder}: 23 files match the manifest, 1 differ, 0 missing, 0 extra (not in the manifest)"
    )


def test_a_missing_file_and_extra_files(folder, capsys) -> None:
    (folder / "parallel" / "ntrex" / "zh.jsonl").unlink()
    (folder / "notes.txt").write_text("mine")
    code, lines = verify_cli(capsys, str(folder), "--manifest", str(MANIFEST))
    assert code == 1
    assert lines == [
        f"missing: {folder}/parallel/ntrex/zh.jsonl",
        f"extra: {folder}/notes.txt (not in the manifest)",
        f"{folder}: 23 files match the manifest, 0 differ, 1 missing, 1 extra (not in the manifest)",
    ]
    code, _ = verify_cli(capsys, str(folder), "--manifest", str(MANIFEST), "--partial")
    assert code == 0  # a subset: only mismatches fail


def test_the_fixture_folder_against_the_shipped_manifest(folder, capsys) -> None:
    """The fixture slices are not the real files: every one differs, and the other 92 are missing."""
    code, lines = verify_cli(capsys, str(folder))
    assert code == 1
    assert (
        lines[-1]
        == f"{folder}: 0 files match the manifest, 24 differ, 92 missing, 0 extra (not in the manifest)"
    )


def test_write_manifest(folder, tmp_path, capsys) -> None:
    target = tmp_path / "m.json"
    code, lines = verify_cli(capsys, str(folder), "--write-manifest", str(target))
    assert code == 0 and lines == [f"wrote the manifest of 24 files in {folder} -> {target}"]
    assert target.read_text() == MANIFEST.read_text()  # the committed fixture manifest is this very output
    (folder / "benchmarks" / "xnli" / "yo.jsonl").write_text("{}\n")
    code = main(["data", "verify", str(folder), "--write-manifest", str(target)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(
        f"error: {folder}/benchmarks/xnli/yo.jsonl: not a file harness data fetch builds"
    )


def test_a_bad_manifest_and_folder(tmp_path, capsys) -> None:
    bad = tmp_path / "m.json"
    bad.write_text("{}")
    code = main(["data", "verify", str(tmp_path), "--manifest", str(bad)])
    assert code == 2 and capsys.readouterr().err == (
        f"error: {bad}: not a data manifest of format 1 (expected 'format', 'files', 'sources')\n"
    )
    code = main(["data", "verify", str(tmp_path / "none")])
    assert (
        code == 2
        and capsys.readouterr().err
        == f"error: {tmp_path / 'none'}: not a folder; pass the data folder to verify\n"
    )


def test_the_shared_data_matches_the_shipped_manifest(tmp_path, monkeypatch, capsys) -> None:
    """The data folder the harness falls back to (../shared/data) is what the converters build: every file
    matches the shipped manifest (checked in CI, where the folder exists)."""
    monkeypatch.delenv("HARNESS_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))
    try:
        shared = data_dir()
    except HarnessError as e:
        pytest.skip(str(e))
    check = verify(shared, load())
    assert check.ok() and len(check.matching) == len(every_output()) == 116, check.differing + check.missing
    assert check.extra == []
    code, lines = verify_cli(capsys)  # no folder: the one the harness reads
    assert code == 0 and lines[-1].startswith(f"{shared}: 116 files match the manifest, 0 differ, 0 missing")


def test_data_dir_precedence(tmp_path, monkeypatch) -> None:
    def data_folder(path: Path) -> Path:
        (path / "benchmarks").mkdir(parents=True)
        return path

    cache_home = tmp_path / "xdg"
    project = tmp_path / "work" / "project"
    shared = data_folder(tmp_path / "work" / "shared" / "data")
    monkeypatch.setattr(base, "PROJECT_ROOT", project)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
    monkeypatch.delenv("HARNESS_DATA", raising=False)
    assert user_data_dir() == cache_home / "cc-harness" / "data"
    assert data_dir() == shared  # no cache folder built: the shared fallback
    (cache_home / "cc-harness" / "data").mkdir(parents=True)
    assert data_dir() == shared  # a cache folder without benchmarks/ is not a data folder
    cache = data_folder(cache_home / "cc-harness" / "data")
    assert data_dir() == shared  # a fetch that has not finished (killed, or a file differs) is not used
    (cache / FETCHED_MARKER).write_text('{"files": []}')
    assert data_dir() == cache  # finished by `harness data fetch`: before the fallback
    own = data_folder(tmp_path / "own")
    monkeypatch.setenv("HARNESS_DATA", str(own))
    assert data_dir() == own  # $HARNESS_DATA first
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(
        HarnessError, match=r"^HARNESS_DATA=.*/nowhere has no benchmarks/ folder; point it at"
    ):
        data_dir()
    monkeypatch.delenv("HARNESS_DATA")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert user_data_dir() == tmp_path / "home" / ".cache" / "cc-harness" / "data"
    shutil.rmtree(shared)
    with pytest.raises(HarnessError) as e:
        data_dir()
    assert str(e.value) == (
        f"data not found: run `harness data fetch` (builds it into {tmp_path}/home/.cache/cc-harness/data), set "
        f"HARNESS_DATA to a data folder, or place the shared data at {tmp_path}/work/shared/data or "
        f"{tmp_path.parent}/shared/data"
    )
