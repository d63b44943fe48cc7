"""Sparse vectors in Anserini's formats, so users can index and search them with Lucene.

Documents become a JsonVectorCollection (``{"id", "contents", "vector": {term: int}}`` per line), queries
a TSV of pre-tokenized topics where each term is repeated as often as its integer weight. Weights are
quantised (``round(w * factor)``, 100 as in Anserini's SPLADE regressions). Index and search with::

    IndexCollection -collection JsonVectorCollection -input DOCS_FOLDER -index INDEX \\
        -generator DefaultLuceneDocumentGenerator -impact -pretokenized
    SearchCollection -index INDEX -topics queries.tsv -topicReader TsvString -output run.trec -impact -pretokenized
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from llmret.index.shards import EmbeddingShards
from llmret.models.backbone import resolve
from llmret.util.errors import DataError, InputError
from llmret.util.fileio import atomic_write

_UNSAFE = re.compile(r"\s")


def term_names(tokens: list[str | None]) -> list[str]:
    """Lucene-safe, unique term names for vocabulary ids: the token itself, or ``<id:N>`` where it is
    empty, missing or holds whitespace (pre-tokenized text is split on whitespace)."""
    names = [tok if tok and not _UNSAFE.search(tok) else f"<id:{i}>" for i, tok in enumerate(tokens)]
    counts = Counter(names)
    names = [name if counts[name] == 1 else f"<id:{i}>" for i, name in enumerate(names)]
    if len(set(names)) != len(names):
        raise InputError("the vocabulary has tokens that cannot be given unique Lucene term names")
    return names


def _int_weights(row: sp.csr_matrix, factor: float) -> tuple[np.ndarray, np.ndarray]:
    weights = np.rint(row.data * factor).astype(np.int64)
    keep = weights > 0
    return row.indices[keep], weights[keep]


def write_documents(path: str | Path, batches: Iterable[tuple[list[str], sp.csr_matrix]], names: list[str],
                    factor: float = 100) -> int:
    """Write a JsonVectorCollection file (``.jsonl`` or ``.jsonl.gz``); returns the number of documents."""
    count = 0
    with atomic_write(path) as handle:
        for ids, vectors in batches:
            vectors = sp.csr_matrix(vectors)
            for row, doc_id in enumerate(ids):
                terms, weights = _int_weights(vectors[row], factor)
                vector = {names[t]: int(w) for t, w in zip(terms, weights)}
                handle.write(json.dumps({"id": doc_id, "contents": "", "vector": vector}, ensure_ascii=False) + "\n")
                count += 1
    return count


def write_queries(path: str | Path, ids: list[str], vectors: sp.csr_matrix, names: list[str], factor: float = 100) -> None:
    """Write pre-tokenized topics (``qid<TAB>terms``), each term repeated by its integer weight."""
    vectors = sp.csr_matrix(vectors)
    with atomic_write(path) as handle:
        for row, qid in enumerate(ids):
            if "\t" in qid or "\n" in qid:
                raise InputError(f"query id {qid!r} holds a tab or newline, which the TSV topic format cannot carry")
            terms, weights = _int_weights(vectors[row], factor)
            handle.write(qid + "\t" + " ".join(" ".join([names[t]] * int(w)) for t, w in zip(terms, weights)) + "\n")


def export_shards(embeddings: str | Path, out: str | Path, *, queries: bool = False, factor: float = 100) -> None:
    """Sparse embedding shards as Anserini reads them: a JsonVectorCollection of the passages, or (with
    ``queries``) pre-tokenized topics, terms named by the encoder's own tokenizer."""
    from transformers import AutoTokenizer  # here: only an export needs a tokenizer

    shards = EmbeddingShards(Path(embeddings))
    signature = shards.signature()
    if signature.get("retriever") != "sparse":
        raise DataError(Path(embeddings) / "meta.json", None, "not sparse embeddings (encode with --retriever sparse)")
    spec = str(signature["model"])
    source = Path(spec) if (Path(spec) / "tokenizer_config.json").is_file() else resolve(spec)[0]
    tokenizer = AutoTokenizer.from_pretrained(source)
    width = next(iter(shards))[1].shape[1]
    names = term_names(tokenizer.convert_ids_to_tokens(list(range(width))))
    if queries:
        parts = list(shards)
        ids = [i for part_ids, _ in parts for i in part_ids]
        write_queries(out, ids, sp.vstack([v for _, v in parts], format="csr"), names, factor)
    else:
        write_documents(out, shards, names, factor)
