"""Convert a GGUF checkpoint once into a plain transformers folder, parsing the file once.

transformers reads a GGUF file's metadata anew for the tokenizer, for the config and for the
weights, and gguf's reader parses every metadata entry element by element: for Gemma 3's
262k-token vocabulary one parse takes about 20 s on a laptop CPU, so the parses made up most of a
first use of ``gemma3-270m``. The conversion therefore reads the metadata arrays in bulk and hands
transformers one shared, read-only parse per file (``benchmarks/gguf_convert.py`` measures both ways
and checks the weights and token ids equal).
"""

from __future__ import annotations

import copy
import hashlib
import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmret.util.fileio import build_once

log = logging.getLogger(__name__)

LAZY_IMPORTS = "gguf (a third of a second) is imported only while a GGUF file converts"

_PATCH = threading.Lock()  # the shared parses go into the gguf and transformers modules: one conversion at a time


def gguf_cache_key(path: Path) -> str:
    """A cache folder name for a GGUF file outside the zoo: its path, size and modification time."""
    stat = path.stat()
    return "gguf-" + hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]


@cache
def _bulk_reader() -> type:
    """A ``gguf.GGUFReader`` that reads each metadata array in one pass over one in-memory copy.

    gguf's reader builds a memory-map view per array element (two per string), through the memmap's
    slow slicing: 262k tokens with their scores and types took about 20 s. This one walks the string
    lengths with plain integers, copies the array's bytes once and slices the copy; the fields it makes
    have the same parts, indices and types (tested against gguf's own reader). Written by hand because
    gguf offers no bulk read of metadata.
    """
    import gguf
    from gguf.gguf_reader import GGUFReader  # the class itself: one_parse_per_file replaces gguf's name

    string, array = gguf.GGUFValueType.STRING, gguf.GGUFValueType.ARRAY

    class BulkReader(GGUFReader):  # type: ignore[misc]
        def __init__(self, path: str | Path, mode: str = "r") -> None:
            self.path = Path(path)  # named in its errors
            super().__init__(path, mode)

        def _get_field_parts(self, orig_offs: int, raw_type: int) -> tuple[int, list[Any], list[int], list[Any]]:
            if raw_type != array:
                return super()._get_field_parts(orig_offs, raw_type)
            raw_itype = self._get(orig_offs, np.uint32)
            alen = self._get(orig_offs + 4, np.uint64)
            itype, count, offs = gguf.GGUFValueType(raw_itype[0]), int(alen[0]), orig_offs + 12
            if not count or (itype != string and itype not in self.gguf_scalar_to_np):
                return super()._get_field_parts(orig_offs, raw_type)  # empty or nested: gguf's own walk
            if itype == string:
                size, parts = self._strings(offs, count)
            else:
                values = np.array(self._get(offs, self.gguf_scalar_to_np[itype], count))  # one copy
                size, parts = values.nbytes, list(values.reshape(count, 1))
            # the values' parts follow the array's type and length; a string's are its length and its bytes
            values = range(3, 2 + len(parts), 2) if itype == string else range(2, 2 + len(parts))
            return 12 + size, [raw_itype, alen, *parts], list(values), [array, itype]

        def _strings(self, offs: int, count: int) -> tuple[int, list[Any]]:
            """The parts of ``count`` consecutive strings: (length, bytes) views into one copy."""
            order = sys.byteorder if self.byte_order == "I" else ("big" if sys.byteorder == "little" else "little")
            raw, starts, end = memoryview(self.data), [], offs
            for _ in range(count):
                starts.append(end)
                end += 8 + int.from_bytes(raw[end:end + 8], order)
            if end > len(self.data):
                raise ValueError(f"{self.path}: the GGUF string array at byte {offs} runs past the end of the file")
            block = np.array(self.data[offs:end])
            length = np.dtype(np.uint64).newbyteorder(self.byte_order)
            parts: list[Any] = []
            for start, stop in zip(starts, [*starts[1:], end]):
                begin = start - offs
                parts += (block[begin:begin + 8].view(length), block[begin + 8:stop - offs])
            return end - offs, parts

    return BulkReader


@contextmanager
def one_parse_per_file() -> Iterator[None]:
    """While open, a GGUF file's metadata is parsed once however many times transformers asks.

    Three things are shared, each read-only to its callers: the ``gguf.GGUFReader`` of a file (a
    ``_bulk_reader``), transformers' metadata-only ``load_gguf_checkpoint`` result (the tokenizer and
    the config each ask for it; every caller gets its own deep copy), and gguf's tensor-name map, which
    transformers rebuilds for each of a model's ~300 modules. transformers and gguf import these names
    inside their functions at each call, so replacing the module attributes reaches every load.
    """
    import gguf
    from transformers import modeling_gguf_pytorch_utils as loader

    originals = gguf.GGUFReader, gguf.get_tensor_name_map, loader.load_gguf_checkpoint
    readers: dict[tuple[str, str], Any] = {}
    metadata: dict[str, dict[str, Any]] = {}

    def shared_reader(path: str | Path, mode: str = "r") -> Any:
        key = (str(Path(path).resolve()), mode)
        if key not in readers:
            readers[key] = _bulk_reader()(path, mode)
        return readers[key]

    def shared_metadata(path: str | Path, return_tensors: bool = False, **kwargs: Any) -> dict[str, Any]:
        if return_tensors or kwargs:
            return originals[2](path, return_tensors=return_tensors, **kwargs)
        key = str(Path(path).resolve())
        if key not in metadata:
            metadata[key] = originals[2](path, return_tensors=False)
        return copy.deepcopy(metadata[key])

    with _PATCH:
        gguf.GGUFReader, loader.load_gguf_checkpoint = shared_reader, shared_metadata
        gguf.get_tensor_name_map = cache(originals[1])
        try:
            yield
        finally:
            gguf.GGUFReader, gguf.get_tensor_name_map, loader.load_gguf_checkpoint = originals


def convert_gguf(folder: Path, gguf_file: str, out: Path) -> Path:
    """Dequantise a GGUF checkpoint once into a plain transformers folder (seconds to load, not a minute).

    transformers marks GGUF-loaded models as quantised and refuses to save them, so the weights are
    moved into a model built from the same config without its quantisation entry; that model is built
    on the meta device, since random weights there would only be overwritten (seconds for Gemma 3).
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
        with torch.device("meta"):
            plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(loaded.state_dict(), assign=True)
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return build_once(out, convert, done="config.json")  # whole or not at all, by one process at a time
