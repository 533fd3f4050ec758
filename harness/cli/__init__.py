"""The `harness` command: one module per subcommand, each a thin argparse layer over plain functions.

    harness run --method vanilla --tasks sib200_mc --limit 50
    harness eval --checkpoint runs/<id>/model --tasks xnli_mc
    harness tasks | harness methods | harness recipes
    harness report runs/ --out report/
    harness sweep sweeps/wt_samples.yaml --dry-run
    harness translate --model facebook/nllb-200-distilled-600M --tgt-lang sw,yo --out translations.jsonl
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys

from tqdm import tqdm

from harness.cli import analyze, catalog, data, evaluate, report, run, sweep, translate
from harness.plumbing.errors import HarnessError
from harness.training import distributed

log = logging.getLogger("harness")

SUBCOMMANDS = (run, evaluate, catalog, data, translate, report, sweep, analyze)  # each adds its parser(s): `add(sub)`


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="harness", description=__doc__.split("\n\n")[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS:
        module.add(sub)
    return p


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    for name in ("lm_eval", "lm-eval", "transformers", "datasets", "accelerate", "urllib3", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _close_progress_bars() -> None:
    for bar in list(getattr(tqdm, "_instances", [])):
        bar.close()
    sys.stderr.write("\n")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")  # fmt: skip
    _quiet_libraries()
    if distributed.rank() > 0:  # the other processes of a data-parallel launch: their warnings only
        logging.getLogger().setLevel(logging.WARNING)
    try:
        return args.func(args)
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`harness tasks | head`): nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 141
    except OSError as e:  # the system, not the input: say which file; rerunning resumes what was cut short
        if e.errno is None:
            print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
            return 1
        where = f" ({e.filename})" if e.filename else ""
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            hint = "; free space and run the same command again to resume"
        elif e.errno in (errno.EIO, errno.ENOMEM, errno.EINTR):
            hint = "; run the same command again to resume"
        else:
            hint = ""
        print(f"error: {e.strerror or e}{where}{hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        _close_progress_bars()  # else a bar redrawn at exit would follow the message
        print("interrupted: finished work is kept; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
