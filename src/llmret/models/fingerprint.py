"""A fingerprint of a model's weights, so that vectors made by other weights are never reused.

Embedding folders and runs record it in their signature: retrain into the same folder and the
fingerprint changes, so stale corpus vectors are re-encoded instead of meeting new query vectors.
Each weight file is hashed by content (sha256); the digest is cached under the file's path, size and
modification time, so a model is read in full once, not at every load.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from llmret.util.cache import cache_dir
from llmret.util.fileio import atomic_write

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".msgpack", ".h5")
_CHUNK = 1 << 24


def _file_digest(path: Path, memo: dict[str, str]) -> str:
    stat = path.stat()
    key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    if key not in memo:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while block := handle.read(_CHUNK):
                digest.update(block)
        memo[key] = digest.hexdigest()
    return memo[key]


def files_fingerprint(root: Path, files: list[Path]) -> str:
    """sha256 over the names (relative to ``root``) and content digests of ``files``."""
    memo_file = cache_dir("fingerprints") / "digests.json"
    try:
        memo: dict[str, str] = json.loads(memo_file.read_text()) if memo_file.is_file() else {}
    except (OSError, json.JSONDecodeError):
        memo = {}  # a damaged cache only costs a re-hash
    size = len(memo)
    combined = hashlib.sha256()
    for path in sorted(files):
        combined.update(f"{path.relative_to(root)}\0{_file_digest(path, memo)}\n".encode())
    if len(memo) != size:
        with atomic_write(memo_file) as handle:
            json.dump(memo, handle)
    return combined.hexdigest()[:20]


def folder_fingerprint(folder: Path) -> str:
    """sha256 over the names and content digests of every weight file under ``folder``."""
    return files_fingerprint(folder, [p for p in folder.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES
                                      and not any(part.startswith(".") for part in p.relative_to(folder).parts)])


def combine(*parts: str) -> str:
    """One fingerprint from several (an adapter over its base model)."""
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]
