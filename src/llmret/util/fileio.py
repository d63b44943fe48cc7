"""Atomic writes and tolerant-but-strict line reading shared by every data format.

Why atomic: a killed run must never leave a half-written run file, shard or manifest that a later
step would read as complete. Everything is written to a temporary sibling and renamed into place,
with the permissions the user's umask gives a new file (the temporary file's own are owner-only), and a
failed write names the file it was for, not the temporary sibling.
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from llmret.util.errors import DataError, InputError


@functools.cache
def umask() -> int:
    """The process's umask (read once: reading it means setting it, briefly)."""
    current = os.umask(0o022)
    os.umask(current)
    return current


def _failed_write(exc: OSError, path: Path) -> OSError:
    """``exc`` naming ``path`` (a full disk's error names no file; mkstemp's names the temporary one)."""
    return OSError(exc.errno, exc.strerror or str(exc), str(path))


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` and move it over ``path`` only if the block succeeds.

    A ``.gz`` suffix compresses transparently (with a fixed mtime, so equal content gives equal bytes).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _failed_write(exc, path) from exc
    try:
        os.fchmod(fd, 0o666 & ~umask())
        with os.fdopen(fd, "wb") as raw:
            stream: IO[bytes] = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) if path.suffix == ".gz" else raw
            if "b" in mode:
                yield stream
            else:
                text = io.TextIOWrapper(stream, encoding=encoding, newline="\n")
                yield text
                text.flush()
                text.detach()
            if stream is not raw:
                stream.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename not in (None, tmp):  # the block's own error about another file
            raise
        raise _failed_write(exc, path) from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder next to ``path`` that replaces ``path`` only if the block succeeds.

    An existing ``path`` is moved aside first and removed after the swap, so at every moment there is
    either the old complete folder or the new one, never a half-written one.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        tmp.chmod(0o777 & ~umask())
    except OSError as exc:
        raise _failed_write(exc, path) from exc
    try:
        yield tmp
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            path.replace(old)
        tmp.replace(path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block; other processes wait.

    Why: cached builds (the built-in dataset, a converted GGUF, an unpacked zoo model, a zoo package's
    install) are shared by every process on the machine, and two started at once must not both build
    into one place. The operating system drops the lock if the holder dies, so it never goes stale.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        if os.name == "nt":  # pragma: no cover - Windows has no fcntl
            import msvcrt

            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield  # closing the file releases the lock


@contextmanager
def held_alone(path: str | Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` for the block, or refuse at once (an InputError naming ``what``)
    when another process holds it: for work that a second copy would only do twice (a study's run)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        import fcntl

        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"{what} is already running (lock {path}): wait for it or stop it first") from None
        yield


def build_once(path: str | Path, build: Callable[[Path], None], done: str | None = None) -> Path:
    """``path``, built by ``build(tmp)`` into a temporary folder swapped in whole, once: a process that
    finds another building it waits for that build instead of starting its own. ``done`` names the file
    whose presence marks a finished build (default: any content in the folder)."""
    path = Path(path)

    def finished() -> bool:
        return (path / done).is_file() if done else path.is_dir() and any(path.iterdir())

    if finished():
        return path
    with file_lock(path.with_name(f".{path.name}.lock")):
        if not finished():  # built by another process while this one waited
            with atomic_dir(path) as tmp:
                build(tmp)
    return path


def write_ids(path: str | Path, ids: list[str]) -> None:
    """An id list, one per line, written atomically (the companion of every vector file)."""
    with atomic_write(path) as handle:
        handle.write("".join(f"{i}\n" for i in ids))


def read_ids(path: str | Path) -> list[str]:
    """The id list written by :func:`write_ids`."""
    if not Path(path).is_file():
        raise DataError(path, None, "id list not found")
    return Path(path).read_text(encoding="utf-8").split("\n")[:-1]


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically, indented for people to read."""
    with atomic_write(path) as handle:
        json.dump(obj, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON document, turning a parse failure into a DataError that names the line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, "file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(path, exc.lineno, f"invalid JSON: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise DataError(path, None, f"not valid UTF-8 ({exc.reason} at byte {exc.start})") from None


def open_text(path: str | Path) -> IO[bytes]:
    """Open a plain or gzip-compressed file for binary line reading (decoding happens per line)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, "file not found")
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _lines(handle: IO[bytes], path: str | Path) -> Iterator[tuple[int, bytes]]:
    """Numbered raw lines; a gzip file cut short or corrupt is a DataError naming the line it broke at."""
    number = 0
    try:
        for number, raw in enumerate(handle, start=1):
            yield number, raw
    except (EOFError, OSError, zlib.error) as exc:  # gzip: EOFError when cut short, BadGzipFile / zlib.error when corrupt
        raise DataError(path, number + 1, f"the compressed file is cut short or corrupt ({exc})") from None


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for the non-blank lines of a file, streaming.

    Decoding line by line (rather than the whole file) lets an 8.8M-line corpus stream, and lets a bad
    byte sequence be reported with its line number instead of a bare codec error.
    """
    with open_text(path) as handle:
        for number, raw in _lines(handle, path):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(path, number, f"not valid UTF-8 ({exc.reason} at column {exc.start + 1})") from None
            line = line.rstrip("\r\n")
            if number == 1 and line.startswith("\ufeff"):
                line = line[1:]
            if line.strip():
                yield number, line


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each JSON object line of a JSONL file."""
    for number, line in iter_lines(path):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(path, number, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(path, number, f"expected a JSON object, found {type(obj).__name__}")
        yield number, obj


def require_str(obj: dict[str, Any], key: str, path: str | Path, line: int, *, allow_empty: bool = False) -> str:
    """Fetch a string field, raising a DataError that says which field is missing or wrong."""
    if key not in obj:
        raise DataError(path, line, f"missing field '{key}'")
    value = obj[key]
    if isinstance(value, (int, float)) and not isinstance(value, bool) and key.endswith("id"):
        value = str(value)  # numeric ids are common in the wild (BEIR's own files use strings)
    if not isinstance(value, str):
        raise DataError(path, line, f"field '{key}' must be a string, found {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise DataError(path, line, f"field '{key}' is empty")
    return value


def check_output(path: str | Path, *, folder: bool = True, min_free: int = 1 << 20) -> Path:
    """Refuse, before any work, an output location that cannot be written: a file where a folder is
    wanted (or the reverse), a parent that is a file, no write permission, or a full disk (less than
    ``min_free`` bytes free). A disk that fills during the work is still said in one line naming the
    file (:func:`atomic_write`)."""
    path = Path(path)
    want = "folder" if folder else "file"
    if path.exists() and path.is_dir() != folder:
        raise InputError(f"{path}: the output {want} is a {'file' if folder else 'folder'}")
    existing = path if path.exists() else path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{path}: cannot create the output {want}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{path}: cannot write the output {want}: {existing} is not writable")
    if shutil.disk_usage(existing).free < min_free:
        raise InputError(f"{path}: cannot write the output {want}: no space left on the device of {existing}")
    return path
