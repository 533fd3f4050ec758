"""`harness data fetch`: get the source files, convert them, check the result against the manifest.

Source files come over plain HTTPS at each source's pinned commit (`raw.githubusercontent.com`), or from
local copies (`--from ROOT`: one folder per source, named as in `plan.SOURCES`). Every step survives a
kill: a download goes to `<file>.part` and is renamed when complete (a leftover `.part` is resumed with
an HTTP range request where the server allows it, else downloaded anew); downloads wait in
`<target>/.sources/` until every file is built; a built file is written atomically, and a file already
present that matches the manifest is kept (its sources are not fetched at all).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness.data.base import FETCHED_MARKER
from harness.data.sources.manifest import Manifest
from harness.data.sources.plan import SOURCES, Output, Source
from harness.data.sources.readme import readme
from harness.plumbing import faults
from harness.plumbing.errors import HarnessError
from harness.plumbing.io import atomic_write_bytes, fsync_dir

RAW_URL = "https://raw.githubusercontent.com/{repo}/{commit}/{path}"
DOWNLOADS = ".sources"  # under the target folder, removed once every file is built and matches
CHUNK = 1 << 16
TIMEOUT = 60


@dataclass
class FetchReport:
    target: Path
    built: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # already present and matching the manifest
    differing: list[str] = field(default_factory=list)  # one line each: built but not as the manifest says
    downloaded: list[str] = field(default_factory=list)  # URLs

    def summary(self) -> str:
        return (f"{self.target}: {len(self.built)} files built, {len(self.kept)} already present, "
                f"{len(self.differing)} differ from the manifest; "
                f"{len(self.downloaded)} source files downloaded")  # fmt: skip


def _by_hand(source: Source) -> str:
    return (f"bring it by hand: git clone {source.url} <dir>/{source.name} && git -C <dir>/{source.name} "
            f"checkout {source.commit}, then run harness data fetch --from <dir>")  # fmt: skip


def download(url: str, dest: Path, source: Source, say: Callable[[str], None]) -> None:
    """`url` -> `dest` through `dest.part`; a `.part` left by a killed run is continued (HTTP 206) or
    restarted (any server ignoring the range, and file:// URLs)."""
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": "cc-harness data fetch"} | ({"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=TIMEOUT
        ) as response:
            resumed = have > 0 and getattr(response, "status", None) == 206
            length = response.headers.get("Content-Length")
            say(
                f"  {'resuming' if resumed else 'downloading'} {url}"
                + (f" ({int(length):,} bytes)" if length else "")
            )
            got = 0
            with open(part, "ab" if resumed else "wb") as f:
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    got += len(chunk)
                    f.flush()
                    faults.point("fetch_chunk")
                os.fsync(f.fileno())
            if length is not None and got != int(length):
                raise HarnessError(f"source {source.name}: {url} ended after {got} of {length} bytes; "
                                   f"run the same command again to resume, or {_by_hand(source)}")  # fmt: skip
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the range is past the end: the .part is not what it should be
            part.unlink()
            return download(url, dest, source, say)
        raise HarnessError(f"source {source.name}: cannot download {url} (HTTP {e.code} {e.reason}); "
                           f"{_by_hand(source)}") from None  # fmt: skip
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as e:
        reason = getattr(e, "reason", None) or e
        raise HarnessError(
            f"source {source.name}: cannot download {url} ({reason}); {_by_hand(source)}"
        ) from None
    os.replace(part, dest)
    fsync_dir(dest.parent)


class SourceFiles:
    """The source files, from local copies (`from_root/<source>/<path>`) or downloaded into
    `target/.sources/<source>/<path>` (each at most once)."""

    def __init__(self, target: Path, from_root: Path | None, url_template: str, say: Callable[[str], None]):
        self.downloads = target / DOWNLOADS
        self.from_root = Path(from_root) if from_root else None
        self.url_template = url_template
        self.say = say
        self.fetched: list[str] = []
        if self.from_root is not None and not self.from_root.is_dir():
            raise HarnessError(f"--from {from_root}: not a folder; expected one sub-folder per source "
                               f"({', '.join(SOURCES)})")  # fmt: skip

    def url(self, source: Source, path: str) -> str:
        return self.url_template.format(repo=source.repo, commit=source.commit, source=source.name,
                                        path=urllib.parse.quote(path))  # fmt: skip

    def read(self, source: Source, path: str) -> bytes:
        if self.from_root is not None:
            local = self.from_root / source.name / path
            if not local.is_file():
                raise HarnessError(
                    f"source {source.name}: {local} not found; --from needs one folder per source "
                    f"({', '.join(SOURCES)}), each a checkout of its repository at the pinned commit: "
                    f"git clone {source.url} {self.from_root / source.name} && git -C "
                    f"{self.from_root / source.name} checkout {source.commit}"
                )
            return local.read_bytes()
        local = self.downloads / source.name / path
        if not local.is_file():
            url = self.url(source, path)
            download(url, local, source, self.say)
            self.fetched.append(url)
        return local.read_bytes()


def fetch(
    target: Path,
    outputs: list[Output],
    manifest: Manifest,
    *,
    from_root: Path | None = None,
    force: bool = False,
    url_template: str = RAW_URL,
    say: Callable[[str], None] = print,
) -> FetchReport:
    """Build `outputs` into `target`; each built file is checked against `manifest` (a file that differs is
    reported in `FetchReport.differing`, not raised)."""
    target = Path(target).expanduser()
    target.mkdir(parents=True, exist_ok=True)
    report = FetchReport(target)
    files = SourceFiles(target, from_root, url_template, say)
    if force:
        shutil.rmtree(files.downloads, ignore_errors=True)
    todo = []
    for output in outputs:
        if not force and manifest.matches(target, output.path):
            report.kept.append(output.path)
        else:
            todo.append(output)
    if report.kept:
        say(f"{len(report.kept)} files already built and matching the manifest: kept")
    for source in SOURCES.values():
        mine = [o for o in todo if o.source is source]
        if mine:
            say(f"source {source.describe()}")
        for output in mine:
            data = output.build([(f"{source.name}:{p}", files.read(source, p)) for p in output.inputs])
            atomic_write_bytes(target / output.path, data.encode("utf-8"))
            report.built.append(output.path)
            problem = manifest.problem(target, output.path)
            if problem:
                report.differing.append(problem)
            done = len(report.built) + len(report.kept)
            say(f"[{done}/{len(outputs)}] {output.path}" + (" DIFFERS from the manifest" if problem else ""))
            faults.point("fetch_output")
    report.downloaded = files.fetched
    text = readme()
    if not (target / "README.md").is_file() or (target / "README.md").read_text(encoding="utf-8") != text:
        atomic_write_bytes(target / "README.md", text.encode("utf-8"))
    if not report.differing:
        shutil.rmtree(files.downloads, ignore_errors=True)
        marker = target / FETCHED_MARKER  # the folder is complete for what was asked (and earlier fetches)
        earlier = json.loads(marker.read_text(encoding="utf-8")).get("files", []) if marker.is_file() else []
        done = sorted(set(earlier) | set(report.built) | set(report.kept))
        atomic_write_bytes(marker, (json.dumps({"files": done}, indent=1) + "\n").encode("utf-8"))
    return report
