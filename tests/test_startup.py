"""Help and argument errors come before any deep-learning library loads: the parser and ``import llmret``
import no torch, transformers, faiss or ranx (checked in a fresh process, as a user's shell starts one)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "transformers", "faiss", "ranx", "peft", "accelerate", "sentence_transformers", "bm25s", "scipy")

SCRIPT = r"""
import contextlib, io, json, sys
import llmret
from llmret.cli import main, make_parser

outcomes = {}
commands = [["--help"], ["--version"]]
for action in make_parser()._subparsers._group_actions[0].choices:
    commands.append([action, "--help"])
commands += [["evaluate", "--k", "0"], ["train", "--max-steps", "many"], ["study"], ["serve"], ["nope"]]
for argv in commands:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
            code = 0
        except SystemExit as exc:
            code = exc.code
    outcomes[" ".join(argv)] = [code, len(out.getvalue()), err.getvalue()[:300] + err.getvalue()[-300:]]
print(json.dumps({"loaded": sorted(m for m in %r if m in sys.modules), "outcomes": outcomes}))
"""


def test_help_and_argument_errors_load_no_deep_learning_library() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT % (HEAVY,)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["loaded"] == []
    outcomes = report["outcomes"]
    assert len(outcomes) > 20  # every subcommand's help was built
    for argv, (code, printed, _) in outcomes.items():
        if argv.endswith("--help"):
            assert code == 0 and printed > 50, argv  # the usage line at least
    assert outcomes["evaluate --k 0"][0] == 2 and "must be at least 1" in outcomes["evaluate --k 0"][2]
    assert outcomes["train --max-steps many"][0] == 2 and "invalid int value" in outcomes["train --max-steps many"][2]
    assert outcomes["--version"][0] == 0 and outcomes["--version"][1] > len("llmret ")
    assert outcomes["nope"][0] == 2 and "choose from" in outcomes["nope"][2]


def test_version_is_the_installed_distributions() -> None:
    import importlib.metadata

    done = subprocess.run([sys.executable, "-m", "llmret.cli", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"llmret {importlib.metadata.version('llmret')}"
