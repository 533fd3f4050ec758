"""`harness data fetch` and `harness data verify`: build the data folder from its public sources, check one."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from harness.data.base import data_dir, user_data_dir
from harness.data.sources import manifest as manifests
from harness.data.sources.fetch import DOWNLOADS, RAW_URL, fetch
from harness.data.sources.plan import SOURCES, select
from harness.orchestration.options import names
from harness.plumbing.errors import unknown
from harness.tasks.catalog import BENCHMARKS

# Selectable with --benchmarks besides the benchmarks (`sib200` builds parallel/flores_sib).
PARALLEL_ONLY = ("ntrex",)


def add(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser(
        "data", help="build the data folder from its public sources (fetch), or check one (verify)"
    )
    dsub = d.add_subparsers(dest="data_command", required=True)
    f = dsub.add_parser(
        "fetch", help="download the sources at their pinned commits and build the data folder"
    )
    f.add_argument(
        "--to",
        metavar="DIR",
        help=f"the data folder to build (default {user_data_dir()}, where the harness looks)",
    )
    f.add_argument("--benchmarks", help=f"only these, comma-separated: {', '.join([*BENCHMARKS, *PARALLEL_ONLY])} "
                                        "(sib200 is parallel/flores_sib; default all)")  # fmt: skip
    f.add_argument(
        "--langs", help="only these languages, comma-separated (default all; English rows are read anyway)"
    )
    f.add_argument("--from", dest="from_root", metavar="SRC_ROOT",
                   help=f"read the sources from local copies: SRC_ROOT/{{{','.join(SOURCES)}}}, each a checkout of "
                        "its repository at the pinned commit, instead of downloading")  # fmt: skip
    f.add_argument("--force", action="store_true", help="rebuild (and download again) files already present")
    f.add_argument("--manifest", help="check against this manifest instead of the shipped one")
    f.add_argument("--source-url", default=RAW_URL, metavar="TEMPLATE",
                   help="URL of a source file, with {repo} {commit} {path} {source} (default %(default)s)")  # fmt: skip
    f.set_defaults(func=fetch_command)
    v = dsub.add_parser("verify", help="check a data folder against the manifest (sizes and SHA-256)")
    v.add_argument("dir", nargs="?", help="the data folder (default: the one the harness reads)")
    v.add_argument("--manifest", help="check against this manifest instead of the shipped one")
    v.add_argument(
        "--partial", action="store_true", help="missing files are not an error (a --benchmarks subset)"
    )
    v.add_argument("--write-manifest", nargs="?", const="", metavar="PATH",
                   help="instead of checking, write the manifest of DIR (default: the shipped manifest)")  # fmt: skip
    v.set_defaults(func=verify_command)


def _datasets(value: str | None) -> list[str] | None:
    chosen = names(value)
    for name in chosen or ():
        if name not in BENCHMARKS and name not in PARALLEL_ONLY:
            raise unknown("benchmark", name, [*BENCHMARKS, *PARALLEL_ONLY], "--benchmarks")
    return chosen


def fetch_command(args: argparse.Namespace) -> int:
    start = time.monotonic()
    outputs = select(_datasets(args.benchmarks), names(args.langs))
    target = Path(args.to).expanduser() if args.to else user_data_dir()
    where = f"local copies in {args.from_root}" if args.from_root else "downloads"
    print(f"building {len(outputs)} file{'s' * (len(outputs) != 1)} into {target} from {where}", flush=True)
    report = fetch(target, outputs, manifests.load(args.manifest), from_root=args.from_root, force=args.force,
                   url_template=args.source_url, say=lambda line: print(line, flush=True))  # fmt: skip
    for line in report.differing:
        print(f"differs: {line}", file=sys.stderr)
    if report.differing and not args.from_root:
        kept = target / DOWNLOADS
        print(f"the downloaded sources are kept in {kept}; --force downloads them again", file=sys.stderr)
    print(f"{report.summary()} in {time.monotonic() - start:.1f} s")
    env = os.environ.get("HARNESS_DATA")
    if env and Path(env).expanduser().resolve() != target.resolve():
        print(f"note: HARNESS_DATA={env} is set: the harness reads that folder, not {target}")
    return 1 if report.differing else 0


def verify_command(args: argparse.Namespace) -> int:
    root = Path(args.dir).expanduser() if args.dir else data_dir()
    if args.write_manifest is not None:
        path, count = manifests.write(root, Path(args.write_manifest) if args.write_manifest else None)
        print(f"wrote the manifest of {count} files in {root} -> {path}")
        return 0
    check = manifests.verify(root, manifests.load(args.manifest))
    for line in check.differing:
        print(f"differs: {line}")
    for rel in check.missing:
        print(f"missing: {root / rel}")
    for rel in check.extra:
        print(f"extra: {root / rel} (not in the manifest)")
    print(check.summary())
    return 0 if check.ok(partial=args.partial) else 1
