"""The held-out contrastive loss the scaling fits use, against InfoNCE written out by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llmret.data.dataset import load_dataset
from llmret.data.sampling import sample_group
from llmret.data.training import resolve_passages
from llmret.encoders.dense import DenseEncoder
from llmret.encoders.settings import EncoderSettings
from llmret.studies.heldout import heldout_loss
from llmret.training.mining import mine_bm25_negatives
from llmret.training.train import TrainSettings, train

from helpers import random_texts, write_beir_folder, write_training_file


def test_heldout_loss_is_infonce_over_batches_of_unseen_queries(tiny_llama: Path, tmp_path: Path) -> None:
    docs = {f"d{i}": text for i, text in enumerate(random_texts(30, seed=4, min_words=6))}
    queries = {f"q{i}": " ".join(docs[f"d{i}"].split()[:3]) for i in range(10)}
    data = write_beir_folder(tmp_path / "data", docs, queries, {f"q{i}": {f"d{i}": 1} for i in range(10)}, split="dev")
    model = train(TrainSettings(train_data=str(write_training_file(tmp_path / "train.jsonl", 16, (1, 5))),
                                output_dir=str(tmp_path / "run"), batch_size=4, group_size=2, max_steps=1, lora_r=4,
                                encoder=EncoderSettings(model=str(tiny_llama), query_max_length=12,
                                                        passage_max_length=20)))
    scoring = TrainSettings(batch_size=4, group_size=3, temperature=0.05)  # not the run's own: what is asked counts
    result = heldout_loss(model, str(data), "dev", scoring)
    assert result["queries"] == 8 and result["batch_size"] == 4  # two full batches of the ten queries
    # by hand: the model's vectors through the search-time encode path, then -log softmax of each positive
    # among the batch's passages (its own group first, every other query's group as in-batch negatives)
    dataset = load_dataset(data, "dev")
    examples = resolve_passages(mine_bm25_negatives(dataset), dataset.corpus)
    encoder = DenseEncoder.load(EncoderSettings(model=str(model)))
    losses = []
    for batch in (range(0, 4), range(4, 8)):
        groups = [sample_group(examples, i, 0, 42, 3) for i in batch]
        q = np.asarray(encoder.encode([examples[i].query for i in batch], query=True), dtype=np.float64)
        p = np.asarray(encoder.encode([x.full_text() for g in groups for x in g], query=False), dtype=np.float64)
        scores = q @ p.T / 0.05
        for row in range(4):
            top = scores[row].max()
            losses.append(top + np.log(np.exp(scores[row] - top).sum()) - scores[row, row * 3])
    assert result["loss"] == pytest.approx(float(np.mean(losses)), rel=1e-4)
    with pytest.raises(ValueError, match="fewer than one batch of 16"):
        heldout_loss(model, str(data), "dev", TrainSettings(batch_size=16, group_size=2, temperature=0.05))
