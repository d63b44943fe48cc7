"""FAISS on GPU when present: searches on a GPU copy give the CPU index's results; without a GPU build of FAISS
(or with LLMRET_FAISS_GPU=0) everything stays on the CPU; search parameters reach the copy searched."""

from __future__ import annotations

import numpy as np
import pytest

from llmret.index.dense import DenseIndex, faiss_gpus


def _data(n: int = 2000, dim: int = 32) -> tuple[list[str], np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    return [f"d{i}" for i in range(n)], vectors, rng.normal(size=(20, dim)).astype(np.float32)


def test_search_parameters_reach_the_index_searched(monkeypatch: pytest.MonkeyPatch) -> None:
    ids, vectors, queries = _data()
    exact = DenseIndex(32)
    exact.add(ids, vectors)
    truth = exact.search(queries, 10)[1]
    ivf = DenseIndex(32, "IVF16,Flat")
    ivf.add(ids, vectors)
    ivf.set_parameter("nprobe", 1)
    narrow = ivf.search(queries, 10)[1]
    ivf.set_parameter("nprobe", 16)  # every list: exact
    assert ivf.search(queries, 10)[1] == truth and narrow != truth
    monkeypatch.setenv("LLMRET_FAISS_GPU", "0")
    assert faiss_gpus() == 0


@pytest.mark.skipif(faiss_gpus() == 0, reason="needs a GPU build of FAISS (faiss-gpu-cu12) and a GPU")
def test_gpu_search_gives_the_cpu_results(monkeypatch: pytest.MonkeyPatch) -> None:
    ids, vectors, queries = _data()
    for factory in ("Flat", "HNSW32"):  # HNSW cannot move to a GPU: it stays on the CPU
        index = DenseIndex(32, factory)
        index.add(ids, vectors)
        scores, found = index.search(queries, 10)
        assert (index._gpu is False) == (factory == "HNSW32")
        monkeypatch.setenv("LLMRET_FAISS_GPU", "0")
        cpu = DenseIndex(32, factory)
        cpu.add(ids, vectors)
        cpu_scores, cpu_found = cpu.search(queries, 10)
        monkeypatch.delenv("LLMRET_FAISS_GPU")
        assert found == cpu_found
        np.testing.assert_allclose(scores, cpu_scores, rtol=1e-4, atol=1e-4)
