"""Record trec_eval's own per-query values on synthetic runs over the real MS MARCO judgments.

Usage: python tests/data/make_trec_eval_golden.py PATH/TO/trec_eval
It runs an existing trec_eval binary (NIST's reference implementation) and writes
tests/data/trec_eval_golden.json, which tests/test_metrics.py compares llmret's measures against.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from llmret.data.qrels import read_qrels  # noqa: E402
from llmret.data.trec import write_run  # noqa: E402

from helpers import MSMARCO_EVAL, synthetic_run  # noqa: E402

# trec_eval measure -> ir-measures name; recip_rank is cut by -M 10 for RR@10.
MEASURES = {"ndcg_cut_10": "nDCG@10", "recall_10": "R@10", "recall_100": "R@100", "recall_1000": "R@1000",
            "map": "AP"}
DATASETS = {"dl19": None, "dl20": None, "dev-small": 400}


def trec_eval(binary: str, qrels: Path, run: Path, *extra: str) -> dict[str, dict[str, float]]:
    out = subprocess.run([binary, "-q", *extra, str(qrels), str(run)], capture_output=True, text=True, check=True)
    values: dict[str, dict[str, float]] = {}
    for line in out.stdout.splitlines():
        measure, qid, value = line.split()
        values.setdefault(measure, {})[qid] = float(value)
    return values


def main(binary: str) -> None:
    probe = subprocess.run([binary, "-v"], capture_output=True, text=True)
    version = (probe.stdout + probe.stderr).strip()
    golden: dict[str, object] = {"trec_eval": version}
    with tempfile.TemporaryDirectory() as tmp:
        for name, limit in DATASETS.items():
            qrels_path = MSMARCO_EVAL / name / "qrels" / "test.tsv"
            qrels = read_qrels(qrels_path)
            qrels = {q: qrels[q] for q in sorted(qrels)[:limit]}  # trec_eval 10 stops on judged queries with no results
            trec_qrels = Path(tmp) / f"{name}.qrels"
            trec_qrels.write_text("".join(f"{q} 0 {d} {r}\n" for q, docs in qrels.items() for d, r in docs.items()))
            run_path = Path(tmp) / f"{name}.run"
            write_run(run_path, synthetic_run(qrels, name, limit))
            entries = {}
            for level in ("1", "2"):  # trec_eval -l: the grade from which binary measures count a document
                values = trec_eval(binary, trec_qrels, run_path, "-l", level, "-mmap", "-mndcg_cut.10",
                                   "-mrecall.10,100,1000", "-mrecip_rank", "-mP.10")
                rr = trec_eval(binary, trec_qrels, run_path, "-l", level, "-M", "10", "-mrecip_rank")
                entry = {MEASURES[m]: values[m] for m in MEASURES}
                entry["RR@10"] = rr["recip_rank"]
                entry["RR"] = values["recip_rank"]
                entry["P@10"] = values["P_10"]
                entries[level] = entry
            golden[name] = {"max_queries": limit, "per_query": entries["1"], "per_query_l2": entries["2"]}
    out = Path(__file__).with_name("trec_eval_golden.json")
    out.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1])
