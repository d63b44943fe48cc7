"""One factory from a retriever's name (bm25, dense, sparse) and encoder settings to a retriever: the CLI,
studies, the service's searcher and training's checkpoint evaluation all build through it, so every path
encodes the same way.

Light to import (the retriever modules load torch and FAISS when a retriever is made), because a study's
plan and the command line's parser read :data:`RETRIEVERS` without building anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmret.encoders.registry import ENCODED, load_encoder
from llmret.encoders.settings import EncoderSettings
from llmret.retrievers.base import Retriever
from llmret.util.errors import InputError

LAZY_IMPORTS = "only the retriever asked for is imported: BM25 and the CLI's choices load no torch"

RETRIEVERS = ("bm25", *ENCODED)


def make_retriever(retriever: str, settings: EncoderSettings | None = None, *, rules: Any = None,
                   work_dir: str | Path | None = None, index: str | None = None, bm25: dict[str, float] | None = None,
                   progress: bool = True) -> Retriever:
    """A ``retriever`` (bm25, dense, sparse) over ``settings``, under a dataset's ``rules``; ``index``: a FAISS
    factory string (dense) or exact / seismic (sparse)."""
    if retriever == "bm25":
        from llmret.retrievers.bm25 import BM25Retriever

        return BM25Retriever(**(bm25 or {}))
    if retriever not in ENCODED:
        raise InputError(f"retriever must be one of {', '.join(RETRIEVERS)}, not '{retriever}'")
    if settings is None:
        raise InputError(f"a {retriever} retriever needs encoder settings (a model)")
    if retriever == "sparse" and index not in (None, "exact", "seismic"):
        raise InputError(f"a sparse retriever's index is exact or seismic, not '{index}'")
    if retriever == "dense" and index is not None:
        from llmret.index.dense import check_factory

        check_factory(index)  # before the model loads and the corpus is encoded
    encoder = load_encoder(retriever, settings, dataset=rules.encoder_layer() if rules is not None else None)
    if retriever == "sparse":
        from llmret.retrievers.sparse import SparseRetriever

        return SparseRetriever(encoder, work_dir=work_dir, index=index or "exact", progress=progress)
    from llmret.retrievers.dense import DenseRetriever

    return DenseRetriever(encoder, work_dir=work_dir, factory=index or "Flat", progress=progress)
