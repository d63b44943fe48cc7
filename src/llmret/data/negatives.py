"""Training examples from judgments, with hard negatives mined by BM25."""

from __future__ import annotations

from llmret.data.dataset import RetrievalData
from llmret.data.training import Passage, TrainExample


def mine_bm25_negatives(data: RetrievalData, count: int = 20) -> list[TrainExample]:
    """One example per judged query: its relevant documents, and the top BM25 hits that are not.

    Passages carry only ids; resolve them with :func:`llmret.data.training.resolve_passages`.
    """
    from llmret.retrievers.bm25 import BM25Retriever  # bm25s is only needed when mining

    bm25 = BM25Retriever()
    bm25.index(data.corpus)
    run = bm25.retrieve(data.queries, k=count + 10)
    examples = []
    for qid, query in data.queries.items():
        positives = [d for d, rel in data.qrels[qid].items() if rel > 0]
        if not positives:
            continue
        ranked = sorted(run.get(qid, {}).items(), key=lambda kv: -kv[1])
        negatives = [Passage(d) for d, _ in ranked if d not in data.qrels[qid]][:count]
        examples.append(TrainExample(qid, query, [Passage(d) for d in positives], negatives))
    return examples
