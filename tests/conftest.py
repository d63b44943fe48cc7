import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # for tests/helpers.py
# ranx compiles its numba kernels on first use; by default numba caches them inside the package, so a
# fresh virtual environment compiles again (~40 s). A cache beside llmret's own survives a reinstall.
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test reaches a model hub: an unknown name fails at once
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path.home() / ".cache" / "llmret" / "numba"))
if os.environ.get("PYTEST_XDIST_WORKER"):
    # One thread per worker (before torch is imported): two workers each spinning two OpenMP threads on
    # two cores wait on each other; one apiece keeps both cores busy with real work.
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tier first (stable within each tier): its long tests start at once on both workers and the
    short ones fill in around them, instead of one long test running alone at the end."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("slow") else 1)

import yaml  # noqa: E402

from helpers import make_tiny_model, random_texts, write_beir_folder, write_training_file  # noqa: E402


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-bert"), "bert")


@pytest.fixture
def study_file(  # a small study: BM25, a zero-shot model, a model trained at two step counts
        tiny_llama: Path, tiny_bert: Path, tmp_path: Path) -> Path:
    docs = {f"d{i}": text for i, text in enumerate(random_texts(24, seed=21, min_words=5))}
    queries = {f"q{i}": " ".join(docs[f"d{i}"].split()[:3]) for i in range(12)}
    data = write_beir_folder(tmp_path / "data", docs, queries, {f"q{i}": {f"d{i}": 1} for i in range(12)})
    train = write_training_file(tmp_path / "train.jsonl", 16, (1, 5))
    spec = {
        "name": "tiny", "out": str(tmp_path / "study"), "baseline": "bm25",
        "datasets": [{"data": str(data), "split": "test"}], "measures": ["nDCG@10", "RR@10"],
        "systems": [
            {"name": "bm25", "retriever": "bm25"},
            {"name": "bert", "retriever": "dense", "encoder": {"model": str(tiny_bert)}},
            {"name": "llama", "retriever": "dense",
             "encoder": {"model": str(tiny_llama), "query_max_length": 12, "passage_max_length": 20},
             "train": {"train_data": str(train), "batch_size": 4, "group_size": 2, "lora_r": 4, "learning_rate": 1e-3}},
        ],
        "grid": {"train.max_steps": [1, 2]},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path
