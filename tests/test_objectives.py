"""Distillation objectives by hand (numpy), teacher scores through the batch, and clear errors without them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from llmret.data.training import Passage, TrainExample, write_training
from llmret.encoders.settings import EncoderSettings
from llmret.losses import InfoNCELoss, ListwiseKDLoss, MarginMSELoss, Objective
from llmret.training.train import TrainSettings, train
from llmret.util.errors import DataError

from helpers import random_texts


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_listwise_kl_and_margin_mse_by_hand() -> None:
    torch.manual_seed(0)
    q = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    p = torch.randn(9, 5, dtype=torch.float64, requires_grad=True)  # groups of 3, positive first
    teacher = torch.randn(3, 3, dtype=torch.float64) * 4
    qn, pn, tn = q.detach().numpy(), p.detach().numpy(), teacher.numpy()
    student = np.stack([pn[3 * i:3 * i + 3] @ qn[i] for i in range(3)])  # each query against its own group only
    ts, tt = 0.5, 2.0
    pt, ps = _softmax(tn / tt), _softmax(student / ts)
    kl = float((pt * (np.log(pt) - np.log(ps))).sum(axis=1).mean())
    assert ListwiseKDLoss(ts, tt)(q, p, teacher).item() == pytest.approx(kl, rel=1e-9)
    margins = student[:, :1] - student[:, 1:]
    mse = float(((margins - (tn[:, :1] - tn[:, 1:])) ** 2).mean())
    loss = MarginMSELoss()(q, p, teacher)
    assert loss.item() == pytest.approx(mse, rel=1e-9)
    loss.backward()  # d/dq_i = 2/N sum_j (m_ij - t_ij) (p_i+ - p_ij)
    grad = np.zeros_like(qn)
    for i in range(3):
        for j in (1, 2):
            grad[i] += 2 / 6 * (margins[i, j - 1] - (tn[i, 0] - tn[i, j])) * (pn[3 * i] - pn[3 * i + j])
    np.testing.assert_allclose(q.grad.numpy(), grad, rtol=1e-9)


def test_in_batch_kl_spans_every_passage_of_each_query_s_process_by_hand() -> None:
    torch.manual_seed(1)
    q = torch.randn(4, 5, dtype=torch.float64)
    p = torch.randn(8, 5, dtype=torch.float64)  # groups of 2
    qn, pn = q.numpy(), p.numpy()
    ts, tt = 0.5, 2.0

    def kl(teacher: np.ndarray, student: np.ndarray) -> float:
        pt, ps = _softmax(teacher / tt), _softmax(student / ts)
        return float((pt * (np.log(pt) - np.log(ps))).sum(axis=1).mean())

    whole = torch.randn(4, 8, dtype=torch.float64) * 4  # one process: each query against all 8 passages
    assert ListwiseKDLoss(ts, tt)(q, p, whole).item() == pytest.approx(kl(whole.numpy(), qn @ pn.T), rel=1e-9)
    halves = torch.randn(4, 4, dtype=torch.float64) * 4  # two processes of 2 queries: each against its own 4
    student = np.stack([pn[4 * (i // 2):4 * (i // 2) + 4] @ qn[i] for i in range(4)])
    assert ListwiseKDLoss(ts, tt)(q, p, halves).item() == pytest.approx(kl(halves.numpy(), student), rel=1e-9)
    with pytest.raises(ValueError, match="teacher rows of 3 scores do not match"):
        ListwiseKDLoss()(q, p, torch.randn(4, 3))


def test_cl_plus_kd_is_the_weighted_sum_of_its_parts() -> None:
    q, p, teacher = torch.randn(2, 4), torch.randn(6, 4), torch.randn(2, 3)
    infonce, kd = InfoNCELoss(0.05), ListwiseKDLoss(1.0, 1.0)
    parts = Objective("cl+kd", infonce, kd)(q, p, teacher)
    assert set(parts) == {"ranking", "kd", "loss"}
    assert parts["loss"].item() == pytest.approx(0.5 * infonce(q, p).item() + 0.5 * kd(q, p, teacher).item(), rel=1e-6)
    with pytest.raises(ValueError, match="objective 'kd' needs teacher scores"):
        Objective("kd", infonce, kd)(q, p, None)


def _scored_file(path: Path, drop_score_at: int | None = None) -> Path:
    docs = random_texts(16, seed=2, min_words=6)
    examples = []
    for i in range(16):
        negs = [Passage(f"d{(i + k) % 16}", docs[(i + k) % 16], score=-float(k)) for k in (3, 7)]
        examples.append(TrainExample(f"q{i}", " ".join(docs[i].split()[:3]), [Passage(f"d{i}", docs[i], score=5.0)], negs))
    if drop_score_at is not None:
        examples[drop_score_at].negatives[1].score = None
    write_training(path, examples)
    return path


def test_distillation_trains_from_teacher_scores_and_logs_its_parts(tiny_llama: Path, tmp_path: Path) -> None:
    data = _scored_file(tmp_path / "scored.jsonl")
    for objective, parts in (("kd", {"kd_loss"}), ("cl+kd", {"ranking_loss", "kd_loss"}), ("marginmse", {"margin_mse_loss"})):
        out = tmp_path / objective
        train(TrainSettings(train_data=str(data), output_dir=str(out), objective=objective, batch_size=4, group_size=3,
                            max_steps=2, logging_steps=1, lora_r=4, encoder=EncoderSettings(model=str(tiny_llama))))
        records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        assert parts <= set(records[0]) and all(np.isfinite(r["loss"]) for r in records)


def test_distillation_without_scores_names_the_line(tiny_llama: Path, tmp_path: Path) -> None:
    data = _scored_file(tmp_path / "partly.jsonl", drop_score_at=5)
    settings = TrainSettings(train_data=str(data), output_dir=str(tmp_path / "o"), objective="kd", batch_size=4,
                             group_size=3, max_steps=1, encoder=EncoderSettings(model=str(tiny_llama)))
    with pytest.raises(DataError, match=r"partly.jsonl:6: objective 'kd' needs a teacher 'score' on every passage; 'd12'"):
        train(settings)


def _numeric_ids_file(path: Path) -> Path:
    """Training groups with MS MARCO-like numeric ids and no scores of their own."""
    docs = random_texts(12, seed=3, min_words=6)
    examples = [TrainExample(str(100 + i), " ".join(docs[i].split()[:3]), [Passage(str(i), docs[i])],
                             [Passage(str((i + k) % 12), docs[(i + k) % 12]) for k in (2, 5)]) for i in range(12)]
    write_training(path, examples)
    return path


def test_sentence_transformers_score_files_are_read_as_they_are(tiny_llama: Path, tmp_path: Path) -> None:
    """The layout of sentence-transformers' MS MARCO cross-encoder scores: a gzipped pickle of
    {int qid: {int pid: float}}; JSON copies have string keys. Both train KD; a hole is an error."""
    import gzip
    import pickle

    data = _numeric_ids_file(tmp_path / "train.jsonl")
    scores = {100 + i: {j: float(np.cos(i + 3 * j)) for j in range(12)} for i in range(12)}
    with gzip.open(tmp_path / "ce-scores.pkl.gz", "wb") as handle:
        pickle.dump(scores, handle)
    (tmp_path / "ce-scores.json").write_text(json.dumps({str(q): {str(p): s for p, s in row.items()}
                                                         for q, row in scores.items()}))
    from llmret.training.train import load_tasks

    for name in ("ce-scores.pkl.gz", "ce-scores.json"):
        settings = TrainSettings(train_data=str(data), objective="kd", teacher_scores=str(tmp_path / name))
        example = load_tasks(settings)[0][3]
        assert [p.score for p in example.positives + example.negatives] == \
            [scores[103][int(p.docid)] for p in example.positives + example.negatives]
    out = tmp_path / "run"
    train(TrainSettings(train_data=str(data), output_dir=str(out), objective="cl+kd", batch_size=4, group_size=3,
                        max_steps=1, lora_r=4, teacher_scores=str(tmp_path / "ce-scores.pkl.gz"),
                        encoder=EncoderSettings(model=str(tiny_llama))))
    assert (out / "final" / "llmret.json").is_file()
    del scores[105][(5 + 5) % 12]
    (tmp_path / "holed.json").write_text(json.dumps({str(q): {str(p): s for p, s in row.items()}
                                                     for q, row in scores.items()}))
    with pytest.raises(DataError, match=r"holed.json: query '105': no score for passage '10' \(.*train.jsonl:6\)"):
        load_tasks(TrainSettings(train_data=str(data), objective="kd", teacher_scores=str(tmp_path / "holed.json")))


def test_a_score_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    import os
    import pickle

    from llmret.data.teacher_scores import read_teacher_scores

    class Evil:
        def __reduce__(self):  # noqa: ANN204 - what a hostile pickle does
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"1": {"2": Evil()}}))
    with pytest.raises(DataError, match="evil.pkl: cannot read teacher scores: refusing to load"):
        read_teacher_scores(tmp_path / "evil.pkl")
    assert not (tmp_path / "pwned").exists()
    (tmp_path / "cut.pkl.gz").write_bytes(b"\x1f\x8b\x08\x00")
    with pytest.raises(DataError, match="cut.pkl.gz: not a complete gzip file"):
        read_teacher_scores(tmp_path / "cut.pkl.gz")
