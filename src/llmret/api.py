"""The Python API, as ``llmret.NAME``: load an encoder, build a retriever in memory or an index on disk
and open it to search, evaluate, train, run a study. Each takes plain values (a model name, a data name, settings as keywords) and
hands over to the library module that does the work, so a script reads like the command line does.

Settings are given as keywords named as the commands' flags are (``passage_max_length=256``,
``max_steps=100``), checked against their declarations: a misspelt one is an error, never ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmret.encoders.settings import EncoderSettings
from llmret.util.errors import InputError
from llmret.util.settings import from_dict

LAZY_IMPORTS = "``import llmret`` loads no torch: each call imports the stage it runs"

if TYPE_CHECKING:
    from llmret.encoders.base import TextEncoder
    from llmret.evaluation.pipeline import EvalResult
    from llmret.retrievers.base import Retriever
    from llmret.retrievers.searcher import Searcher


def encoder_settings(model: str | None, settings: dict[str, Any]) -> EncoderSettings:
    """Encoder settings from a model name and keyword settings (unknown names are an error)."""
    return from_dict(EncoderSettings, {**settings, **({"model": model} if model else {})}, "keyword settings")


def load_encoder(model: str, retriever: str = "dense", *, device: str | None = None, **settings: Any) -> TextEncoder:
    """An encoder over ``model`` (a zoo name, a folder, a .gguf file or a hub id) making ``retriever``
    (dense or sparse) vectors: ``encoder.encode(texts, query=True)``."""
    from llmret.encoders.registry import load_encoder as load

    return load(retriever, encoder_settings(model, settings), device=device)


def retriever(kind: str = "dense", model: str | None = None, *, index: str | None = None,
              work_dir: str | Path | None = None, **settings: Any) -> Retriever:
    """A retriever: ``bm25``, or ``dense`` / ``sparse`` over ``model``; ``index`` a FAISS factory string
    (dense) or exact / seismic (sparse). ``r.index(corpus)`` then ``r.search(queries, k)``."""
    from llmret.retrievers.factory import make_retriever

    if kind != "bm25" and model is None:
        raise InputError(f"a {kind} retriever needs a model")
    return make_retriever(kind, encoder_settings(model, settings) if kind != "bm25" else None, index=index,
                          work_dir=work_dir)


def build_index(model: str, corpus: str | Path, out: str | Path, retriever: str = "dense", *,
                index: str | None = None, **settings: Any) -> Path:
    """Encode ``corpus`` (a BEIR folder, a corpus JSONL / TSV file, or ``builtin:TASK``) with ``model`` into
    embedding shards (``out/embeddings``, resumable) and index them (``out/index``: a FAISS factory string
    or exact / seismic as ``index``); returns the index folder, which :func:`open_index` opens."""
    from llmret.data.spec import load_corpus
    from llmret.encoders.registry import load_encoder as load
    from llmret.index.saved import build_and_save
    from llmret.index.shards import encode_corpus

    encoder = load(retriever, encoder_settings(model, settings))
    shards = Path(out) / "embeddings"
    encode_corpus(encoder, load_corpus(str(corpus)), shards, signature=encoder.signature())
    build_and_save([shards], Path(out) / "index", index)
    return Path(out) / "index"


def open_index(folders: str | Path | list[str | Path], *, device: str | None = None) -> Searcher:
    """A saved index (or the parts of one corpus) with the encoder it was built with:
    ``searcher.search({"q1": "text"}, k=10)`` gives a run (query id -> {document id: score})."""
    from llmret.retrievers.searcher import Searcher

    return Searcher.open(folders, device=device)


def evaluate(kind: str, data: str, split: str = "test", *, model: str | None = None, out: str | Path | None = None,
             measures: list[str] | None = None, index: str | None = None, **settings: Any) -> EvalResult:
    """Evaluate a retriever (as :func:`retriever` takes it) on ``data`` (``builtin:TASK``, a BEIR folder,
    ``irds:ID``) under that data's rules, as ``llmret evaluate`` does; ``result.evaluation.aggregate``
    holds the measures, and the run, metrics and per-query scores are written to ``out``."""
    from llmret.evaluation.pipeline import evaluate_on

    encoder = encoder_settings(model, settings) if kind != "bm25" else None
    result, _, _ = evaluate_on(kind, data, split, settings=encoder, measures=measures, out=out, index=index)
    return result


def train(model: str, train_data: str | list[str] = "builtin:code", *, output_dir: str = "runs/train",
          retriever: str = "dense", recipe: str | None = None, resume: bool = False,
          encoder: dict[str, Any] | None = None, **settings: Any) -> Path:
    """Fine-tune ``model`` into a ``retriever`` on ``train_data`` (defaults: Luo et al. 2024's LoRA and
    InfoNCE; ``recipe``: a published system's settings under yours) and return the final model's folder,
    which :func:`load_encoder` and :func:`evaluate` take. ``encoder``: encoder settings (lengths, pooling)."""
    from llmret.training.settings import TrainSettings
    from llmret.training.train import train as run

    values = {**settings, "train_data": train_data, "output_dir": output_dir, "retriever": retriever,
              "encoder": {**(encoder or {}), "model": model}, **({"recipe": recipe} if recipe else {})}
    return run(TrainSettings.from_layers([("keyword settings", values)], "keyword settings"), resume=resume)


def run_study(target: str | Path, *, out: str | None = None, executor: str = "local") -> Path:
    """Run a study file, a suite folder or a preset (``demo``, ``mini-dense``, ``paper-dense``...) to the
    end, skipping finished cells, and return its report's path (``out``: the results folder)."""
    from llmret.studies import presets
    from llmret.studies.runner import run_suite

    suite = presets.load(str(target), out)
    run_suite(suite, executor=executor)
    return presets.report(suite)
