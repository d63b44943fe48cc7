"""A LangChain vector store fed by `llmret serve`'s OpenAI-compatible embeddings: LangChain's stock
`OpenAIEmbeddings`, pointed at the local service, embeds the passages and the queries with llmret's model.

    pip install langchain-openai
    python examples/langchain_vector_store.py            # all-MiniLM-L6-v2 from llmret's offline zoo
    python examples/langchain_vector_store.py MODEL      # any zoo name, model folder, .gguf file or hub id

The served index's name is the `model` LangChain sends; `NAME:query` embeds queries as the model's
queries (its instruction, prefix and query length), `NAME` passages.
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from langchain_core.vectorstores import InMemoryVectorStore
from langchain_openai import OpenAIEmbeddings

import llmret

TEXTS = {
    "faiss": "FAISS searches dense vectors by inner product, exactly or with an approximate index.",
    "bm25": "BM25 ranks documents by term frequency, inverse document frequency and document length.",
    "splade": "SPLADE expands a text into weighted vocabulary terms through the masked-LM head.",
    "lora": "LoRA trains small low-rank matrices beside frozen weights instead of the whole model.",
}
QUERIES = ["which method weighs words by how rare they are?", "fine-tune only a few parameters"]


def serve(index: Path) -> tuple[subprocess.Popen, str]:
    """`llmret serve INDEX` on a free port; the process and its address, once it listens."""
    server = subprocess.Popen([sys.executable, "-m", "llmret.cli", "serve", str(index), "--port", "0", "--quiet"],
                              stderr=subprocess.PIPE, text=True)
    for line in server.stderr:
        if "listening on " in line:
            return server, line.split("listening on ")[1].split()[0]
    raise SystemExit("llmret serve stopped before it listened")


def main(model: str = "minilm-l6") -> dict[str, list[str]]:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "texts"
        data.mkdir()
        with open(data / "corpus.jsonl", "w") as f:
            f.writelines(json.dumps({"_id": i, "text": t}) + "\n" for i, t in TEXTS.items())
        index = llmret.build_index(model, str(data), str(Path(tmp) / "built"))  # served as its folder's name
        server, url = serve(index)
        try:
            def embeddings(side: str) -> OpenAIEmbeddings:
                # check_embedding_ctx_length=False: send the texts, not OpenAI's own token ids for them
                return OpenAIEmbeddings(model=f"{index.name}{side}", base_url=f"{url}/v1", api_key="unused",
                                        check_embedding_ctx_length=False)

            store = InMemoryVectorStore(embeddings(""))
            store.add_texts(list(TEXTS.values()), ids=list(TEXTS))
            asker = embeddings(":query")
            ranked = {}
            for query in QUERIES:
                hits = store.similarity_search_with_score_by_vector(asker.embed_query(query), k=2)
                ranked[query] = [doc.id for doc, _ in hits]
                print(f"{query!r}: " + ", ".join(f"{doc.id} {score:.3f}" for doc, score in hits))
        finally:
            server.terminate()
            server.wait(30)
    return ranked


if __name__ == "__main__":
    main(*sys.argv[1:2])
