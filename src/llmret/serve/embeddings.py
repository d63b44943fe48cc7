"""Vectors over HTTP in the two shapes other software already speaks: OpenAI's ``POST /v1/embeddings``
(vector databases, LangChain, LlamaIndex and most RAG stacks) and text-embeddings-inference's
``POST /embed`` and ``POST /embed_sparse``, each answered by a served index's own encoder, so a trained
model feeds anyone's vector store with the vectors ``llmret encode`` writes.

Which side encodes a text (query or passage, which differ when the encoder has an instruction, a prefix
or different lengths for each) is chosen by one documented rule per API, passages by default:
OpenAI's ``model`` is a served index's name, with ``:query`` after it for queries (or the field
``input_type``: ``query`` or ``passage``, as several providers' APIs have it); TEI's ``prompt_name``
``query`` (TEI's own way to choose a model's query prompt). Texts are cut at the encoder's maximum length
for their side, as the index's own passages were. Requests are micro-batched in the index's encoding
thread, beside its searches.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from llmret.serve.checks import check_text

if TYPE_CHECKING:  # the app's module imports this one to add its routes
    from llmret.serve.app import Limits, LoadedIndex


@dataclass(frozen=True)
class Text:
    """One text to encode, and on which side."""

    text: str
    query: bool


def encode_texts(encoder: Any, items: list[Text]) -> tuple[list[tuple[Any, int]], dict[str, float]]:
    """Each item's vector (a dense row, or a sparse CSR row) and the tokens the model read for it, the
    queries and passages of a batch encoded apart (run in the index's encoding thread)."""
    answers: list[tuple[Any, int] | None] = [None] * len(items)
    start = time.perf_counter()
    for query in (True, False):
        rows = [i for i, item in enumerate(items) if item.query is query]
        if not rows:
            continue
        texts = [items[i].text for i in rows]
        vectors = encoder.encode(texts, query=query)
        tokens = [len(ids) for ids in encoder.token_ids(texts, query=query)]
        for j, i in enumerate(rows):
            answers[i] = (vectors[j], tokens[j])
    return answers, {"embed": time.perf_counter() - start}  # type: ignore[return-value]


class OpenAIRequest(BaseModel):
    input: str | list[str] = Field(description="a text or a list of texts (token arrays are not taken)")
    model: str = Field(description="a served dense index's name; NAME:query encodes the texts as queries")
    encoding_format: Literal["float", "base64"] = Field("float", description="base64: little-endian float32")
    dimensions: int | None = Field(None, description="must be the model's own, if given (no reduction)")
    input_type: Literal["query", "passage"] | None = Field(None, description="the side, instead of a :query suffix")
    user: str | None = None


class OpenAIError(BaseModel):
    message: str = Field(description="what is wrong, in one line")
    type: str = Field(description="invalid_request_error, or server_error for a 5xx")
    param: str | None = None
    code: str | None = None


class OpenAIErrorBody(BaseModel):
    error: OpenAIError


class TEIRequest(BaseModel):
    inputs: str | list[str] = Field(description="a text or a list of texts")
    normalize: bool = Field(True, description="/embed: L2-normalise each vector, as TEI")
    truncate: bool | None = Field(None, description="texts are always cut at the encoder's maximum length")
    truncation_direction: Literal["Left", "Right", "left", "right"] | None = Field(None, description="Right only")
    prompt_name: str | None = Field(None, description="'query' encodes the texts as queries")


def add_embedding_routes(app: FastAPI, indexes: dict[str, LoadedIndex], limits: Limits,
                         errors: dict[int | str, dict[str, Any]]) -> None:
    """``/v1/embeddings``, ``/embed``, ``/embed_sparse`` and the TEI pair under ``/indexes/NAME/``."""
    # long: the routes are closures over the served indexes and their limits, as the app's own

    async def embed(index: LoadedIndex, texts: list[str], query: bool) -> list[tuple[Any, int]]:
        if not 1 <= len(texts) <= limits.max_batch:
            raise HTTPException(413 if texts else 400, f"give between 1 and {limits.max_batch} texts, not {len(texts)}")
        for i, text in enumerate(texts):
            if not text.strip():
                raise HTTPException(400, f"text {i} is empty")
            check_text(text, f"text {i}")
        try:
            return await index.embedder.submit([Text(t, query) for t in texts])
        except Exception as exc:  # one request failed inside the model; the service goes on
            raise HTTPException(500, f"encoding failed: {type(exc).__name__}: {exc}") from None

    def served(name: str | None, sparse: bool) -> LoadedIndex:
        kind = "sparse" if sparse else "dense"
        fitting = [ix for ix in indexes.values() if ix.sparse is sparse]
        if name is None:
            if len(fitting) == 1:
                return fitting[0]
            raise HTTPException(400, f"{len(fitting)} {kind} indexes are served: name one "
                                     f"(/indexes/NAME/...; served: {', '.join(indexes)})")
        if name not in indexes:
            raise HTTPException(404, f"no index '{name}' is served (served: {', '.join(indexes)})")
        if indexes[name].sparse is not sparse:
            other = "/embed_sparse" if indexes[name].sparse else "/embed or /v1/embeddings"
            raise HTTPException(400, f"index '{name}' is {'sparse' if indexes[name].sparse else 'dense'}: use {other}")
        return indexes[name]

    @app.post("/v1/embeddings", responses={status: {**answer, "model": OpenAIErrorBody}
                                           for status, answer in errors.items()})
    async def openai_embeddings(body: OpenAIRequest) -> dict[str, Any]:
        name, _, side = body.model.partition(":")
        if side not in ("", "query", "passage"):
            raise HTTPException(400, f"model '{body.model}': after ':' comes 'query' or 'passage'")
        index = served(name, sparse=False)
        query = (body.input_type or side or "passage") == "query"
        texts = _listed(body.input)
        if body.dimensions is not None and body.dimensions != index.searcher.encoder.dim:
            raise HTTPException(400, f"index '{name}' gives {index.searcher.encoder.dim} dimensions, not {body.dimensions}")
        encoded = await embed(index, texts, query)
        data = []
        for i, (vector, _) in enumerate(encoded):
            vector = np.asarray(vector, dtype="<f4")
            value: Any = base64.b64encode(vector.tobytes()).decode() if body.encoding_format == "base64" else vector.tolist()
            data.append({"object": "embedding", "index": i, "embedding": value})
        tokens = sum(n for _, n in encoded)
        return {"object": "list", "data": data, "model": body.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    async def tei_dense(body: TEIRequest, name: str | None) -> list[list[float]]:
        _tei_checks(body)
        texts = _listed(body.inputs)
        encoded = await embed(served(name, sparse=False), texts, body.prompt_name == "query")
        vectors = np.stack([np.asarray(v, dtype=np.float32) for v, _ in encoded])
        if body.normalize:
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors.tolist()

    async def tei_sparse(body: TEIRequest, name: str | None) -> list[list[dict[str, Any]]]:
        _tei_checks(body)
        texts = _listed(body.inputs)
        encoded = await embed(served(name, sparse=True), texts, body.prompt_name == "query")
        return [[{"index": int(i), "value": float(v)} for i, v in zip(row.indices, row.data)] for row, _ in encoded]

    @app.post("/embed", responses=errors)
    async def tei_embed(body: TEIRequest) -> list[list[float]]:
        return await tei_dense(body, None)

    @app.post("/embed_sparse", responses=errors)
    async def tei_embed_sparse(body: TEIRequest) -> list[list[dict[str, Any]]]:
        return await tei_sparse(body, None)

    @app.post("/indexes/{name}/embed", responses=errors)
    async def tei_embed_named(name: str, body: TEIRequest) -> list[list[float]]:
        return await tei_dense(body, name)

    @app.post("/indexes/{name}/embed_sparse", responses=errors)
    async def tei_embed_sparse_named(name: str, body: TEIRequest) -> list[list[dict[str, Any]]]:
        return await tei_sparse(body, name)


def _listed(texts: str | list[str]) -> list[str]:
    """Both APIs take one text or a list of them."""
    return [texts] if isinstance(texts, str) else texts


def _tei_checks(body: TEIRequest) -> None:
    if body.truncation_direction and body.truncation_direction.lower() == "left":
        raise HTTPException(400, "texts are cut on the right only (truncation_direction 'Right')")
    if body.prompt_name not in (None, "query", "passage", "document"):
        raise HTTPException(400, f"prompt_name '{body.prompt_name}': 'query' for queries, none for passages")
