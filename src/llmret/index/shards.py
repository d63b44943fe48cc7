"""Corpus embeddings on disk: numbered shards with their id lists, written atomically.

Dense shards are ``.npy`` arrays, sparse shards ``.npz`` CSR matrices (``scipy.sparse.load_npz``).
Shards make encoding resumable (a killed run keeps every finished shard and re-encodes only the
rest) and let outside tools read the vectors with plain numpy and scipy.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

from llmret.data.corpus import Corpus
from llmret.util.errors import DataError, InputError
from llmret.util.fileio import atomic_write, check_output, read_ids, read_json, write_ids, write_json

log = logging.getLogger(__name__)


Vectors = np.ndarray | sp.csr_matrix


def encoder_signature(meta: dict[str, Any]) -> dict[str, Any]:
    """The encoder signature a ``meta.json`` records: everything that decides the vectors, weights'
    fingerprint included (shards keep it under ``signature``, saved indexes under ``encoder``), with
    ``retriever`` for what llmret 0.1 called ``paradigm``."""
    signature = dict(meta.get("signature", meta.get("encoder")) or {})
    if "paradigm" in signature:
        signature["retriever"] = signature.pop("paradigm")
    return signature


def signature_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The settings two encoder signatures disagree on (empty: vectors of one space). Every comparison of
    encoders (reusing shards, joining parts, opening an index, searching it with encoded queries) is this.

    A setting one signature lacks was added to llmret after that signature was written, so its encoder
    behaved as the setting's off state: it agrees with an off value (None, False, 0, empty) and differs
    from any other. New settings default to off, so stored vectors survive an upgrade that adds one."""
    def agree(k: str) -> bool:
        if k in a and k in b:
            return bool(a[k] == b[k])
        value = a[k] if k in a else b[k]
        return not value  # signatures hold JSON values: None, False, 0, "", [] and {} are the off states
    return sorted(k for k in set(a) | set(b) if not agree(k))


class PassageEncoder(Protocol):
    """An encoder of passages; ``truncated["passages"]`` counts the passages it cut at its maximum length."""

    truncated: dict[str, int]

    def encode_passages(self, texts: list[str], **kwargs: Any) -> Vectors: ...


@dataclass
class EmbeddingShards:
    """A folder of embedding shards: ``shard-NNNNN.npy`` (or ``.npz``) + ``shard-NNNNN.ids`` and ``meta.json``."""

    folder: Path

    def shard_names(self) -> list[str]:
        meta = read_json(self.folder / "meta.json")
        if not meta.get("complete"):
            raise DataError(self.folder / "meta.json", None, "encoding did not finish; rerun it to resume")
        return [f"shard-{i:05d}" for i in range(meta["shards"])]

    def signature(self) -> dict[str, Any]:
        """The encoder settings the shards were made with."""
        return encoder_signature(read_json(self.folder / "meta.json"))

    def truncated(self) -> int:
        """How many of the encoded texts were cut at the encoder's maximum length."""
        return sum(read_json(self.folder / "meta.json").get("truncated", {}).values())

    def __iter__(self) -> Iterator[tuple[list[str], Vectors]]:
        """Yield ``(ids, vectors)`` per shard; dense vectors are memory-mapped, not read whole."""
        for name in self.shard_names():
            ids = read_ids(self.folder / f"{name}.ids")
            dense = self.folder / f"{name}.npy"
            vectors = np.load(dense, mmap_mode="r") if dense.is_file() else sp.load_npz(self.folder / f"{name}.npz")
            if len(ids) != vectors.shape[0]:
                raise DataError(self.folder / f"{name}.ids", None, f"{len(ids)} ids for {vectors.shape[0]} vectors")
            yield ids, vectors


@dataclass
class ShardSet:
    """Several shard folders read as one, in the order given (the parts of a sharded encoding):
    the index stage streams them shard by shard, never gathering the corpus's vectors in memory."""

    folders: list[Path]

    @property
    def folder(self) -> Path:
        return self.folders[0]

    def signature(self) -> dict[str, Any]:
        """The encoder settings every part was made with; parts made otherwise are an error."""
        first = EmbeddingShards(self.folders[0]).signature()
        for folder in self.folders[1:]:
            if signature_differences(EmbeddingShards(folder).signature(), first):
                raise DataError(folder / "meta.json", None, f"encoded with other settings or weights than "
                                                            f"{self.folders[0]}: these parts cannot share an index")
        return first

    def __iter__(self) -> Iterator[tuple[list[str], Vectors]]:
        for folder in self.folders:
            yield from EmbeddingShards(folder)


Shards = EmbeddingShards | ShardSet


def open_shards(folders: list[str | Path]) -> Shards:
    """One shard folder, or several read as one."""
    paths = [Path(f) for f in folders]
    return EmbeddingShards(paths[0]) if len(paths) == 1 else ShardSet(paths)


