"""ir_datasets ids as data: ``irds:beir/scifact/test``, ``irds:msmarco-passage/trec-dl-2019/judged`` ...

Every llmret path reads BEIR folders, so an ir_datasets id is converted once into one in llmret's
cache (``irds/<id>/``: ``queries.jsonl``, ``qrels/<split>.tsv``, and ``corpus.jsonl`` linked to one
copy per document collection, so MS MARCO's 8.8M passages are written once for its dev set and both
TREC DL years). ir_datasets downloads what it lacks (online), or reads its own copies under
``$IR_DATASETS_HOME``; it is an optional dependency (``pip install 'llmret[irds]'``). The id names the
queries and judgments (ir_datasets puts the split in the id); the split llmret asks for only names the
judgments file, so a BEIR training id works as training data (``qrels/train.tsv``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from llmret.util.cache import cache_dir
from llmret.util.errors import DataError
from llmret.util.fileio import atomic_dir, atomic_write

PREFIX = "irds:"

# Evaluation conventions (llmret.evaluation.conventions.CONVENTIONS) by id prefix, first match wins.
CONVENTIONS = (("beir/msmarco", "msmarco-dev"), ("beir/", "beir"), ("msmarco-passage/trec-dl", "trec-dl"),
               ("msmarco-passage/dev", "msmarco-dev"))


def convention(dataset_id: str) -> str:
    """The rules an ir_datasets id is evaluated by (``plain`` for an id no convention names)."""
    return next((name for prefix, name in CONVENTIONS if dataset_id.startswith(prefix)), "plain")


def folder(dataset_id: str, split: str = "test") -> Path:
    """The BEIR folder of ``dataset_id``, converted on first use, with its judgments as ``qrels/<split>.tsv``.
    A converted folder is returned without importing ir_datasets (every cell of a study asks again)."""
    out = cache_dir("irds") / _slug(dataset_id)
    qrels = out / "qrels" / f"{split}.tsv"
    if qrels.is_file():
        return out
    irds, dataset = _load(dataset_id)
    if not (out / "queries.jsonl").is_file():
        with atomic_dir(out) as tmp, _fetching(dataset_id), atomic_write(tmp / "queries.jsonl") as handle:
            for query in dataset.queries_iter():
                handle.write(json.dumps({"_id": query.query_id, "text": _text(query)}, ensure_ascii=False) + "\n")
    link = out / "corpus.jsonl"
    if not link.exists():
        corpus = _corpus(dataset, cache_dir("irds", "corpora", _slug(irds.docs_parent_id(dataset_id))), dataset_id)
        tmp_link = out / ".corpus.jsonl.tmp"
        tmp_link.unlink(missing_ok=True)
        tmp_link.symlink_to(os.path.relpath(corpus, out))
        tmp_link.replace(link)
    with _fetching(dataset_id), atomic_write(qrels) as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for qrel in dataset.qrels_iter():
            handle.write(f"{qrel.query_id}\t{qrel.doc_id}\t{int(qrel.relevance)}\n")
    return out


def _load(dataset_id: str) -> tuple[Any, Any]:
    """The ir_datasets module and the dataset, after checking that the id names documents, queries and judgments."""
    try:
        import ir_datasets
    except ImportError:
        raise DataError(PREFIX + dataset_id, None, "ir_datasets ids need ir_datasets: pip install 'llmret[irds]'") from None
    if dataset_id not in ir_datasets.registry:
        raise DataError(PREFIX + dataset_id, None, "not an ir_datasets id (see ir-datasets.com for the catalogue)")
    dataset = ir_datasets.load(dataset_id)
    if not (dataset.has_docs() and dataset.has_queries() and dataset.has_qrels()):
        raise DataError(PREFIX + dataset_id, None, "an evaluation id needs documents, queries and judgments; "
                                                   "this one lacks some (pick a subset that has all three)")
    return ir_datasets, dataset


def _corpus(dataset: Any, folder: Path, dataset_id: str) -> Path:
    """One ``corpus.jsonl`` per document collection (``folder``: the id's docs parent's), written once."""
    path = folder / "corpus.jsonl"
    if not path.is_file():
        with _fetching(dataset_id), atomic_write(path) as handle:
            for doc in dataset.docs_iter():
                record = {"_id": doc.doc_id, "title": getattr(doc, "title", "") or "", "text": _text(doc)}
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path


def _text(record: Any) -> str:
    """A document's or query's text field, or ir_datasets' own joining of its fields where it has none."""
    return record.text if "text" in record._fields else record.default_text()


@contextmanager
def _fetching(dataset_id: str) -> Iterator[None]:
    """Turn ir_datasets' download failures (offline, a moved file) into one line naming the id and where
    ir_datasets keeps its copies, so that a user can put the files there or use a local folder."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        import ir_datasets

        raise DataError(PREFIX + dataset_id, None,
                        f"ir_datasets could not fetch it ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                        f"online it downloads to {ir_datasets.util.home_path()}, offline put the source files "
                        "there (see the id's page on ir-datasets.com) or use a local BEIR folder") from exc


def _slug(dataset_id: str) -> str:
    return dataset_id.replace("/", "--")
