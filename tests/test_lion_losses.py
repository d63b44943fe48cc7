"""The Lion recipes' losses against the authors' formulas, written out here by hand in numpy.

From HansiZeng/scaling-retriever, scaling_retriever/modeling/llm_encoder.py (T from DenseTrainingArgs,
0.01): the dense student divides its scores by T in InfoNCE, in the KL of KD and CL+KD, and its margin in
MarginMSE; the sparse student divides by nothing. KL is KLDivLoss(batchmean, log_target) of
log_softmax(teacher) against log_softmax(student over the query's own group); CL+KD is (NCE + KL) / 2;
MarginMSE is MSELoss over one sampled negative per query. Each loss is built by ``objective_for`` from
the recipe, as ``llmret train`` builds it, so a recipe or default that drifts fails here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmret.training.train import TrainSettings, objective_for

Q, G, D = 3, 4, 6  # queries, group size (positive first), dimensions


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def _tensors(sparse: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(7)
    q, p = rng.normal(size=(Q, D)), rng.normal(size=(Q * G, D))
    if sparse:  # non-negative term weights, as log(1 + ReLU) gives
        q, p = np.log1p(np.maximum(q, 0) * 3), np.log1p(np.maximum(p, 0) * 3)
    else:  # Lion-DS vectors: means of unit vectors, near the unit sphere
        q, p = q / np.linalg.norm(q, axis=1, keepdims=True), p / np.linalg.norm(p, axis=1, keepdims=True)
    teacher = rng.normal(size=(Q, G)) * 3  # cross-encoder logits
    return torch.tensor(q), torch.tensor(p), torch.tensor(teacher)


def _nce(q: np.ndarray, p: np.ndarray, t: float) -> float:
    logits = q @ p.T / t  # every passage of the batch; query i's positive at column i * G
    return float(-np.mean([_log_softmax(logits)[i, i * G] for i in range(Q)]))


def _own_group(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    return np.stack([p[i * G:(i + 1) * G] @ q[i] for i in range(Q)])


def _kl(q: np.ndarray, p: np.ndarray, teacher: np.ndarray, t: float) -> float:
    log_student, log_teacher = _log_softmax(_own_group(q, p) / t), _log_softmax(teacher)
    return float((np.exp(log_teacher) * (log_teacher - log_student)).sum() / Q)  # batchmean


def _margin_mse(q: np.ndarray, p: np.ndarray, teacher: np.ndarray, t: float) -> float:
    scores = _own_group(q, p)  # the group's first negative is the sampled one
    student, target = (scores[:, 0] - scores[:, 1]) / t, teacher[:, 0] - teacher[:, 1]
    return float(np.mean((student - target) ** 2))


@pytest.mark.parametrize("retriever,objective", [(r, o) for r in ("dense", "sparse")
                                                 for o in ("cl", "kd", "cl+kd", "marginmse")])
def test_lion_recipes_train_the_authors_losses(retriever: str, objective: str) -> None:
    settings = TrainSettings.from_dict({"recipe": f"lion-{retriever}", "objective": objective})
    loss = objective_for(settings)
    q, p, teacher = _tensors(retriever == "sparse")
    qn, pn, tn = q.numpy(), p.numpy(), teacher.numpy()
    t = 0.01 if retriever == "dense" else 1.0
    expected = {"cl": lambda: _nce(qn, pn, t), "kd": lambda: _kl(qn, pn, tn, t),
                "cl+kd": lambda: (_nce(qn, pn, t) + _kl(qn, pn, tn, t)) / 2,
                "marginmse": lambda: _margin_mse(qn, pn, tn, t)}[objective]()
    got = loss(q, p, None if objective == "cl" else teacher)["loss"].item()
    assert got == pytest.approx(expected, rel=1e-6)  # InfoNCE scores in float32


def test_the_dense_student_temperature_follows_infonce_unless_set() -> None:
    dense = objective_for(TrainSettings(objective="cl+kd"))
    assert (dense.parts["kd"][0].student_temperature, dense.parts["ranking"][0].temperature) == (0.02, 0.02)
    sparse = objective_for(TrainSettings(objective="cl+kd", retriever="sparse"))
    assert sparse.parts["kd"][0].student_temperature == 1.0
    mine = objective_for(TrainSettings(objective="marginmse", temperature=0.05, margin_temperature=0.5))
    assert mine.parts["margin_mse"][0].student_temperature == 0.5


def test_at_temperature_one_a_cosine_student_barely_feels_the_teacher() -> None:
    """Why the temperature matters: the KL's gradient on cosine scores is ~T times smaller at T = 1."""
    q, p, teacher = _tensors(sparse=False)
    grads = []
    for t in (1.0, 0.01):
        q1 = q.clone().requires_grad_()
        objective_for(TrainSettings(objective="kd", kd_student_temperature=t))(q1, p, teacher)["loss"].backward()
        grads.append(float(q1.grad.norm()))
    assert grads[1] > 20 * grads[0]


