"""Relevance judgments: BEIR TSV (``query-id corpus-id score`` with a header) and TREC qrels
(``qid iter docid rel``, whitespace-separated, as MS MARCO and TREC DL ship them)."""

from __future__ import annotations

from pathlib import Path

from llmret.util.errors import DataError
from llmret.util.fileio import atomic_write, iter_lines

Qrels = dict[str, dict[str, int]]
"""query id -> document id -> graded relevance."""


def read_qrels(path: str | Path) -> Qrels:
    """Read qrels in BEIR or TREC form (detected per line by the number of fields)."""
    path = Path(path)
    qrels: Qrels = {}
    for line, row in iter_lines(path):
        fields = row.split("\t") if "\t" in row else row.split()
        fields = [f.strip() for f in fields]
        if line == 1 and fields[:2] == ["query-id", "corpus-id"]:
            continue  # BEIR header
        if len(fields) == 3:
            qid, did, rel = fields
        elif len(fields) == 4:
            qid, _, did, rel = fields
        else:
            raise DataError(path, line, f"expected 3 (BEIR) or 4 (TREC) fields, found {len(fields)}")
        if not qid or not did:
            raise DataError(path, line, "empty query or document id")
        try:
            grade = int(float(rel))
        except ValueError:
            raise DataError(path, line, f"relevance '{rel}' is not a number") from None
        judged = qrels.setdefault(qid, {})
        if did in judged and judged[did] != grade:
            raise DataError(path, line, f"conflicting judgments for query '{qid}', document '{did}'")
        judged[did] = grade
    if not qrels:
        raise DataError(path, None, "no judgments found")
    return qrels


def write_qrels(path: str | Path, qrels: Qrels) -> None:
    """Write BEIR-style qrels with their header."""
    with atomic_write(path) as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for qid, docs in qrels.items():
            for did, rel in docs.items():
                handle.write(f"{qid}\t{did}\t{rel}\n")
