"""Convert a GGUF checkpoint once into a plain transformers folder, parsing the file once.

transformers reads a GGUF file's metadata anew for the tokenizer, for the config and for the
weights, and gguf's reader parses every metadata entry element by element: for Gemma 3's
262k-token vocabulary one parse takes about half a minute on a laptop CPU, so the three made up most
of a first use of ``gemma3-270m``. The conversion therefore hands transformers one shared, read-only
reader per file (``benchmarks/gguf_convert.py`` measures both ways and checks the weights equal).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmret.util.fileio import build_once

log = logging.getLogger(__name__)

LAZY_IMPORTS = "gguf (a third of a second) is imported only while a GGUF file converts"

_PATCH = threading.Lock()  # the shared reader is installed in the gguf module: one conversion at a time


def gguf_cache_key(path: Path) -> str:
    """A cache folder name for a GGUF file outside the zoo: its path, size and modification time."""
    stat = path.stat()
    return "gguf-" + hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]


@contextmanager
def one_parse_per_file() -> Iterator[None]:
    """While open, every ``gguf.GGUFReader(path)`` of one file returns the same parsed reader.

    transformers imports the class inside its loader at each call, so replacing the module attribute
    reaches every load; the reader is only read from (fields, tensors over a read-only memory map).
    """
    import gguf

    original = gguf.GGUFReader
    readers: dict[tuple[str, str], Any] = {}

    def shared(path: str | Path, mode: str = "r") -> Any:
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = original(path, mode)
        return readers[key]

    with _PATCH:
        gguf.GGUFReader = shared
        try:
            yield
        finally:
            gguf.GGUFReader = original


def convert_gguf(folder: Path, gguf_file: str, out: Path) -> Path:
    """Dequantise a GGUF checkpoint once into a plain transformers folder (seconds to load, not a minute).

    transformers marks GGUF-loaded models as quantised and refuses to save them, so the weights are
    moved into a model built from the same config without its quantisation entry.
    """
    if (out / "config.json").is_file():
        return out

    def convert(tmp: Path) -> None:
        log.info("converting %s to a transformers folder (once; later loads use %s)", gguf_file, out)
        with one_parse_per_file():
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
            loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
        config = loaded.config
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(loaded.state_dict())
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return build_once(out, convert, done="config.json")  # whole or not at all, by one process at a time
