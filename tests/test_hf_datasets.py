"""Training data from Hugging Face datasets written by `save_to_disk`: sentence-transformers' columns and
Tevatron's read into the same examples as llmret's own JSONL, a DatasetDict's train split, and a run that
trains from one; a dataset that fits neither convention names itself and the row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmret.data.hf_datasets import read_dataset
from llmret.data.training import read_training
from llmret.encoders.settings import EncoderSettings
from llmret.training.train import TrainSettings, train
from llmret.util.errors import DataError

from helpers import write_training_file


def test_tevatron_rows_read_as_the_same_jsonl_lines(tmp_path: Path) -> None:
    import datasets

    jsonl = write_training_file(tmp_path / "train.jsonl", 12, (1, 5))
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "tevatron"))
    from_dataset, from_file = read_dataset(str(tmp_path / "tevatron")), read_training(jsonl)
    assert [(e.query_id, e.query, e.positives, e.negatives) for e in from_dataset] == \
           [(e.query_id, e.query, e.positives, e.negatives) for e in from_file]


def test_sentence_transformers_columns_and_a_dataset_dicts_train_split(tmp_path: Path) -> None:
    import datasets

    triplets = {"anchor": ["how to read a file", "sort a list"],
                "positive": ["open() returns a file object", "sorted() returns a new list"],
                "negative": ["sorted() returns a new list", "open() returns a file object"]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(triplets),
                          "dev": datasets.Dataset.from_dict(triplets)}).save_to_disk(str(tmp_path / "st"))
    examples = read_dataset(str(tmp_path / "st"))
    assert [e.query for e in examples] == triplets["anchor"]
    assert [[p.text for p in e.positives] for e in examples] == [[t] for t in triplets["positive"]]
    assert [[p.text for p in e.negatives] for e in examples] == [[t] for t in triplets["negative"]]
    # a passage met twice is one passage: its id is its text's
    assert examples[0].positives[0].docid == examples[1].negatives[0].docid
    datasets.Dataset.from_dict({"anchor": ["q"], "score": [1.0]}).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(DataError, match="neither Tevatron's .* nor sentence-transformers'"):
        read_dataset(str(tmp_path / "bad"))
    datasets.Dataset.from_dict({"anchor": ["q", "r"], "positive": ["p", " "]}).save_to_disk(str(tmp_path / "empty"))
    with pytest.raises(DataError, match=r"empty:2: an empty or missing text"):
        read_dataset(str(tmp_path / "empty"))


def test_a_run_trains_from_a_dataset_folder(tiny_bert: Path, tmp_path: Path) -> None:
    import datasets

    jsonl = write_training_file(tmp_path / "train.jsonl", 16, (1, 5))
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    triplets = {"query": [r["query"] for r in rows],
                "positive": [r["positive_passages"][0]["text"] for r in rows],
                "negative": [r["negative_passages"][0]["text"] for r in rows]}
    datasets.Dataset.from_dict(triplets).save_to_disk(str(tmp_path / "triplets"))
    final = train(TrainSettings(train_data=str(tmp_path / "triplets"), output_dir=str(tmp_path / "run"), batch_size=4,
                                group_size=2, max_steps=2, lora_r=4, logging_steps=1,
                                encoder=EncoderSettings(model=str(tiny_bert), passage_max_length=24)))
    assert (final / "llmret.json").is_file()
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 2
