"""BM25 against a dense model on one data set, under that data set's rules, as a table.

    python examples/compare_on_a_benchmark.py                        # builtin:code, all-MiniLM-L6-v2
    python examples/compare_on_a_benchmark.py DATA MODEL [OUT]       # a BEIR folder, builtin:TASK or irds:ID

Each evaluation writes its run, metrics and per-query scores under OUT (default results/examples).
"""

import sys
from pathlib import Path

import llmret


def main(data: str = "builtin:code", model: str = "minilm-l6", out: str = "results/examples") -> dict[str, dict]:
    scores = {
        "bm25": llmret.evaluate("bm25", data, out=Path(out) / "bm25").evaluation.aggregate,
        model: llmret.evaluate("dense", data, model=model, out=Path(out) / "dense").evaluation.aggregate,
    }
    measures = list(next(iter(scores.values())))
    print("| system | " + " | ".join(measures) + " |")
    print("|---" * (len(measures) + 1) + "|")
    for system, row in scores.items():
        print(f"| {system} | " + " | ".join(f"{row[m]:.4f}" for m in measures) + " |")
    return scores


if __name__ == "__main__":
    main(*sys.argv[1:4])
