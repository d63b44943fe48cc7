"""The embedding APIs over a real socket: the `openai` package pointed at `llmret serve` gets the vectors
`llmret encode` wrote (passages and queries), TEI's `/embed` and `/embed_sparse` shapes carry the same
vectors, and a bad request gets one error naming what is wrong."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import numpy as np
import pytest

from llmret.cli import main
from llmret.data.dataset import load_queries
from llmret.data.spec import load_corpus
from llmret.index.shards import open_shards
from llmret.serve.app import create_app
from test_serve import _load, indexes, serving  # noqa: F401 - the module's fixture, shared


def _encoded(folder: Path) -> dict[str, np.ndarray]:
    """``llmret encode``'s vectors by id (dense rows, or sparse rows made dense)."""
    out = {}
    for ids, vectors in open_shards([folder]):
        rows = vectors.toarray() if hasattr(vectors, "toarray") else np.asarray(vectors)
        out.update(zip(ids, rows))
    return out


def test_the_openai_client_gets_the_vectors_llmret_encode_writes(indexes: dict[str, Path],  # noqa: F811
                                                                 tmp_path: Path) -> None:
    from openai import BadRequestError, NotFoundError, OpenAI

    docs = {d.id: d.full_text() for d in load_corpus(str(indexes["data"]))}
    passages = _encoded(indexes["dense"].parent / "emb-dense" / "corpus")
    assert main(["encode", "--retriever", "dense", "--model", str(indexes["dense"].parent / "run" / "final"),
                 "--data", str(indexes["data"]), "--what", "queries", "--out", str(tmp_path / "q")]) == 0
    queries = _encoded(tmp_path / "q" / "queries")
    query_texts = load_queries(indexes["data"] / "queries.jsonl")
    with serving(create_app(_load(indexes))) as url:
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        ids = sorted(docs)[:7]
        expected = np.stack([passages[i] for i in ids])
        answer = client.embeddings.create(model="dense", input=[docs[i] for i in ids])  # base64 asked, decoded
        np.testing.assert_allclose([e.embedding for e in answer.data], expected, rtol=1e-5, atol=1e-6)
        answer = client.embeddings.create(model="dense", input=[docs[i] for i in ids], encoding_format="float")
        np.testing.assert_allclose([e.embedding for e in answer.data], expected, rtol=1e-5, atol=1e-6)
        answer = client.embeddings.create(model="dense", input=[docs[i] for i in ids], encoding_format="base64")
        decoded = [np.frombuffer(base64.b64decode(e.embedding), dtype="<f4") for e in answer.data]  # asked: as sent
        np.testing.assert_allclose(decoded, expected, rtol=1e-5, atol=1e-6)
        answer = client.embeddings.create(model="dense", input=docs[ids[0]])  # one text, the default format
        np.testing.assert_allclose(answer.data[0].embedding, passages[ids[0]], rtol=1e-5, atol=1e-6)
        qids = sorted(query_texts)[:5]
        answer = client.embeddings.create(model="dense:query", input=[query_texts[q] for q in qids])
        np.testing.assert_allclose([e.embedding for e in answer.data], np.stack([queries[q] for q in qids]),
                                   rtol=1e-5, atol=1e-6)
        answer = client.embeddings.create(model="dense", input=[query_texts[q] for q in qids],
                                          extra_body={"input_type": "query"})
        np.testing.assert_allclose([e.embedding for e in answer.data], np.stack([queries[q] for q in qids]),
                                   rtol=1e-5, atol=1e-6)
        encoder = _load(indexes)[0].searcher.encoder  # usage counts the tokens the model read
        assert answer.usage.prompt_tokens == sum(len(t) for t in encoder.token_ids([query_texts[q] for q in qids],
                                                                                  query=True))
        with pytest.raises(NotFoundError, match="no index 'nope'"):
            client.embeddings.create(model="nope", input="x")
        with pytest.raises(BadRequestError, match="index 'sparse' is sparse: use /embed_sparse"):
            client.embeddings.create(model="sparse", input="x")
        with pytest.raises(BadRequestError, match="text 1 is empty"):
            client.embeddings.create(model="dense", input=["a", " "])
        with pytest.raises(BadRequestError, match="gives 32 dimensions, not 7"):
            client.embeddings.create(model="dense", input="a", dimensions=7)


def test_tei_shapes_carry_the_same_vectors(indexes: dict[str, Path]) -> None:  # noqa: F811
    docs = {d.id: d.full_text() for d in load_corpus(str(indexes["data"]))}
    dense = _encoded(indexes["dense"].parent / "emb-dense" / "corpus")
    sparse = _encoded(indexes["sparse"].parent / "emb-sparse" / "corpus")
    ids = sorted(docs)[:4]
    with serving(create_app(_load(indexes))) as url:
        for path in ("/embed", "/indexes/dense/embed"):
            got = httpx.post(f"{url}{path}", json={"inputs": [docs[i] for i in ids]}).json()
            expected = np.stack([dense[i] / np.linalg.norm(dense[i]) for i in ids])  # normalize: true, as TEI
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        raw = httpx.post(f"{url}/embed", json={"inputs": docs[ids[0]], "normalize": False}).json()
        assert len(raw) == 1 and np.allclose(raw[0], dense[ids[0]], rtol=1e-5, atol=1e-6)  # one text: still a list
        got = httpx.post(f"{url}/embed_sparse", json={"inputs": [docs[i] for i in ids]}).json()
        for entries, i in zip(got, ids):
            row = np.zeros_like(sparse[i])
            for entry in entries:
                row[entry["index"]] = entry["value"]
            np.testing.assert_allclose(row, sparse[i], rtol=1e-5, atol=1e-6)
            assert all(entry["value"] > 0 for entry in entries)
        wrong = httpx.post(f"{url}/indexes/dense/embed_sparse", json={"inputs": "x"})
        assert wrong.status_code == 400 and wrong.json() == {"error": "index 'dense' is dense: use /embed or /v1/embeddings"}
        left = httpx.post(f"{url}/embed", json={"inputs": "x", "truncation_direction": "Left"})
        assert left.status_code == 400 and "right only" in left.json()["error"]
        assert httpx.post(f"{url}/embed", json={"inputs": []}).status_code == 400
