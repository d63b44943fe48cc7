"""The retriever interface BM25, dense and sparse retrievers implement."""

from __future__ import annotations

from abc import ABC, abstractmethod

from llmret.data.corpus import Corpus
from llmret.data.trec import Run


class Retriever(ABC):
    """Index a corpus once, then answer queries with a ranked run."""

    name: str = "retriever"

    @abstractmethod
    def index(self, corpus: Corpus) -> None:
        """Build (or load) the index for ``corpus``."""

    @abstractmethod
    def retrieve(self, queries: dict[str, str], k: int = 1000) -> Run:
        """The top ``k`` documents per query, as a run."""

    def describe(self) -> dict[str, object]:
        """Settings worth recording next to the run."""
        return {"retriever": self.name}

    def truncation(self) -> dict[str, int]:
        """Queries and passages cut at a maximum length (none for retrievers that read whole texts)."""
        return {"queries": 0, "passages": 0}

