"""InfoNCE by hand, training that resumes exactly, and exports that load back."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from llmret.data.training import Passage, TrainExample, write_training
from llmret.encoders.dense import DenseEncoder
from llmret.encoders.export import export_model
from llmret.encoders.settings import EncoderSettings
from llmret.losses.infonce import InfoNCELoss
from llmret.training.loop import latest_checkpoint
from llmret.training.train import TrainSettings, train

from helpers import random_texts


def test_infonce_value_and_gradient_by_hand() -> None:
    torch.manual_seed(0)
    q = torch.randn(2, 4, requires_grad=True)
    p = torch.randn(6, 4, requires_grad=True)  # groups of 3: positives at rows 0 and 3
    t = 0.05
    loss = InfoNCELoss(temperature=t)(q, p)
    qn, pn = q.detach().numpy(), p.detach().numpy()
    expected, grad_q = 0.0, np.zeros_like(qn)
    for i, positive in enumerate([0, 3]):
        logits = (pn @ qn[i] / t).astype(np.float64)
        log_norm = logits.max() + math.log(np.exp(logits - logits.max()).sum())
        probs = np.exp(logits - log_norm)
        expected += -(logits[positive] - log_norm) / 2
        onehot = np.eye(6)[positive]
        grad_q[i] = ((probs - onehot) @ pn) / t / 2  # d(-log softmax)/dq
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    np.testing.assert_allclose(q.grad.numpy(), grad_q, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="do not split into groups"):
        InfoNCELoss()(q, p[:5])


def test_infonce_cosine_ignores_scale() -> None:
    q, p = torch.randn(3, 8), torch.randn(6, 8)
    loss = InfoNCELoss(similarity="cos")
    assert loss(q, p).item() == pytest.approx(loss(5 * q, 0.1 * p).item(), rel=1e-5)


@pytest.fixture()
def train_file(tmp_path: Path) -> Path:
    docs = random_texts(40, seed=11, min_words=6)
    examples = [TrainExample(f"q{i}", " ".join(docs[i].split()[:3]), [Passage(f"d{i}", docs[i])],
                             [Passage(f"d{j}", docs[j]) for j in ((i + 1) % 40, (i + 7) % 40, (i + 13) % 40)])
                for i in range(40)]
    write_training(tmp_path / "train.jsonl", examples)
    return tmp_path / "train.jsonl"


def settings_for(model: Path, data: Path, out: Path, **overrides: object) -> TrainSettings:
    base = dict(train_data=str(data), output_dir=str(out), encoder=EncoderSettings(model=str(model), query_max_length=16,
                passage_max_length=32), batch_size=4, group_size=3, max_steps=6, save_steps=2, logging_steps=1,
                lora_r=4, lora_dropout=0.1, seed=7, learning_rate=1e-2)
    base.update(overrides)
    return TrainSettings(**base)  # type: ignore[arg-type]


def adapter_weights(final: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(final / "adapter_model.safetensors")


def test_killed_and_resumed_run_ends_with_identical_weights(tiny_llama: Path, train_file: Path, tmp_path: Path) -> None:
    straight = train(settings_for(tiny_llama, train_file, tmp_path / "straight"))

    def crash(step: int, loss: float) -> None:
        if step == 4:
            raise KeyboardInterrupt("killed")

    interrupted = settings_for(tiny_llama, train_file, tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        train(interrupted, on_step=crash)
    assert latest_checkpoint(tmp_path / "resumed").name == "checkpoint-4"
    assert not (tmp_path / "resumed" / "final").exists()
    resumed = train(interrupted, resume=True)

    a, b = adapter_weights(straight), adapter_weights(resumed)
    assert a.keys() == b.keys() and a
    for key in a:
        assert torch.equal(a[key], b[key]), key
    steps = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    saved = (tmp_path / "straight" / "train_config.yaml").read_text()
    assert "temperature: 0.02" in saved and "group_size: 3" in saved


def test_training_moves_the_loss_and_export_loads_back(tiny_llama: Path, train_file: Path, tmp_path: Path) -> None:
    encoder = EncoderSettings(model=str(tiny_llama), query_max_length=16, passage_max_length=32,
                              instruction="Find the passage.")
    final = train(settings_for(tiny_llama, train_file, tmp_path / "run", max_steps=10, save_steps=0, encoder=encoder))
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert min(losses[-3:]) < losses[0]
    texts = random_texts(5, seed=99)
    adapter = DenseEncoder.load(EncoderSettings(model=str(final)), "cpu")
    assert adapter.settings.instruction == "Find the passage."  # applied at evaluation as in training
    exported = export_model(str(final), tmp_path / "exported")
    assert (exported / "README.md").is_file() and not (exported / "adapter_config.json").exists()
    plain = DenseEncoder.load(EncoderSettings(model=str(exported)), "cpu")
    assert plain.info == adapter.info and plain.settings.instruction == "Find the passage."
    np.testing.assert_allclose(plain.encode_queries(texts), adapter.encode_queries(texts), atol=1e-5)
    base = DenseEncoder.load(EncoderSettings(model=str(tiny_llama)), "cpu")
    assert not np.allclose(base.encode_passages(texts), adapter.encode_passages(texts), atol=1e-3)


def test_train_cli_with_yaml_config(tiny_llama: Path, train_file: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    from llmret.cli import main

    config = tmp_path / "train.yaml"
    config.write_text(f"train_data: {train_file}\nbatch_size: 4\ngroup_size: 2\nmax_steps: 2\nlora_r: 4\n"
                      f"encoder:\n  model: {tiny_llama}\n  query_max_length: 16\n  passage_max_length: 32\n")
    assert main(["train", "--config", str(config), "--output-dir", str(tmp_path / "run"), "--seed", "3"]) == 0
    used = (tmp_path / "run" / "train_config.yaml").read_text()
    assert "seed: 3" in used and "passage_max_length: 32" in used
    config.write_text("train_data: x\nlearning_rte: 0.1\n")
    assert main(["train", "--config", str(config)]) == 2
    assert "unknown setting(s) learning_rte" in capsys.readouterr().err


def test_beir_folder_training_data_mines_bm25_negatives(tmp_path: Path) -> None:
    from llmret.training.train import load_examples

    from helpers import write_beir_folder

    docs = {f"d{i}": t for i, t in enumerate(random_texts(30, seed=21, min_words=8))}
    queries = {f"q{i}": " ".join(docs[f"d{i}"].split()[:4]) for i in range(10)}
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(10)}
    folder = write_beir_folder(tmp_path / "beir", docs, queries, qrels, split="train")
    examples = load_examples(TrainSettings(train_data=str(folder)))
    assert [ex.query_id for ex in examples] == list(queries)
    for ex in examples:
        assert [p.docid for p in ex.positives] == [f"d{ex.query_id[1:]}"] and ex.positives[0].text
        assert ex.negatives and all(n.docid != ex.positives[0].docid and n.text for n in ex.negatives)
