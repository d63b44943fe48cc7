"""``llmret encode``, ``index``, ``search``, ``inspect`` and ``anserini``: the pipeline stage by stage."""

from __future__ import annotations

import argparse
import os
from typing import Any

from llmret.cli.flags import data_flags, encoder_flags, encoder_settings, positive_int, rules_flag
from llmret.util.errors import InputError

INDEX_HELP = "dense: FAISS index_factory string (default Flat = exact); sparse: exact or seismic"


def register(sub: Any) -> None:
    parser = sub.add_parser("encode", help="encode a corpus and/or queries into embedding shards")
    data_flags(parser)
    encoder_flags(parser)
    parser.add_argument("--retriever", choices=["dense", "sparse"], default="dense")
    parser.add_argument("--what", choices=["corpus", "queries", "both"], default="both")
    parser.add_argument("--out", required=True)
    parser.add_argument("--shard-size", type=positive_int, default=2048,
                        help="passages a shard file holds: an interrupted encode keeps every finished shard")
    parser.add_argument("--shard", type=int, help="encode this part of the corpus (0-based; with --num-shards) into "
                                                  "OUT/corpus/part-I-of-N; under torchrun/accelerate, RANK is used")
    parser.add_argument("--num-shards", type=positive_int, help="how many contiguous parts the corpus is split into")
    parser.set_defaults(func=encode)

    parser = sub.add_parser("index", help="build an index over corpus shards and save it (searchable later)")
    parser.add_argument("--embeddings", required=True, nargs="+",
                        help="folder(s) of corpus embedding shards (llmret encode); several parts make one index")
    parser.add_argument("--out", required=True, help="index folder to write")
    parser.add_argument("--index", help=INDEX_HELP)
    parser.set_defaults(func=index)

    parser = sub.add_parser("search", help="search corpus shards or a saved index, write a TREC run")
    parser.add_argument("--corpus", nargs="+", help="folder(s) of corpus embedding shards (an index is built in memory)")
    parser.add_argument("--index-dir", nargs="+", help="saved index(es) (llmret index); several are searched together "
                                                       "and their top k merged exactly")
    parser.add_argument("--queries", help="folder of query embedding shards")
    parser.add_argument("--data", help="with --index-dir: search these queries as text, encoded by the index's encoder")
    parser.add_argument("--split", default="test")
    rules_flag(parser)
    parser.add_argument("--out", required=True, help="TREC run file to write")
    parser.add_argument("--k", type=positive_int, default=1000)
    parser.add_argument("--index", help=INDEX_HELP)
    parser.add_argument("--tag", default="llmret")
    parser.set_defaults(func=search)

    parser = sub.add_parser("inspect", help="a text's top expansion terms under a sparse encoder, or a sparse index's "
                                            "size, non-zeros and FLOPS")
    encoder_flags(parser)
    parser.add_argument("texts", nargs="*")
    parser.add_argument("--index-dir", help="report on this saved sparse index (llmret index)")
    parser.add_argument("--embeddings", help="report on these sparse corpus shards (llmret encode)")
    parser.add_argument("--queries", help="with --index-dir or --embeddings: encoded queries, for non-zeros and FLOPS")
    parser.add_argument("--query", action="store_true", help="encode as queries (prefix, instruction, query length)")
    parser.add_argument("--top", type=positive_int, default=20)
    parser.set_defaults(func=inspect, retriever="sparse")

    parser = sub.add_parser("anserini", help="export sparse embeddings for Lucene (JsonVectorCollection or TSV topics)")
    parser.add_argument("--embeddings", required=True, help="folder of sparse embedding shards (llmret encode "
                                                            "--retriever sparse)")
    parser.add_argument("--out", required=True, help="file to write (.jsonl or .jsonl.gz for documents, .tsv for queries)")
    parser.add_argument("--queries", action="store_true", help="write pre-tokenized topics instead of a collection")
    parser.add_argument("--factor", type=float, default=100, help="integer weight = round(weight x factor)")
    parser.set_defaults(func=anserini)


