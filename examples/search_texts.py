"""Search a handful of texts with a dense model: index them, ask, print the ranking.

    python examples/search_texts.py            # all-MiniLM-L6-v2 from llmret's offline zoo
    python examples/search_texts.py MODEL      # any zoo name, model folder, .gguf file or hub id
"""

import sys

import llmret

TEXTS = {
    "faiss": "FAISS searches dense vectors by inner product, exactly or with an approximate index.",
    "bm25": "BM25 ranks documents by term frequency, inverse document frequency and document length.",
    "splade": "SPLADE expands a text into weighted vocabulary terms through the masked-LM head.",
    "lora": "LoRA trains small low-rank matrices beside frozen weights instead of the whole model.",
}
QUERIES = {"q1": "which method weighs words by how rare they are?", "q2": "fine-tune only a few parameters"}


def main(model: str = "minilm-l6") -> dict[str, dict[str, float]]:
    retriever = llmret.retriever("dense", model)
    retriever.index(llmret.Corpus.from_documents(llmret.Document(id, text) for id, text in TEXTS.items()))
    run = retriever.retrieve(QUERIES, k=2)
    for qid, hits in run.items():
        ranked = sorted(hits, key=hits.get, reverse=True)
        print(f"{QUERIES[qid]!r}: " + ", ".join(f"{doc} {hits[doc]:.3f}" for doc in ranked))
    return run


if __name__ == "__main__":
    main(*sys.argv[1:2])
