"""One factory from a retriever kind (bm25, dense, sparse) and encoder settings to a retriever: the CLI,
studies, the service's searcher and training's checkpoint evaluation all build through it, so every
path encodes the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmret.encoders.settings import EncoderSettings
from llmret.retrievers.base import Retriever

RETRIEVERS = ("bm25", "dense", "sparse")


def load_encoder(kind: str, settings: EncoderSettings, *, dataset: dict[str, Any] | None = None,
                 device: str | None = None) -> Any:
    """The dense or sparse encoder of ``settings``: what every retriever here, and a saved index's
    searcher (the service's), encodes with."""
    if kind == "sparse":
        from llmret.encoders.sparse import SparseEncoder

        return SparseEncoder.load(settings, device, dataset=dataset)
    if kind != "dense":
        raise ValueError(f"an encoder is dense or sparse, not '{kind}'")
    from llmret.encoders.dense import DenseEncoder

    return DenseEncoder.load(settings, device, dataset=dataset)


def make_retriever(kind: str, settings: EncoderSettings | None = None, *, rules: Any = None,
                   work_dir: str | Path | None = None, index: str | None = None, bm25: dict[str, float] | None = None,
                   progress: bool = True) -> Retriever:
    """A retriever of ``kind`` (bm25, dense, sparse) over ``settings``, under a dataset's ``rules``."""
    if kind == "bm25":
        from llmret.retrievers.bm25 import BM25Retriever

        return BM25Retriever(**(bm25 or {}))
    if settings is None:
        raise ValueError(f"a {kind} retriever needs encoder settings")
    dataset = rules.encoder_layer() if rules is not None else None
    if kind == "sparse":
        from llmret.retrievers.sparse import SparseRetriever

        return SparseRetriever(load_encoder(kind, settings, dataset=dataset), work_dir=work_dir, index=index or "exact",
                               progress=progress)
    if kind != "dense":
        raise ValueError(f"retriever must be one of {', '.join(RETRIEVERS)}, not '{kind}'")
    from llmret.retrievers.dense import DenseRetriever

    return DenseRetriever(load_encoder(kind, settings, dataset=dataset), work_dir=work_dir, factory=index or "Flat",
                          progress=progress)
