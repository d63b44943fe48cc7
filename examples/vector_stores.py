"""LangChain's and LlamaIndex's vector stores fed by `llmret serve`'s OpenAI-compatible embeddings: their
stock embedding classes (`OpenAIEmbeddings`, `OpenAILikeEmbedding`), pointed at the local service, embed
the passages and the queries with llmret's model, and each store ranks the passages for each query.

    pip install langchain-openai llama-index-embeddings-openai-like
    python examples/vector_stores.py            # all-MiniLM-L6-v2 from llmret's offline zoo
    python examples/vector_stores.py MODEL      # any zoo name, model folder, .gguf file or hub id

The served index's name is the `model` they send; `NAME:query` embeds queries as the model's queries
(its instruction, prefix and query length), `NAME` passages.
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from langchain_core.vectorstores import InMemoryVectorStore
from langchain_openai import OpenAIEmbeddings
from llama_index.core import VectorStoreIndex
from llama_index.core.schema import TextNode
from llama_index.embeddings.openai_like import OpenAILikeEmbedding

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


def langchain(url: str, name: str) -> dict[str, list[tuple[str, float]]]:
    """Each query's top two passages in LangChain's in-memory store."""
    def embeddings(side: str) -> OpenAIEmbeddings:
        # check_embedding_ctx_length=False: send the texts, not OpenAI's own token ids for them
        return OpenAIEmbeddings(model=f"{name}{side}", base_url=f"{url}/v1", api_key="unused",
                                check_embedding_ctx_length=False)

    store = InMemoryVectorStore(embeddings(""))
    store.add_texts(list(TEXTS.values()), ids=list(TEXTS))
    asker = embeddings(":query")
    return {query: [(doc.id, score) for doc, score in store.similarity_search_with_score_by_vector(
        asker.embed_query(query), k=2)] for query in QUERIES}


def llamaindex(url: str, name: str) -> dict[str, list[tuple[str, float]]]:
    """Each query's top two passages in LlamaIndex's vector store index."""
    passages = OpenAILikeEmbedding(model_name=name, api_base=f"{url}/v1", api_key="unused")
    queries = OpenAILikeEmbedding(model_name=f"{name}:query", api_base=f"{url}/v1", api_key="unused")
    vectors = passages.get_text_embedding_batch(list(TEXTS.values()))
    nodes = [TextNode(text=text, id_=doc, embedding=vector) for (doc, text), vector in zip(TEXTS.items(), vectors)]
    retriever = VectorStoreIndex(nodes, embed_model=queries).as_retriever(similarity_top_k=2)
    return {query: [(hit.node.id_, hit.score) for hit in retriever.retrieve(query)] for query in QUERIES}


def main(model: str = "minilm-l6") -> dict[str, dict[str, list[tuple[str, float]]]]:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "texts"
        data.mkdir()
        with open(data / "corpus.jsonl", "w") as f:
            f.writelines(json.dumps({"_id": i, "text": t}) + "\n" for i, t in TEXTS.items())
        index = llmret.build_index(model, str(data), str(Path(tmp) / "built"))  # served as its folder's name
        server, url = serve(index)
        try:
            ranked = {"langchain": langchain(url, index.name), "llamaindex": llamaindex(url, index.name)}
        finally:
            server.terminate()
            server.wait(30)
    for library, runs in ranked.items():
        for query, hits in runs.items():
            print(f"{library} {query!r}: " + ", ".join(f"{doc} {score:.3f}" for doc, score in hits))
    return ranked


if __name__ == "__main__":
    main(*sys.argv[1:2])
