"""Dense retrieval: encode the corpus into shards, index them in FAISS, search with encoded queries."""

from __future__ import annotations

import tempfile
from pathlib import Path

from llmret.data.corpus import Corpus
from llmret.data.trec import Run
from llmret.encoders.dense import DenseEncoder
from llmret.index.dense import DenseIndex
from llmret.index.shards import encode_corpus
from llmret.retrievers.base import Retriever


class DenseRetriever(Retriever):
    """Bi-encoder retrieval with exact (or any FAISS) inner-product search.

    With ``work_dir`` the corpus embeddings persist as shards there, so a rerun (or a killed run)
    reuses every shard already encoded.
    """

    name = "dense"

    def __init__(self, encoder: DenseEncoder, work_dir: str | Path | None = None, factory: str = "Flat",
                 shard_size: int = 50_000, progress: bool = True) -> None:
        self.encoder, self.factory, self.shard_size, self.progress = encoder, factory, shard_size, progress
        self.work_dir = Path(work_dir) if work_dir else None
        self.dense_index: DenseIndex | None = None

    def index(self, corpus: Corpus) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            folder = self.work_dir / "embeddings" if self.work_dir else Path(tmp)
            shards = encode_corpus(self.encoder, corpus, folder, shard_size=self.shard_size,
                                   signature=self.encoder.signature(), progress=self.progress)
            self.dense_index = DenseIndex.from_shards(shards, self.factory)

    def retrieve(self, queries: dict[str, str], k: int = 1000) -> Run:
        if self.dense_index is None:
            raise RuntimeError("call index(corpus) before retrieve()")
        qids = list(queries)
        vectors = self.encoder.encode_queries([queries[q] for q in qids], progress=self.progress)
        scores, ids = self.dense_index.search(vectors, k)
        return {qid: dict(zip(row_ids, map(float, row_scores))) for qid, row_ids, row_scores in zip(qids, ids, scores)}

    def describe(self) -> dict[str, object]:
        return {"retriever": self.name, "index": self.factory, **self.encoder.signature()}
