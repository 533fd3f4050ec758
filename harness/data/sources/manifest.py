"""The checksum manifest of the data folder, and checking a folder against it.

`manifest.json` (shipped beside this module) lists every file of the data folder (path, SHA-256, size,
source) and every source (repository, URL, pinned commit, licence). It is generated, never written by
hand, from a reference data folder (the shared one, whose files the converters reproduce byte for byte):

    harness data verify ../shared/data --write-manifest

The data folder's `README.md` is written by `harness data fetch` and not checked (`unchecked`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.data.base import FETCHED_MARKER
from harness.data.sources.plan import SOURCES, every_output
from harness.plumbing.errors import HarnessError
from harness.plumbing.io import atomic_write_json

SHIPPED = Path(__file__).resolve().with_name("manifest.json")
UNCHECKED = ("README.md",)
FORMAT = 1


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Manifest:
    files: dict[str, dict[str, Any]]  # path -> {"sha256", "size", "source"}
    sources: dict[str, dict[str, str]]
    path: Path | None = None

    def matches(self, root: Path, rel: str) -> bool:
        """Whether `root/rel` exists with the manifest's size and SHA-256."""
        entry, path = self.files.get(rel), root / rel
        return bool(entry and path.is_file() and path.stat().st_size == entry["size"]
                    and sha256(path) == entry["sha256"])  # fmt: skip

    def problem(self, root: Path, rel: str) -> str | None:
        """None when `root/rel` matches, else why not (one line, naming the file)."""
        entry, path = self.files.get(rel), root / rel
        if entry is None:
            return f"{path}: not in the manifest ({self.where()})"
        if not path.is_file():
            return f"{path}: missing"
        size, digest = path.stat().st_size, sha256(path)
        if size != entry["size"] or digest != entry["sha256"]:
            return (f"{path}: differs from the manifest (size {size}, sha256 {digest[:16]}...; "
                    f"expected size {entry['size']}, sha256 {entry['sha256'][:16]}...)")  # fmt: skip
        return None

    def where(self) -> str:
        return str(self.path) if self.path else "the manifest"


def load(path: Path | None = None) -> Manifest:
    """The manifest at `path`, else the shipped one."""
    path = Path(path) if path else SHIPPED
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HarnessError(
            f"{path}: manifest not found; pass --manifest a file written by --write-manifest"
        ) from None
    except json.JSONDecodeError as e:
        raise HarnessError(f"{path}:{e.lineno}: malformed manifest JSON: {e.msg}") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT or not isinstance(obj.get("files"), dict):
        raise HarnessError(
            f"{path}: not a data manifest of format {FORMAT} (expected 'format', 'files', 'sources')"
        )
    return Manifest(files=obj["files"], sources=obj.get("sources", {}), path=path)


def _files_of(root: Path) -> list[str]:
    """Every file under `root` as a relative POSIX path, sorted."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def build(root: Path) -> dict[str, Any]:
    """The manifest of the data folder `root`: each of its files must be one `harness data fetch` builds."""
    root = Path(root)
    if not root.is_dir():
        raise HarnessError(f"{root}: not a folder; --write-manifest reads a built data folder")
    known = every_output()
    files: dict[str, dict[str, Any]] = {}
    for rel in _files_of(root):
        if rel in UNCHECKED or rel == FETCHED_MARKER:
            continue
        if rel not in known:
            raise HarnessError(f"{root / rel}: not a file harness data fetch builds (benchmarks/<task>/<lang>.jsonl, "
                               "benchmarks/mgsm/exemplars.json, parallel/{flores_sib,ntrex}/<lang>.jsonl)")  # fmt: skip
        path = root / rel
        files[rel] = {"sha256": sha256(path), "size": path.stat().st_size, "source": known[rel].source.name}
    if not files:
        raise HarnessError(f"{root}: no data files; --write-manifest reads a built data folder")
    used = {entry["source"] for entry in files.values()}
    sources = {s.name: {"repo": s.repo, "url": s.url, "commit": s.commit, "licence": s.licence}
               for s in SOURCES.values() if s.name in used}  # fmt: skip
    return {
        "format": FORMAT,
        "written_by": "harness data verify <reference data folder> --write-manifest",
        "unchecked": list(UNCHECKED),
        "sources": sources,
        "files": files,
    }


def write(root: Path, path: Path | None = None) -> tuple[Path, int]:
    """Write the manifest of `root` to `path` (default: the shipped one); returns (path, number of files)."""
    obj = build(root)
    target = Path(path) if path else SHIPPED
    atomic_write_json(target, obj)
    return target, len(obj["files"])


@dataclass
class Check:
    root: Path
    matching: list[str] = field(default_factory=list)
    differing: list[str] = field(default_factory=list)  # one line each
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)

    def ok(self, partial: bool = False) -> bool:
        return not self.differing and (partial or not self.missing)

    def summary(self) -> str:
        return (f"{self.root}: {len(self.matching)} files match the manifest, {len(self.differing)} differ, "
                f"{len(self.missing)} missing, {len(self.extra)} extra (not in the manifest)")  # fmt: skip


def verify(root: Path, manifest: Manifest) -> Check:
    """Check every file of the manifest in `root`; files the manifest does not list are `extra`."""
    root = Path(root)
    if not root.is_dir():
        raise HarnessError(f"{root}: not a folder; pass the data folder to verify")
    check = Check(root)
    for rel in sorted(manifest.files):
        problem = manifest.problem(root, rel)
        if problem is None:
            check.matching.append(rel)
        elif not (root / rel).is_file():
            check.missing.append(rel)
        else:
            check.differing.append(problem)
    present = set(manifest.files) | set(UNCHECKED) | {FETCHED_MARKER}  # the marker is fetch's own record
    check.extra = [rel for rel in _files_of(root) if rel not in present]
    return check
