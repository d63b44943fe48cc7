"""BM25 through bm25s: English stop words, Snowball stemming, k1 and b settable (Pyserini's 0.9/0.4)."""

from __future__ import annotations

import logging

import bm25s
import numpy as np
import Stemmer

from llmret.data.corpus import Corpus
from llmret.data.trec import Run
from llmret.retrievers.base import Retriever

log = logging.getLogger(__name__)


class BM25Retriever(Retriever):
    """Lexical baseline; the corpus text streams through the tokenizer, only token ids are kept."""

    name = "bm25"

    def __init__(self, k1: float = 0.9, b: float = 0.4, stopwords: str | None = "en", stemmer: str | None = "english",
                 method: str = "lucene") -> None:
        self.k1, self.b, self.method = k1, b, method
        self.stopwords, self.stemmer_name = stopwords, stemmer
        self.tokenizer = bm25s.tokenization.Tokenizer(
            stopwords=stopwords, stemmer=Stemmer.Stemmer(stemmer) if stemmer else None)
        self.model = bm25s.BM25(k1=k1, b=b, method=method)
        self.doc_ids: list[str] = []

    def index(self, corpus: Corpus) -> None:
        self.doc_ids = []

        def texts():
            for doc in corpus:
                self.doc_ids.append(doc.id)
                yield doc.full_text()

        tokens = self.tokenizer.tokenize(texts(), update_vocab=True, return_as="tuple", show_progress=False,
                                         length=len(corpus))  # a generator: bm25s needs the count
        self.model.index(tokens, show_progress=False)

    def retrieve(self, queries: dict[str, str], k: int = 1000) -> Run:
        qids = list(queries)
        tokens = self.tokenizer.tokenize([queries[q] for q in qids], update_vocab=False, return_as="ids",
                                         show_progress=False)
        k = min(k, len(self.doc_ids))
        rows, scores = self.model.retrieve(tokens, k=k, show_progress=False)
        run: Run = {}
        for qid, row, score in zip(qids, rows, scores):
            keep = score > 0  # a query sharing no term with a document gives it no evidence at all
            run[qid] = {self.doc_ids[r]: float(s) for r, s in zip(row[keep], np.asarray(score)[keep])}
        return run

    def describe(self) -> dict[str, object]:
        return {"retriever": self.name, "k1": self.k1, "b": self.b, "method": self.method,
                "stopwords": self.stopwords, "stemmer": self.stemmer_name}
