"""The example scripts run as a user runs them (``python examples/NAME.py ARGS``), here over tiny
random-initialised models so that they take seconds; the Python API they use is checked against the
library calls it stands for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run_example(name: str, *args: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=cwd, capture_output=True, text=True,
                          check=False, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


def import_example(name: str) -> Any:
    """An example script as a module, to check its output against what it names."""
    import importlib

    sys.path.insert(0, str(EXAMPLES))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(EXAMPLES))


def test_every_example_is_tested() -> None:
    tested = {"search_texts.py", "compare_on_a_benchmark.py", "train_then_evaluate.py", "vector_stores.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_search_texts_ranks_each_query_and_matches_the_encoder(tiny_bert: Path, tmp_path: Path) -> None:
    import numpy as np

    import llmret

    out = run_example("search_texts.py", str(tiny_bert), cwd=tmp_path)
    assert out.count("\n") == 2 and "which method weighs words" in out
    # the scores printed are the encoder's inner products (a random model: order is arbitrary, values are not)
    search_texts = import_example("search_texts")
    encoder = llmret.load_encoder(str(tiny_bert))
    docs = encoder.encode(list(search_texts.TEXTS.values()), query=False)
    query = encoder.encode([search_texts.QUERIES["q1"]], query=True)
    best = float(np.max(query @ docs.T))
    assert f"{best:.3f}" in out.splitlines()[0]


def test_compare_on_a_benchmark_prints_the_metrics_files(tiny_bert: Path, tmp_path: Path) -> None:
    from helpers import write_beir_folder

    docs = {f"d{i}": f"document {i} about topic {i % 3}" for i in range(12)}
    queries = {f"q{i}": f"topic {i}" for i in range(3)}
    data = write_beir_folder(tmp_path / "data", docs, queries, {f"q{i}": {f"d{i}": 1} for i in range(3)})
    out = run_example("compare_on_a_benchmark.py", str(data), str(tiny_bert), str(tmp_path / "out"), cwd=tmp_path)
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    assert lines[1].startswith("| bm25 |") and lines[2].startswith(f"| {tiny_bert} |")
    for line, folder in zip(lines[1:], ("bm25", "dense")):
        metrics = json.loads((tmp_path / "out" / folder / "metrics.json").read_text())
        measures = lines[0].strip("| ").split(" | ")[1:]
        values = [float(v) for v in line.strip("| ").split(" | ")[1:]]
        assert values == pytest.approx([round(metrics["aggregate"][m], 4) for m in measures], abs=1e-4)


@pytest.mark.slow
def test_train_then_evaluate_saves_a_model_that_loads(tiny_llama: Path, tmp_path: Path) -> None:
    out = run_example("train_then_evaluate.py", str(tiny_llama), "builtin:code", "1", str(tmp_path / "run"),
                      cwd=tmp_path)
    final = tmp_path / "run" / "train" / "final"
    assert (final / "llmret.json").is_file() and str(final) in out
    saved = json.loads((final / "llmret.json").read_text())
    assert saved["base_model"] == str(tiny_llama) and saved["lora"] is True
    assert (tmp_path / "run" / "eval" / "metrics.json").is_file()


def test_keyword_settings_are_checked(tiny_bert: Path) -> None:
    import llmret
    from llmret.util.errors import InputError

    with pytest.raises(InputError, match="passage_max_lenght"):
        llmret.load_encoder(str(tiny_bert), passage_max_lenght=12)
    with pytest.raises(InputError, match="needs a model"):
        llmret.retriever("dense")


def test_an_index_built_on_disk_searches_as_brute_force_over_the_encoders_vectors(tiny_bert: Path,
                                                                                  tmp_path: Path) -> None:
    import numpy as np

    import llmret

    from helpers import random_texts, write_beir_folder

    docs = {f"d{i}": text for i, text in enumerate(random_texts(40, seed=3, min_words=5))}
    data = write_beir_folder(tmp_path / "data", docs, {"q0": "x"}, {"q0": {"d0": 1}})
    folder = llmret.build_index(str(tiny_bert), data, tmp_path / "built", passage_max_length=24)
    queries = {"a": docs["d3"], "b": "some other words"}
    run = llmret.open_index(folder).search(queries, k=5)
    encoder = llmret.load_encoder(str(tiny_bert), passage_max_length=24)
    passages = np.asarray(encoder.encode(list(docs.values()), query=False), dtype=np.float64)
    for qid, text in queries.items():
        scores = passages @ np.asarray(encoder.encode([text], query=True), dtype=np.float64)[0]
        by_id = dict(zip(docs, scores))
        # each hit scored as by hand, and the five best by hand (a random model's near-ties may swap order)
        assert [run[qid][d] for d in run[qid]] == pytest.approx([by_id[d] for d in run[qid]], abs=1e-4)
        assert sorted(run[qid].values(), reverse=True) == pytest.approx(sorted(scores)[::-1][:5], abs=1e-4)


def test_vector_stores_rank_by_the_served_models_cosine(tiny_bert: Path, tmp_path: Path) -> None:
    """LangChain's and LlamaIndex's stock OpenAI-compatible embedding classes through `llmret serve`: each
    store's ranking is the cosine of llmret's own passage and query vectors (a random model: the order is
    arbitrary, the values are not)."""
    import numpy as np

    import llmret

    out = run_example("vector_stores.py", str(tiny_bert), cwd=tmp_path)
    example = import_example("vector_stores")
    encoder = llmret.load_encoder(str(tiny_bert))
    docs = encoder.encode(list(example.TEXTS.values()), query=False)
    docs = docs / np.linalg.norm(docs, axis=1, keepdims=True)
    lines = out.splitlines()
    assert len(lines) == 2 * len(example.QUERIES)
    for line, (library, query) in zip(lines, [(lib, q) for lib in ("langchain", "llamaindex") for q in example.QUERIES]):
        vector = encoder.encode([query], query=True)[0]
        cosine = docs @ (vector / np.linalg.norm(vector))
        by_id = dict(zip(example.TEXTS, cosine))
        printed = [hit.rsplit(" ", 1) for hit in line.removeprefix(f"{library} {query!r}: ").split(", ")]
        assert len(printed) == 2 and all(abs(float(score) - by_id[doc]) < 1e-3 for doc, score in printed)
        assert min(by_id[doc] for doc, _ in printed) >= np.sort(cosine)[-2] - 1e-6  # the top two (up to ties)
