"""Readers and writers for the formats the IR community passes around.

Every reader streams where the data can be large (corpora), validates as it goes, and raises
:class:`llmret.util.errors.DataError` naming the file and line of the first fault.
"""

from llmret.data.corpus import Corpus, Document
from llmret.data.dataset import RetrievalData, load_dataset, load_queries
from llmret.data.qrels import Qrels, read_qrels, write_qrels
from llmret.data.trec import Run, read_run, write_run

__all__ = [
    "Corpus",
    "Document",
    "Qrels",
    "RetrievalData",
    "Run",
    "load_dataset",
    "load_queries",
    "read_qrels",
    "read_run",
    "write_qrels",
    "write_run",
]