def shard_of(args: argparse.Namespace) -> tuple[int, int]:
    """(part, parts) of a sharded encoding: the flags, else a launcher's RANK and WORLD_SIZE."""
    if args.num_shards is None and args.shard is None:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return (int(os.environ.get("RANK", "0")), world) if world > 1 else (0, 1)
    if args.num_shards is None or args.shard is None:
        raise InputError("--shard and --num-shards go together")
    return args.shard, args.num_shards


def needs_model(args: argparse.Namespace) -> None:
    if not args.model and not getattr(args, "config", None):
        raise InputError(f"--retriever {args.retriever} needs --model (or --config)")


def encode(args: argparse.Namespace) -> int:
    from llmret.encoders.registry import load_encoder
    from llmret.evaluation.conventions import load
    from llmret.index.shards import encode_data

    part, parts = shard_of(args)
    needs_model(args)
    data, rules = load(args.data, args.split, args.rules)
    encoder = load_encoder(args.retriever, encoder_settings(args), dataset=rules.encoder_layer())
    encode_data(encoder, data, args.out, what=args.what, part=part, parts=parts, shard_size=args.shard_size)
    print(f"embeddings written to {args.out} (rules: {rules.convention}{f'; part {part + 1} of {parts}' if parts > 1 else ''})")
    return 0


def index(args: argparse.Namespace) -> int:
    from llmret.index import saved

    kind = saved.build_and_save(args.embeddings, args.out, args.index)
    print(f"{kind} index written to {args.out}")
    return 0


def search(args: argparse.Namespace) -> int:
    from llmret.data.trec import write_run
    from llmret.util.fileio import check_output

    check_output(args.out, folder=False)  # before the search, not after it
    if args.index_dir and args.data:  # queries as text: encoded by the index's own encoder
        from llmret.evaluation.pipeline import search_saved

        run = search_saved(args.index_dir, args.data, args.split, args.k, args.rules)
    elif args.queries and (args.corpus or args.index_dir):
        from llmret.index.saved import search_encoded

        run = search_encoded(args.queries, args.k, index_dirs=args.index_dir, corpus=args.corpus, how=args.index)
    else:
        raise InputError("search needs --queries with --corpus or --index-dir, or --index-dir with --data")
    write_run(args.out, run, tag=args.tag, depth=args.k)  # ids dropped by the rules made room for one more
    print(f"run written to {args.out}")
    return 0


def inspect(args: argparse.Namespace) -> int:
    if args.index_dir or args.embeddings:
        from llmret.index.saved import sparsity_report
        from llmret.index.sparsity import Sparsity

        report = sparsity_report(index_dir=args.index_dir, embeddings=args.embeddings, queries=args.queries)
        if isinstance(report, Sparsity):
            print_sparsity(report)
        else:
            postings = int(report.per_term.sum())
            print(f"sparsity: {postings:,} postings over {report.rows:,} passages; "
                  f"{postings / max(report.rows, 1):.1f} terms a passage (add --queries for FLOPS)")
        return 0
    if not args.texts:
        raise InputError("inspect needs texts, or --index-dir / --embeddings for a sparsity report")
    from llmret.encoders.registry import load_encoder

    needs_model(args)
    encoder = load_encoder("sparse", encoder_settings(args))
    for text, count, terms in encoder.top_terms(args.texts, query=args.query, top=args.top):
        print(f"{text[:80]!r}: {count} non-zero terms")
        print("  " + "  ".join(f"{t} {w:.2f}" for t, w in terms))
    return 0


def print_sparsity(report: Any) -> None:
    print(f"sparsity: {report.postings:,} postings; {report.passage_nonzero:.1f} terms a passage, "
          f"{report.query_nonzero:.1f} a query; FLOPS {report.flops:.2f} a query-passage pair, "
          f"{report.flops_per_query:,.0f} a query over the corpus")


def anserini(args: argparse.Namespace) -> int:
    from llmret.index.anserini import export_shards

    export_shards(args.embeddings, args.out, queries=args.queries, factor=args.factor)
    print(f"Anserini {'topics' if args.queries else 'JsonVectorCollection'} written to {args.out}")
    return 0
