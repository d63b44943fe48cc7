"""Training data for a corpus that has no judged queries to learn from: Inverse Cloze Task pseudo-queries.

Lee et al. 2019 (*Latent Retrieval for Weakly Supervised Open Domain Question Answering*): a sentence
drawn from a passage stands for a query about it, and the passage with that sentence taken out is its
positive, so the model learns what a passage is about rather than which words it repeats. Negatives
are the top BM25 hits that are not the source passage, as for judged queries
(:func:`llmret.training.mining.mine_bm25_negatives`). Written here because no maintained library
builds ICT pairs from a BEIR corpus.
"""

from __future__ import annotations

import random
import re

from llmret.data.corpus import Corpus, Document
from llmret.data.dataset import RetrievalData
from llmret.data.training import TrainExample
from llmret.training.mining import mine_bm25_negatives

MIN_WORDS = 4  # a shorter sentence ("See above.") says too little to stand for a query
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sentences(text: str) -> list[str]:
    """The text's sentences (split after . ! or ? followed by white space)."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def pseudo_query_data(corpus: Corpus, count: int, seed: int = 0) -> RetrievalData:
    """Up to ``count`` ICT pairs from passages of at least two sentences, drawn by ``seed``: each query a
    sentence of at least :data:`MIN_WORDS` words, its one relevant document the passage without it (the
    title kept); every other passage of the corpus stays as it is, to be mined for negatives."""
    docs = list(corpus)
    rng = random.Random(f"ict:{seed}")
    order = list(range(len(docs)))
    rng.shuffle(order)
    queries: dict[str, str] = {}
    changed: dict[int, Document] = {}
    for i in order:
        if len(queries) >= count:
            break
        parts = sentences(docs[i].text)
        usable = [j for j, s in enumerate(parts) if len(s.split()) >= MIN_WORDS]
        if len(parts) < 2 or not usable:
            continue
        pick = rng.choice(usable)
        qid = f"ict-{len(queries)}"
        queries[qid] = parts[pick]
        changed[i] = Document(docs[i].id, " ".join(parts[:pick] + parts[pick + 1:]), docs[i].title)
    qrels = {f"ict-{n}": {docs[i].id: 1} for n, i in enumerate(changed)}
    return RetrievalData(Corpus.from_documents([changed.get(i, d) for i, d in enumerate(docs)], corpus.name),
                         queries, qrels, name=f"{corpus.name} (pseudo-queries)")


def pseudo_query_examples(corpus: Corpus, count: int, seed: int = 0) -> list[TrainExample]:
    """ICT pairs with BM25-mined negatives, ready for training."""
    return mine_bm25_negatives(pseudo_query_data(corpus, count, seed))
