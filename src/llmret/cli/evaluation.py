"""``llmret evaluate``, ``compare`` and ``fuse``: scores, significance and hybrid runs."""

from __future__ import annotations

import argparse
from typing import Any

from llmret.cli.flags import encoder_flags, encoder_settings, positive_int, rules_flag
from llmret.util.errors import InputError


def register(sub: Any) -> None:
    parser = sub.add_parser("evaluate", help="evaluate a retriever on a dataset, or score a run file")
    parser.add_argument("--retriever", choices=["bm25", "dense", "sparse"], default="bm25")
    parser.add_argument("--data", help="BEIR folder, builtin:code | builtin:docs | builtin:long, or irds:ID "
                                       "(an ir_datasets id)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", help="output folder (default results/DATA-RETRIEVER)")
    parser.add_argument("--name", help="system name in tables and runs")
    parser.add_argument("--k", type=positive_int, default=1000)
    parser.add_argument("--measures", nargs="+", help="ir-measures names (default: the dataset convention's, e.g. "
                                                      "nDCG@10 RR@10 R@100)")
    parser.add_argument("--exclude-self", action="store_true", help="drop a query's own id from its results "
                                                                    "(the beir rules always do)")
    rules_flag(parser)
    parser.add_argument("--k1", type=float, default=0.9)
    parser.add_argument("--b", type=float, default=0.4)
    parser.add_argument("--index", help="dense: FAISS index_factory string (default Flat = exact); sparse: exact or "
                                        "seismic")
    parser.add_argument("--run", help="score this TREC run file instead (with --qrels)")
    parser.add_argument("--qrels", help="judgments for --run (BEIR or TREC form)")
    encoder_flags(parser)
    parser.set_defaults(func=evaluate)

    parser = sub.add_parser("compare", help="paired significance tests between evaluated systems (per-query values)")
    parser.add_argument("metrics", nargs="+", help="metrics.json files written by llmret evaluate (the first is the "
                                                   "baseline unless --baseline names one)")
    parser.add_argument("--measure", default="nDCG@10")
    parser.add_argument("--baseline", help="system name (from metrics.json) to compare the others with")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--correction", choices=["holm", "bonferroni", "none"], default="holm")
    parser.add_argument("--trials", type=positive_int, default=10_000, help="randomisation test: sign flips sampled")
    parser.set_defaults(func=compare)

    parser = sub.add_parser("fuse", help="hybrid retrieval: fuse TREC runs (RRF or normalised linear)")
    parser.add_argument("runs", nargs="+", help="TREC run files")
    parser.add_argument("--method", choices=["rrf", "linear"], default="rrf")
    parser.add_argument("--weights", type=float, nargs="+", help="linear: one weight per run (default equal)")
    parser.add_argument("--rrf-k", type=int, default=60)
    parser.add_argument("--depth", type=positive_int, default=1000)
    parser.add_argument("--out", required=True, help="fused TREC run file to write")
    parser.add_argument("--qrels", help="score the fused run against these judgments")
    parser.add_argument("--measures", nargs="+", help="default: the dataset convention's")
    rules_flag(parser)
    parser.set_defaults(func=fuse)


def print_result(name: str, aggregate: dict[str, float]) -> None:
    from llmret.util.tables import format_table

    print(format_table([{"system": name, **aggregate}], ["system", *aggregate], percent=list(aggregate)))


def evaluate(args: argparse.Namespace) -> int:
    from llmret.evaluation.pipeline import evaluate_on, score_run_file

    if args.run:  # score an existing run file
        evaluation, rules = score_run_file(args.run, qrels=args.qrels, data=args.data, split=args.split,
                                           convention=args.rules, exclude_self=args.exclude_self,
                                           measures=args.measures, out=args.out)
        print_result(args.run.rsplit("/", 1)[-1], evaluation.aggregate)
        print(f"scored by the '{rules.convention}' rules (relevance level {rules.relevance_level}, "
              f"own ids {'dropped' if rules.exclude_self else 'kept'})")
        return 0
    if not args.data:
        raise InputError("evaluate needs --data (or --run with --qrels)")
    settings = None
    if args.retriever != "bm25":
        if not args.model and not getattr(args, "config", None):
            raise InputError(f"--retriever {args.retriever} needs --model (or --config)")
        settings = encoder_settings(args)
    result, retriever, out = evaluate_on(args.retriever, args.data, args.split, settings=settings,
                                         convention=args.rules, exclude_self=args.exclude_self, measures=args.measures,
                                         out=args.out, name=args.name, k=args.k, index=args.index,
                                         bm25={"k1": args.k1, "b": args.b})
    print_result(result.name, result.evaluation.aggregate)
    report = retriever.sparsity() if hasattr(retriever, "sparsity") else None
    if report is not None:
        from llmret.cli.indexing import print_sparsity

        print_sparsity(report)
    print(f"run and metrics in {out}")
    return 0


def compare(args: argparse.Namespace) -> int:
    from llmret.evaluation.significance import compare_files
    from llmret.util.tables import format_table

    baseline, rows = compare_files(args.metrics, args.measure, args.baseline, alpha=args.alpha,
                                   correction=args.correction, trials=args.trials)
    table = [{"system": r.system, args.measure: r.mean, "delta": r.delta, "p (t)": f"{r.p_t_corrected:.4f}",
              "p (rand)": f"{r.p_randomization_corrected:.4f}", "sig": "yes" if r.significant else ""} for r in rows]
    print(f"baseline {baseline}: {args.measure} {100 * rows[0].baseline_mean if rows else float('nan'):.2f} "
          f"over {rows[0].queries if rows else 0} queries")
    print(format_table(table, ["system", args.measure, "delta", "p (t)", "p (rand)", "sig"],
                       percent=[args.measure, "delta"]))
    print(f"paired two-sided t-test and randomisation test ({args.trials} sign flips or all of them), p-values "
          f"corrected by {args.correction}; sig: both below {args.alpha}")
    return 0


def fuse(args: argparse.Namespace) -> int:
    from llmret.evaluation.fusion import fuse_files

    evaluation = fuse_files(args.runs, args.out, args.method, weights=args.weights, rrf_k=args.rrf_k, depth=args.depth,
                            qrels=args.qrels, convention=args.rules, measures=args.measures)
    print(f"fused run written to {args.out}")
    if evaluation is not None:
        print_result(f"fused ({args.method})", evaluation.aggregate)
    return 0
