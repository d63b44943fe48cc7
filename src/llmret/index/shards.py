"""Corpus embeddings on disk: numbered ``.npy`` shards with their id lists, written atomically.

Shards make encoding resumable (a killed run keeps every finished shard and re-encodes only the
rest) and let outside tools read the vectors with plain numpy.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from llmret.data.corpus import Corpus
from llmret.errors import DataError
from llmret.fileio import atomic_write, read_json, write_json

log = logging.getLogger(__name__)


class PassageEncoder(Protocol):
    def encode_passages(self, texts: list[str], **kwargs: Any) -> np.ndarray: ...


@dataclass
class EmbeddingShards:
    """A folder of embedding shards: ``shard-NNNNN.npy`` + ``shard-NNNNN.ids`` and ``meta.json``."""

    folder: Path

    def shard_names(self) -> list[str]:
        meta = read_json(self.folder / "meta.json")
        if not meta.get("complete"):
            raise DataError(self.folder / "meta.json", None, "encoding did not finish; rerun it to resume")
        return [f"shard-{i:05d}" for i in range(meta["shards"])]

    def __iter__(self) -> Iterator[tuple[list[str], np.ndarray]]:
        """Yield ``(ids, vectors)`` per shard; vectors are memory-mapped, not read whole."""
        for name in self.shard_names():
            ids = (self.folder / f"{name}.ids").read_text(encoding="utf-8").split("\n")[:-1]
            vectors = np.load(self.folder / f"{name}.npy", mmap_mode="r")
            if len(ids) != len(vectors):
                raise DataError(self.folder / f"{name}.ids", None, f"{len(ids)} ids for {len(vectors)} vectors")
            yield ids, vectors


def encode_corpus(encoder: PassageEncoder, corpus: Corpus, folder: str | Path, *, shard_size: int = 50_000,
                  signature: dict[str, Any] | None = None, progress: bool = True) -> EmbeddingShards:
    """Encode ``corpus`` into shards under ``folder``, resuming from the shards already there.

    ``signature`` (the encoder settings) is stored in meta.json; a folder made with other settings is
    refused rather than silently mixed.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta_path = folder / "meta.json"
    signature = signature or {}
    if meta_path.is_file():
        old = read_json(meta_path)
        if old.get("signature") != signature or old.get("shard_size") != shard_size:
            raise DataError(meta_path, None, "embeddings here were made with other settings; use another folder")
    write_json(meta_path, {"signature": signature, "shard_size": shard_size, "complete": False})
    count = 0
    for number, docs in enumerate(corpus.batches(shard_size)):
        name = f"shard-{number:05d}"
        ids = [d.id for d in docs]
        ids_path, vec_path = folder / f"{name}.ids", folder / f"{name}.npy"
        if ids_path.is_file() and vec_path.is_file():
            if ids_path.read_text(encoding="utf-8").split("\n")[:-1] == ids:
                log.info("%s: already encoded, skipped", name)
                count += 1
                continue
        vectors = encoder.encode_passages([d.full_text() for d in docs], progress=progress)
        with atomic_write(vec_path, "wb") as handle:
            np.save(handle, vectors)
        with atomic_write(ids_path) as handle:
            handle.write("".join(f"{i}\n" for i in ids))
        count += 1
    write_json(meta_path, {"signature": signature, "shard_size": shard_size, "complete": True, "shards": count})
    return EmbeddingShards(folder)


def save_vectors(folder: str | Path, ids: list[str], vectors: np.ndarray) -> None:
    """Query embeddings (or any small set) as one shard, for outside tools."""
    folder = Path(folder)
    with atomic_write(folder / "shard-00000.npy", "wb") as handle:
        np.save(handle, vectors)
    with atomic_write(folder / "shard-00000.ids") as handle:
        handle.write("".join(f"{i}\n" for i in ids))
    write_json(folder / "meta.json", {"complete": True, "shards": 1})

