"""The ``llmret`` command: one subcommand per pipeline stage, each a thin command that parses its
arguments, calls one library function and prints what it returned; everything it does is reachable
from Python too.

The command modules import the library they call when a command runs, not when the parser is built:
``llmret --help``, every subcommand's help and every argument error answer without loading torch,
transformers, faiss or ranx (tests/test_startup.py). Errors in what a user gave
(:class:`~llmret.util.errors.InputError`: a setting, a name, a file, a line) are printed in one line
with exit status 2; a file that cannot be written (a full disk, a read-only folder) in one line naming
it, status 1; Ctrl-C in one line, status 130, with what was finished kept; any other exception is a
fault of llmret's and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from typing import Any

from llmret import __version__
from llmret.cli import evaluation, indexing, models, serving, studies, training
from llmret.util.errors import InputError

LAZY_IMPORTS = "commands import the library they call when they run: the parser must load no torch"
COMMANDS = (models, indexing, evaluation, studies, serving, training)  # the order `llmret --help` lists them in
# What the machine refuses, not what llmret got wrong: said in one line naming the file
WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR,
                errno.EEXIST, errno.ENAMETOOLONG}


class Parser(argparse.ArgumentParser):
    """argparse without prefix matching, for every command and subcommand: an abbreviation that works today
    breaks a user's script when a flag sharing its prefix is added, and a removed flag must be an error, not
    taken as the flag it begins (``serve --token SECRET`` would be read as ``--token-file SECRET``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def make_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="llmret", description="LLMs as retrievers: train, encode, index, search, "
                                                                "evaluate.")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--version", action="version", version=f"llmret {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="[%(name)s] %(message)s")
    for noisy in ("faiss", "bm25s", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.func(args)
    except InputError as exc:
        print(f"llmret: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass  # said below, once the interrupted frames are gone: their progress bars print as they close
    except OSError as exc:
        if exc.errno not in WRITE_ERRORS or not exc.filename:
            raise
        print(f"llmret: error: cannot write {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    print("llmret: interrupted; what was finished is kept (embedding shards, checkpoints, study cells): "
          "the same command resumes", file=sys.stderr)
    return 130


if __name__ == "__main__":
    sys.exit(main())
