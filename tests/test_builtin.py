"""The built-in dataset: deterministic, split by package without leaks, with valid hard negatives."""

import json
from pathlib import Path

import pytest

from llmret.data import builtin, load_dataset
from llmret.data.training import example_json, resolve_passages
from llmret.training.mining import mine_bm25_negatives, mined_examples


@pytest.fixture(scope="module")
def built() -> tuple[Path, dict]:
    """The dataset as every other test and user gets it: built once into llmret's cache (the determinism
    test builds a second copy to compare)."""
    return builtin.builtin_root(), builtin.manifest()


def test_manifest_counts_match_files(built: tuple[Path, dict]) -> None:
    root, manifest = built
    assert set(manifest["counts"]) == {"code", "docs", "long"}
    for task, splits in manifest["counts"].items():
        for split, counts in splits.items():
            data = load_dataset(root / task / split, split)
            assert len(data.queries) == counts["queries"] > 0
            assert len(data.corpus) == counts["documents"]
            assert json.loads((root / task / split / "task.json").read_text())["instruction"] == builtin.INSTRUCTIONS[task]
    assert manifest["counts"]["code"]["test"]["queries"] >= 100


@pytest.mark.slow  # builds the dataset a second time
def test_build_is_deterministic(built: tuple[Path, dict], tmp_path: Path) -> None:
    _, manifest = built
    assert builtin.build(tmp_path)["sha256"] == manifest["sha256"]


def test_splits_do_not_share_packages(built: tuple[Path, dict]) -> None:
    root, _ = built
    for task in builtin.TASKS:
        packages = {}
        for split in builtin.SPLITS:
            ids = [json.loads(line)["_id"] for line in (root / task / split / "corpus.jsonl").open()]
            packages[split] = {i.split(".")[0] for i in ids}
            assert all(builtin.split_of(i) == split for i in ids)
        assert not packages["train"] & packages["test"] and not packages["dev"] & packages["test"]


def test_long_documents_are_long(built: tuple[Path, dict]) -> None:
    root, _ = built
    lengths = [len(json.loads(line)["text"]) for line in (root / "long" / "test" / "corpus.jsonl").open()]
    assert min(lengths) >= 6000 and sorted(lengths)[len(lengths) // 2] > 12000


def test_hard_negatives(built: tuple[Path, dict]) -> None:
    """Training on a built-in split mines BM25 negatives (as for any BEIR folder) once: the cached file
    gives the examples mining gives."""
    root, _ = built
    data = load_dataset(root / "code" / "train", "train")
    examples = mined_examples(root / "code" / "train")
    assert [example_json(e) for e in examples] == [example_json(e) for e in mined_examples(root / "code" / "train")]
    fresh = resolve_passages(mine_bm25_negatives(data), data.corpus)
    assert [example_json(e) for e in examples] == [example_json(e) for e in fresh]
    assert len(examples) == len(data.queries)
    with_negatives = [ex for ex in examples if ex.negatives]
    assert len(with_negatives) > 0.9 * len(examples)
    for ex in examples:
        positives = {p.docid for p in ex.positives}
        assert positives == set(data.qrels[ex.query_id])
        assert not positives & {n.docid for n in ex.negatives}
        assert ex.positives[0].text  # resolved from the corpus


def test_summary_rules() -> None:
    assert builtin._summary("Return the sum of two numbers. Extra detail.") == "Return the sum of two numbers."
    assert builtin._summary("Too short.") is None
    assert builtin._summary("Spans\n   two lines of the first paragraph here.\n\nMore.") == \
        "Spans two lines of the first paragraph here."
