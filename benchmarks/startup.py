"""Start-up cost of the ``llmret`` command: help and argument errors answer before any deep-learning stack loads.

Measures, in fresh processes: ``llmret --help``, ``llmret train --help``, an argument error
(``llmret evaluate --k 0``), ``import llmret``, and for scale the interpreter alone and ``import torch,
transformers`` (what every command paid to build its parser before). Prints the median wall time of
each over ``--runs`` runs and the ratios; ``--smoke`` runs each twice.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CASES = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "import llmret": [sys.executable, "-c", "import llmret"],
    "llmret --help": [sys.executable, "-m", "llmret.cli", "--help"],
    "llmret train --help": [sys.executable, "-m", "llmret.cli", "train", "--help"],
    "llmret evaluate --k 0 (argument error)": [sys.executable, "-m", "llmret.cli", "evaluate", "--k", "0"],
    "import torch, transformers": [sys.executable, "-c", "import torch, transformers"],
}


def timed(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--smoke", action="store_true", help="two runs each (the test suite's size)")
    args = parser.parse_args(argv)
    runs = 2 if args.smoke else args.runs
    figures = {name: timed(cmd, runs) for name, cmd in CASES.items()}
    for name, seconds in figures.items():
        print(f"{name:42s} {seconds * 1000:8.0f} ms (median of {runs})")
    print(f"help / (torch + transformers import) ratio: {figures['llmret --help'] / figures['import torch, transformers']:.3f}")
    print(f"help above the bare interpreter: {(figures['llmret --help'] - figures['python -c pass']) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
