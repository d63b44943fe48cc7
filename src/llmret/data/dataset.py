"""A retrieval test collection (corpus, queries, judgments) from a BEIR folder or loose files."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from llmret.data.corpus import Corpus
from llmret.data.qrels import Qrels, read_qrels, write_qrels
from llmret.util.errors import DataError
from llmret.util.fileio import atomic_write, iter_jsonl, iter_lines, require_str


@dataclass
class RetrievalData:
    """What evaluation needs: the corpus to search, the queries of one split, and their judgments."""

    corpus: Corpus
    queries: dict[str, str]
    qrels: Qrels
    name: str = ""

    def write_beir(self, folder: str | Path, split: str = "test") -> None:
        """Write as a BEIR folder (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv)."""
        folder = Path(folder)
        self.corpus.write_beir(folder / "corpus.jsonl")
        write_queries(folder / "queries.jsonl", self.queries)
        write_qrels(folder / "qrels" / f"{split}.tsv", self.qrels)


def load_queries(path: str | Path) -> dict[str, str]:
    """Queries from BEIR JSONL (``_id``, ``text``) or MS MARCO TSV (``qid<TAB>text``)."""
    path = Path(path)
    queries: dict[str, str] = {}
    if path.name.endswith((".tsv", ".tsv.gz")):
        rows = ((line, row.split("\t")) for line, row in iter_lines(path))
        items = []
        for line, fields in rows:
            if len(fields) != 2:
                raise DataError(path, line, f"expected 2 tab-separated fields 'qid text', found {len(fields)}")
            items.append((line, fields[0].strip(), fields[1]))
    else:
        items = [
            (line, require_str(obj, "_id", path, line), require_str(obj, "text", path, line, allow_empty=True))
            for line, obj in iter_jsonl(path)
        ]
    for line, qid, text in items:
        if qid in queries:
            raise DataError(path, line, f"duplicate query id '{qid}'")
        if not text.strip():
            raise DataError(path, line, f"query '{qid}' has empty text")
        queries[qid] = text
    return queries


def write_queries(path: str | Path, queries: dict[str, str]) -> None:
    """Write BEIR queries JSONL."""
    with atomic_write(path) as handle:
        for qid, text in queries.items():
            handle.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")


def _find(folder: Path, *names: str) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise DataError(folder, None, f"none of {', '.join(names)} found in this folder")


def load_dataset(folder: str | Path, split: str = "test", *, check_documents: bool = True) -> RetrievalData:
    """Load a BEIR folder for one split.

    Only the queries judged in ``split`` are kept (BEIR's queries.jsonl holds every split). Judgments
    that name a query missing from queries.jsonl are an error; with ``check_documents``, so are
    judgments that name a document missing from the corpus (one pass over the corpus).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, None, "dataset folder not found")
    corpus = Corpus.from_file(_find(folder, "corpus.jsonl", "corpus.jsonl.gz", "collection.tsv"))
    queries_path = _find(folder, "queries.jsonl", "queries.jsonl.gz", "queries.tsv")
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        available = sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))
        raise DataError(qrels_path, None, f"no judgments for split '{split}' (available: {', '.join(available) or 'none'})")
    all_queries = load_queries(queries_path)
    qrels = read_qrels(qrels_path)
    unknown = [qid for qid in qrels if qid not in all_queries]
    if unknown:
        raise DataError(qrels_path, None, f"{len(unknown)} judged queries are not in {queries_path.name}, e.g. '{unknown[0]}'")
    if check_documents:
        ids = set(corpus.ids())
        missing = sorted({did for docs in qrels.values() for did in docs if did not in ids})
        if missing:
            raise DataError(qrels_path, None, f"{len(missing)} judged documents are not in the corpus, e.g. '{missing[0]}'")
    unjudged = len(all_queries) - len(qrels)
    if unjudged:
        print(f"[llmret] {folder.name}: {unjudged} queries have no judgments in split '{split}' and are not evaluated",
              file=sys.stderr)
    queries = {qid: all_queries[qid] for qid in qrels}
    return RetrievalData(corpus, queries, qrels, name=folder.name)
