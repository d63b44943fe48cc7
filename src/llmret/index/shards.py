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
from llmret.fileio import atomic_write, read_ids, read_json, write_ids, write_json

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
            ids = read_ids(self.folder / f"{name}.ids")
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
        if (folder / f"{name}.ids").is_file() and (folder / f"{name}.npy").is_file() \
                and read_ids(folder / f"{name}.ids") == ids:
            log.info("%s: already encoded, skipped", name)
        else:
            _write_shard(folder, name, ids, encoder.encode_passages([d.full_text() for d in docs], progress=progress))
        count += 1
    write_json(meta_path, {"signature": signature, "shard_size": shard_size, "complete": True, "shards": count})
    return EmbeddingShards(folder)


def _write_shard(folder: Path, name: str, ids: list[str], vectors: np.ndarray) -> None:
    """Vectors first, ids last: a shard counts as done only once its ids file exists."""
    with atomic_write(folder / f"{name}.npy", "wb") as handle:
        np.save(handle, vectors)
    write_ids(folder / f"{name}.ids", ids)


def save_vectors(folder: str | Path, ids: list[str], vectors: np.ndarray) -> None:
    """Query embeddings (or any small set) as one shard, for outside tools."""
    folder = Path(folder)
    _write_shard(folder, "shard-00000", ids, vectors)
    write_json(folder / "meta.json", {"complete": True, "shards": 1})