# Passages a shard holds: small enough that an interrupted encode keeps most of its work (each finished
# shard is kept), large enough that MS MARCO's 8.8M passages make a few thousand files.
SHARD_SIZE = 2048


def encode_corpus(encoder: PassageEncoder, corpus: Corpus, folder: str | Path, *, shard_size: int = SHARD_SIZE,
                  signature: dict[str, Any] | None = None, progress: bool = True,
                  replace_stale: bool = False) -> EmbeddingShards:
    """Encode ``corpus`` into shards under ``folder``, resuming from the shards already there.

    ``signature`` (the encoder settings and the weights' fingerprint) is stored in meta.json. A folder
    made with another signature is never mixed with new vectors: it is refused, or, with
    ``replace_stale`` (a retriever's own cache folder), its shards are deleted and the corpus re-encoded.
    A folder resumes with the shard size it was started with (the vectors do not depend on it).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta_path = folder / "meta.json"
    signature = signature or {}
    truncated: dict[str, int] = {}
    if meta_path.is_file():
        old = read_json(meta_path)
        changed = signature_differences(encoder_signature(old), signature)
        stale = bool(changed)
        shard_size = int(old.get("shard_size") or shard_size)
        if stale and replace_stale:
            log.info("%s: made with other settings or weights; encoding again", folder)
            for item in folder.glob("shard-*"):
                item.unlink()
            old = {}
        elif stale:
            raise DataError(meta_path, None, "embeddings here were made with other settings or weights "
                                             f"({', '.join(changed)}); use another folder")
        truncated = old.get("truncated", {})
    meta = {"signature": signature, "shard_size": shard_size, "complete": False, "truncated": truncated}
    write_json(meta_path, meta)
    count = 0
    for number, docs in enumerate(corpus.batches(shard_size)):
        name = f"shard-{number:05d}"
        ids = [d.id for d in docs]
        if (folder / f"{name}.ids").is_file() and any((folder / f"{name}{x}").is_file() for x in (".npy", ".npz")) \
                and read_ids(folder / f"{name}.ids") == ids:
            log.info("%s: already encoded, skipped", name)
        else:
            before = encoder.truncated["passages"] if hasattr(encoder, "truncated") else 0
            _write_shard(folder, name, ids, encoder.encode_passages([d.full_text() for d in docs], progress=progress))
            truncated[name] = (encoder.truncated["passages"] if hasattr(encoder, "truncated") else 0) - before
            write_json(meta_path, meta)  # the count survives a kill, with the shard it belongs to
        count += 1
    write_json(meta_path, {**meta, "complete": True, "shards": count})
    return EmbeddingShards(folder)


def _write_shard(folder: Path, name: str, ids: list[str], vectors: Vectors) -> None:
    """Vectors first, ids last: a shard counts as done only once its ids file exists."""
    if sp.issparse(vectors):
        with atomic_write(folder / f"{name}.npz", "wb") as handle:
            sp.save_npz(handle, sp.csr_matrix(vectors))
    else:
        with atomic_write(folder / f"{name}.npy", "wb") as handle:
            np.save(handle, vectors)
    write_ids(folder / f"{name}.ids", ids)


def save_vectors(folder: str | Path, ids: list[str], vectors: Vectors, signature: dict[str, Any] | None = None) -> None:
    """Query embeddings (or any small set) as one shard, for outside tools."""
    folder = Path(folder)
    _write_shard(folder, "shard-00000", ids, vectors)
    write_json(folder / "meta.json", {"signature": signature or {}, "complete": True, "shards": 1})



def encode_data(encoder: Any, data: Any, out: str | Path, *, what: str = "both", part: int = 0, parts: int = 1,
                shard_size: int = SHARD_SIZE) -> None:
    """Encode ``data`` (a :class:`~llmret.data.dataset.RetrievalData`) into ``out``: the corpus into
    ``out/corpus`` (part ``part`` of ``parts`` into ``out/corpus/part-I-of-N``) and the queries into
    ``out/queries``, written once, by part 0. ``what``: corpus, queries or both."""
    if not 0 <= part < parts:
        raise InputError(f"part must be between 0 and {parts - 1}, not {part}")
    out = check_output(out)
    if what in ("corpus", "both"):
        corpus = data.corpus if parts == 1 else data.corpus.part(part, parts)
        folder = out / "corpus" if parts == 1 else out / "corpus" / f"part-{part:03d}-of-{parts:03d}"
        encode_corpus(encoder, corpus, folder, shard_size=shard_size, signature=encoder.signature())
    if what in ("queries", "both") and part == 0:  # the queries once, by the first part's process
        qids = list(data.queries)
        save_vectors(out / "queries", qids, encoder.encode_queries([data.queries[q] for q in qids], progress=True),
                     signature=encoder.signature())
    if any(encoder.truncated.values()):
        log.warning("%d queries and %d passages encoded now were longer than their maximum length and were cut",
                    encoder.truncated["queries"], encoder.truncated["passages"])