def test_margin_mse_over_all_negatives_is_the_mean_over_pairs() -> None:
    q, p, teacher = _tensors(sparse=True)
    loss = objective_for(TrainSettings(objective="marginmse", retriever="sparse"))(q, p, teacher)["loss"].item()
    scores, tn = _own_group(q.numpy(), p.numpy()), teacher.numpy()
    expected = np.mean([((scores[:, 0] - scores[:, j]) - (tn[:, 0] - tn[:, j])) ** 2 for j in range(1, G)])
    assert loss == pytest.approx(float(expected), rel=1e-9)


def test_the_flops_warm_up_counts_micro_batches_as_lions_scheduler(tiny_llama, tmp_path, monkeypatch) -> None:
    """Lion's RegWeightScheduler (losses/regulariaztion.py) steps once per micro-batch, its counter first
    incremented to 1: lambda_t = lambda * (t / T)^2 until t = T. With the lion-sparse recipe and two
    micro-batches per step, the weights training applies are that sequence, written out here."""
    from llmret.encoders.settings import EncoderSettings
    from llmret.losses.regularizers import warmup_weight
    from llmret.training import train as train_module

    from helpers import write_training_file

    seen: list[int] = []
    real = train_module.plain_step
    monkeypatch.setattr(train_module, "plain_step", lambda enc, batch, crit, at, *rest: (seen.append(at),
                                                                                         real(enc, batch, crit, at, *rest))[1])
    data = write_training_file(tmp_path / "train.jsonl", 16, (1, 5))
    settings = TrainSettings.from_dict({"recipe": "lion-sparse", "train_data": str(data), "output_dir": str(tmp_path / "o"),
                                        "batch_size": 2, "grad_accum": 2, "group_size": 2, "max_steps": 3,
                                        "reg_warmup_steps": 4, "lora_r": 4,
                                        "encoder": {"model": str(tiny_llama), "query_max_length": 8, "passage_max_length": 12}})
    train_module.train(settings)
    assert seen == [1, 2, 3, 4, 5, 6]
    lion = []
    t, lam, big_t = 0, 0.05, 4
    for _ in seen:
        if t < big_t:
            t += 1
            lam_t = lam * (t / big_t) ** 2
        lion.append(lam_t)
    assert [warmup_weight(lam, at, big_t) for at in seen] == pytest.approx(lion, rel=1e-12)
    seen.clear()
    train_module.train(TrainSettings(retriever="sparse", train_data=str(data), output_dir=str(tmp_path / "s"), batch_size=2,
                                     grad_accum=2, group_size=2, max_steps=3, lora_r=4,
                                     encoder=EncoderSettings(model=str(tiny_llama), query_max_length=8, passage_max_length=12)))
    assert seen == [0, 0, 1, 1, 2, 2]  # the default counts optimizer steps
