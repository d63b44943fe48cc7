"""Streaming corpora: BEIR ``corpus.jsonl[.gz]``, MS MARCO ``collection.tsv``, or documents in memory.

A :class:`Corpus` never holds all document text at once; it re-reads its file for each pass, checking
duplicate ids and empty documents on the way. Only the id list is kept after the first pass, because
every later stage (runs, shards) needs it and 8.8M short strings fit comfortably in memory.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from llmret.util.errors import DataError, InputError
from llmret.util.fileio import atomic_write, iter_jsonl, iter_lines, require_str


@dataclass(frozen=True, slots=True)
class Document:
    """One passage or document; ``title`` may be empty."""

    id: str
    text: str
    title: str = ""

    def full_text(self, sep: str = " ") -> str:
        """Title and text joined the way BEIR/MTEB evaluations join them."""
        return f"{self.title}{sep}{self.text}" if self.title else self.text


# (path, line, document) triples let validation errors point at the source line.
_Source = Callable[[], Iterator[tuple[str | None, int | None, Document]]]


class Corpus:
    """A re-iterable, validated stream of documents."""

    def __init__(self, source: _Source, name: str) -> None:
        self._source = source
        self.name = name
        self._ids: list[str] | None = None

    # ---- constructors -------------------------------------------------------------------------
    @classmethod
    def from_beir(cls, path: str | Path) -> Corpus:
        """BEIR corpus JSONL (``_id``, ``title``, ``text``), plain or gzip-compressed."""
        path = Path(path)
        if not path.is_file():
            raise DataError(path, None, "corpus file not found")

        def source() -> Iterator[tuple[str | None, int | None, Document]]:
            for line, obj in iter_jsonl(path):
                doc_id = require_str(obj, "_id", path, line)
                text = obj.get("text", "")
                title = obj.get("title", "") or ""
                if not isinstance(text, str) or not isinstance(title, str):
                    raise DataError(path, line, "fields 'title' and 'text' must be strings")
                yield str(path), line, Document(doc_id, text, title)

        return cls(source, str(path))

    @classmethod
    def from_tsv(cls, path: str | Path) -> Corpus:
        """MS MARCO collection TSV: ``id<TAB>text`` or ``id<TAB>title<TAB>text``."""
        path = Path(path)

        def source() -> Iterator[tuple[str | None, int | None, Document]]:
            for line, row in iter_lines(path):
                fields = row.split("\t")
                if len(fields) == 2:
                    yield str(path), line, Document(fields[0].strip(), fields[1])
                elif len(fields) == 3:
                    yield str(path), line, Document(fields[0].strip(), fields[2], fields[1])
                else:
                    raise DataError(path, line, f"expected 2 or 3 tab-separated fields, found {len(fields)}")

        return cls(source, str(path))

    @classmethod
    def from_file(cls, path: str | Path) -> Corpus:
        """Pick the reader by file name: ``.tsv`` is MS MARCO, anything else BEIR JSONL."""
        path = Path(path)
        return cls.from_tsv(path) if path.name.endswith((".tsv", ".tsv.gz")) else cls.from_beir(path)

    @classmethod
    def from_documents(cls, docs: Iterable[Document], name: str = "<memory>") -> Corpus:
        """A corpus over documents already in memory (tests, notebooks, small collections)."""
        docs = list(docs)

        def source() -> Iterator[tuple[str | None, int | None, Document]]:
            for i, doc in enumerate(docs):
                yield None, i + 1, doc

        return cls(source, name)

    # ---- access -------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Document]:
        if self._ids is not None:  # validated by an earlier full pass: stream without re-checking
            for _, _, doc in self._source():
                yield doc
            return
        seen: set[str] = set()
        ids: list[str] = []
        for path, line, doc in self._source():
            where = path or self.name
            if not doc.id:
                raise DataError(where, line, "empty document id")
            if doc.id in seen:
                raise DataError(where, line, f"duplicate document id '{doc.id}'")
            if not doc.text.strip() and not doc.title.strip():
                raise DataError(where, line, f"document '{doc.id}' has empty title and text")
            seen.add(doc.id)
            ids.append(doc.id)
            yield doc
        self._ids = ids

    def batches(self, size: int) -> Iterator[list[Document]]:
        """Consecutive lists of at most ``size`` documents."""
        batch: list[Document] = []
        for doc in self:
            batch.append(doc)
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch

    def part(self, index: int, count: int) -> Corpus:
        """The ``index``-th (from 0) of ``count`` contiguous parts, sizes differing by at most one: what one
        process of a sharded encoding encodes. Parts in order are the corpus in order, so indexes built
        on them and searched together rank ties as the whole corpus does. The whole corpus is validated
        first, so a bad line fails every process alike."""
        if not 0 <= index < count:
            raise InputError(f"part {index} of {count}: the part must be between 0 and {count - 1}")
        total = len(self)
        start, stop = total * index // count, total * (index + 1) // count
        parent = self

        def source() -> Iterator[tuple[str | None, int | None, Document]]:
            for position, item in enumerate(parent._source()):
                if position >= stop:
                    return
                if position >= start:
                    yield item

        return Corpus(source, f"{self.name} (part {index + 1} of {count})")

    def ids(self) -> list[str]:
        """All document ids in corpus order (one validating pass the first time)."""
        if self._ids is None:
            for _ in self:
                pass
        assert self._ids is not None
        return self._ids

    def __len__(self) -> int:
        return len(self.ids())

    def lookup(self, wanted: Iterable[str]) -> dict[str, Document]:
        """Fetch the documents with the given ids in one pass; unknown ids are simply absent."""
        wanted = set(wanted)
        found: dict[str, Document] = {}
        for doc in self:
            if doc.id in wanted:
                found[doc.id] = doc
        return found

    def write_beir(self, path: str | Path) -> None:
        """Write this corpus as BEIR JSONL (gzip if the name ends in ``.gz``)."""
        with atomic_write(path) as handle:
            for doc in self:
                handle.write(json.dumps({"_id": doc.id, "title": doc.title, "text": doc.text}, ensure_ascii=False))
                handle.write("\n")
