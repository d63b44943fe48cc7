"""A saved index opened with the query encoder it was built with: Pyserini's ``FaissSearcher(index_dir,
encoder)`` in one call. An encoder whose signature differs from the index's is refused, since its query
vectors would not live in the space of the index's passages."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from llmret.data.trec import Run
from llmret.encoders.registry import load_encoder
from llmret.encoders.settings import SPARSE_ONLY, EncoderSettings
from llmret.index.saved import Index, open_index, search_all, to_run
from llmret.index.shards import signature_differences
from llmret.util.errors import DataError, InputError


class Searcher:
    """Saved indexes with their query encoder: ``Searcher.open(folder).search({"q1": "text"}, k=10)``.

    Several folders (the indexes of one corpus's parts, built with one encoder) are searched together,
    their top ``k`` merged exactly.
    """

    def __init__(self, indexes: list[Index], encoder: Any, meta: dict[str, Any]) -> None:
        self.indexes, self.encoder, self.meta = indexes, encoder, meta

    @property
    def index(self) -> Index:
        """The one index (a searcher over one folder)."""
        if len(self.indexes) != 1:
            raise InputError(f"this searcher holds {len(self.indexes)} index shards, not one")
        return self.indexes[0]

    @classmethod
    def open(cls, folders: str | Path | list[str | Path], device: str | None = None) -> Searcher:
        paths = [Path(f) for f in (folders if isinstance(folders, list) else [folders])]
        opened = [open_index(path) for path in paths]
        meta = opened[0][1]
        signature = meta.get("encoder", {})
        if "model" not in signature:
            raise DataError(paths[0] / "meta.json", None, "no encoder signature: this index cannot encode queries")
        for path, (_, other) in zip(paths[1:], opened[1:]):
            if signature_differences(other.get("encoder", {}), signature):
                raise DataError(path / "meta.json", None, f"built with another encoder than {paths[0]}: "
                                                          "index shards searched together must share one")
        retriever = signature.get("retriever", "dense")
        names = {f.name for f in fields(EncoderSettings)} - (set(SPARSE_ONLY) if retriever == "dense" else set())
        settings = EncoderSettings(**{k: v for k, v in signature.items() if k in names})
        encoder = load_encoder(retriever, settings, device=device)
        changed = signature_differences(encoder.signature(), signature)
        if changed:
            raise DataError(paths[0] / "meta.json", None, f"the query encoder differs from the one the index was "
                                                          f"built with ({', '.join(changed)}): rebuild the index")
        documents = sum(int(m.get("documents", 0)) for _, m in opened)
        return cls([index for index, _ in opened], encoder, {**meta, "documents": documents, "shards": len(paths)})

    def search_vectors(self, qids: list[str], vectors: Any, k: int) -> Run:
        return to_run(qids, *search_all(self.indexes, vectors, k))

    def search(self, queries: dict[str, str], k: int = 1000) -> Run:
        """Encode ``queries`` (id -> text) as the index's encoder does and return the top ``k`` of each."""
        if k < 1:
            raise InputError(f"k must be at least 1, not {k}")
        qids = list(queries)
        vectors = self.encoder.encode_queries([queries[q] for q in qids])
        if isinstance(vectors, np.ndarray) and vectors.shape[0] == 0:
            return {}
        return self.search_vectors(qids, vectors, k)

