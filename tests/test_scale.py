"""Training at scale: negatives gathered across processes give the single-process gradient (InfoNCE, KD,
MarginMSE, FLOPS), GradCache gives the plain step's gradient with dropout on, and two processes
train the same adapter as one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

GATHER = '''
import json, sys, torch, torch.distributed as dist
from llmret.losses import InfoNCELoss, ListwiseKDLoss, Objective
from llmret.training.steps import Criterion, Regularizer

rank, world = int(sys.argv[1]), int(sys.argv[2])
dist.init_process_group("gloo", init_method="tcp://127.0.0.1:" + sys.argv[3], rank=rank, world_size=world)
torch.manual_seed(0)
B, G, D = 8, 3, 6
q, p, t = torch.randn(B, D, dtype=torch.float64), torch.rand(B * G, D, dtype=torch.float64), torch.randn(B, G, dtype=torch.float64)
out = {}
for kind in ("cl", "kd", "cl+kd", "marginmse", "sparse"):
    reg = Regularizer("flops", 0.3, 0.2, 0) if kind == "sparse" else None
    objective = Objective("cl" if kind == "sparse" else kind, InfoNCELoss(0.1), ListwiseKDLoss(0.5, 2.0))
    mine = list(range(rank, B, world))  # strided shares, as the loop deals them
    rows = [i * G + g for i in mine for g in range(G)]
    lq, lp = q[mine].clone().requires_grad_(), p[rows].clone().requires_grad_()
    parts = Criterion(objective, reg)(lq, lp, t[mine], 5)
    parts["loss"].backward()
    # DDP averages gradients over processes: this process's contribution is grad / world
    out[kind] = {"loss": parts["loss"].item(), "q": (lq.grad / world).tolist(), "p": (lp.grad / world).tolist(),
                 "q_rows": mine, "p_rows": rows}
print(json.dumps(out))
'''


def _run_ranks(tmp_path: Path, world: int) -> list[dict]:
    script = tmp_path / "gather.py"
    script.write_text(GATHER)
    port = str(29700 + os.getpid() % 200 + world)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), str(r), str(world), port], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for r in range(world)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs[0][1][-2000:] + outs[-1][1][-2000:]
    return [json.loads(o[0].strip().splitlines()[-1]) for o in outs]


@pytest.mark.slow  # two processes
def test_gathered_losses_on_two_processes_have_the_single_process_gradient(tmp_path: Path) -> None:
    (one,) = _run_ranks(tmp_path, 1)
    two = _run_ranks(tmp_path, 2)
    for kind, full in one.items():
        q_grad, p_grad = torch.zeros_like(torch.tensor(full["q"])), torch.zeros_like(torch.tensor(full["p"]))
        for rank in two:
            part = rank[kind]
            assert part["loss"] == pytest.approx(full["loss"], rel=1e-6), kind  # every process: the global loss (InfoNCE runs in float32)
            q_grad[part["q_rows"]] += torch.tensor(part["q"])
            p_grad[part["p_rows"]] += torch.tensor(part["p"])
        torch.testing.assert_close(q_grad, torch.tensor(full["q"]), rtol=1e-5, atol=1e-7, msg=kind)
        torch.testing.assert_close(p_grad, torch.tensor(full["p"]), rtol=1e-5, atol=1e-7, msg=kind)


def _lora_encoder(model: Path, sparse: bool, dropout: float):
    from llmret.encoders.dense import DenseEncoder
    from llmret.encoders.settings import EncoderSettings
    from llmret.encoders.sparse import SparseEncoder
    from llmret.training.settings import LoraSettings
    from llmret.training.train import _wrap_lora

    cls = SparseEncoder if sparse else DenseEncoder
    encoder = cls.load(EncoderSettings(model=str(model), query_max_length=12, passage_max_length=20), "cpu")
    torch.manual_seed(1)
    encoder.model = _wrap_lora(encoder.model, LoraSettings(lora_r=4, lora_dropout=dropout), seed=0)
    for name, param in encoder.model.named_parameters():  # LoRA B starts at zero: make the adapter matter
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.2)
    encoder.model.train()
    return encoder


@pytest.mark.parametrize("sparse,objective", [(False, "cl"), (False, "cl+kd"), (True, "cl")])
def test_grad_cache_gives_the_plain_gradient_with_dropout(tiny_llama: Path, sparse: bool, objective: str) -> None:
    from llmret.losses import InfoNCELoss, ListwiseKDLoss, Objective
    from llmret.training.steps import Batch, Criterion, Regularizer, cached_step, plain_step

    from helpers import random_texts

    encoder = _lora_encoder(tiny_llama, sparse, dropout=0.3)
    texts = random_texts(24, seed=4)
    batch = Batch(encoder.tokenize(texts[:6], 12), encoder.tokenize(texts[6:18], 20), torch.randn(6, 2))
    criterion = Criterion(Objective(objective, InfoNCELoss(1.0 if sparse else 0.05), ListwiseKDLoss()),
                          Regularizer("flops", 0.05, 0.04, 0) if sparse else None)
    grads = []
    for step in (plain_step, cached_step):
        torch.manual_seed(3)
        encoder.model.zero_grad()
        parts = step(encoder, batch, criterion, 2, 4, lambda loss: loss.backward())
        grads.append({n: p.grad.clone() for n, p in encoder.model.named_parameters() if p.requires_grad})
        after = torch.rand(1)  # both steps leave the random state where the plain step does
        parts["after"] = after
        grads[-1]["_parts"] = parts
    plain, cached = grads
    assert plain["_parts"]["after"] == cached["_parts"]["after"]
    assert plain["_parts"]["loss"] == pytest.approx(cached["_parts"]["loss"], rel=1e-6)
    nonzero = 0
    for name in plain:
        if name != "_parts":
            torch.testing.assert_close(cached[name], plain[name], rtol=1e-4, atol=1e-6, msg=name)
            nonzero += int(plain[name].abs().sum() > 0)
    assert nonzero >= 8  # the gradient reaches the adapters


def test_grad_cache_without_replay_would_differ(tiny_llama: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: forwarding the chunks again with fresh dropout changes the gradient."""
    from contextlib import nullcontext

    from llmret.losses import InfoNCELoss, ListwiseKDLoss, Objective
    from llmret.training import steps

    from helpers import random_texts

    encoder = _lora_encoder(tiny_llama, False, dropout=0.3)
    texts = random_texts(12, seed=4)
    batch = steps.Batch(encoder.tokenize(texts[:4], 12), encoder.tokenize(texts[4:12], 20))
    criterion = steps.Criterion(Objective("cl", InfoNCELoss(0.05), ListwiseKDLoss()))
    grads = []
    for replay in (True, False):
        if not replay:
            monkeypatch.setattr(steps.RandContext, "replay", lambda self: nullcontext())
        torch.manual_seed(3)
        encoder.model.zero_grad()
        steps.cached_step(encoder, batch, criterion, 0, 2, lambda loss: loss.backward())
        grads.append(torch.cat([p.grad.flatten() for p in encoder.model.parameters() if p.requires_grad]))
    assert not torch.allclose(grads[0], grads[1], atol=1e-6)


def test_query_subsets_are_seeded_and_nested() -> None:
    from llmret.data.training import Passage, TrainExample
    from llmret.training.train import subset

    examples = [TrainExample(f"q{i}", "x", [Passage(f"d{i}")]) for i in range(50)]
    small, large = subset(examples, 10, 3), subset(examples, 25, 3)
    assert len(small) == 10 and len(large) == 25 and set(map(id, small)) <= set(map(id, large))
    assert [e.query_id for e in small] == sorted((e.query_id for e in small), key=lambda q: int(q[1:]))  # file order
    assert subset(examples, 10, 3) == small and subset(examples, 10, 4) != small
    assert subset(examples, None, 3) == examples and subset(examples, 80, 3) == examples


def test_budget_buys_steps_and_logs_flops_and_checkpoints_are_evaluated(tiny_llama: Path, tmp_path: Path) -> None:
    """FLOPs per token by the formula from the model's own parameter list; the budget's steps are the
    steps run; checkpoint models evaluated during training score as they do when loaded later; and
    evaluating does not change the training (same final adapter without it)."""
    from safetensors.torch import load_file
    from transformers import AutoModel

    from llmret.encoders.dense import DenseEncoder
    from llmret.encoders.settings import EncoderSettings
    from llmret.evaluation.conventions import load
    from llmret.evaluation.pipeline import evaluate_retriever
    from llmret.retrievers.dense import DenseRetriever
    from llmret.training.train import TrainSettings, train

    from helpers import random_texts, write_beir_folder, write_training_file

    data = write_training_file(tmp_path / "train.jsonl", 16, (1, 5))
    texts = random_texts(10, seed=9, min_words=5)
    dev = write_beir_folder(tmp_path / "dev", {f"d{i}": t for i, t in enumerate(texts)},
                            {f"q{i}": " ".join(t.split()[:3]) for i, t in enumerate(texts[:5])},
                            {f"q{i}": {f"d{i}": 1} for i in range(5)}, split="dev")

    def settings(out: str, **extra: object) -> TrainSettings:
        return TrainSettings(train_data=str(data), output_dir=str(tmp_path / out), batch_size=4, group_size=2,
                             lora_r=4, lora_dropout=0.1, logging_steps=1, seed=3, learning_rate=1e-2,
                             encoder=EncoderSettings(model=str(tiny_llama), query_max_length=12, passage_max_length=20),
                             **extra)

    probe = settings("probe", max_steps=1)
    train(probe)
    compute = json.loads((tmp_path / "probe" / "compute.json").read_text())
    base = AutoModel.from_pretrained(tiny_llama)
    frozen = sum(p.numel() for n, p in base.named_parameters() if "embed_tokens" not in n)
    assert compute["parameters"] - compute["trainable"] == frozen
    assert compute["flops_per_token"] == 4 * frozen + 6 * compute["trainable"]
    budget = compute["flops_per_step"] * 3.5
    out = tmp_path / "budget"
    train(settings("budget", budget_flops=budget, eval_steps=[1, 3], eval_data=str(dev)))
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert json.loads((out / "compute.json").read_text())["steps"] == 3 and [r["step"] for r in log] == [1, 2, 3]
    assert 0 < log[0]["flops"] < log[1]["flops"] < log[2]["flops"]
    assert log[2]["flops"] == pytest.approx(3 * compute["flops_per_step"], rel=0.5)  # estimated vs real tokens

    evals = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    assert [e["step"] for e in evals] == [1, 3] and "nDCG@10" in evals[0]
    data_dev, rules = load(str(dev), "dev")
    encoder = DenseEncoder.load(EncoderSettings(model=str(out / "checkpoint-3" / "model")), dataset=rules.encoder_layer())
    again = evaluate_retriever(DenseRetriever(encoder), data_dev, rules=rules).evaluation.aggregate
    assert again["nDCG@10"] == pytest.approx(evals[1]["nDCG@10"], abs=1e-9)

    train(settings("plain", max_steps=3))
    a, b = (load_file(tmp_path / name / "final" / "adapter_model.safetensors") for name in ("budget", "plain"))
    for key in a:
        assert torch.equal(a[key], b[key]), key
    with pytest.raises(ValueError, match="not both"):
        train(settings("x", budget_flops=budget, max_steps=2))
    with pytest.raises(ValueError, match="less than one step"):
        train(settings("x", budget_flops=10.0))
    with pytest.raises(ValueError, match="at least 1"):
        train(settings("x", max_train_queries=0))


def test_grad_cache_backpropagates_the_cached_loss_before_any_chunk(tiny_llama: Path) -> None:
    """The order GradCache relies on, recorded: one backward through ``backward`` (the accelerator's) on
    the loss over detached vectors, when no weight has a gradient yet, then every chunk's own. An engine
    whose backward also steps (DeepSpeed) would step there on nothing: hence the refusal below."""
    from llmret.losses import InfoNCELoss, ListwiseKDLoss, Objective
    from llmret.training.steps import Batch, Criterion, cached_step

    from helpers import random_texts

    encoder = _lora_encoder(tiny_llama, False, dropout=0.0)
    texts = random_texts(12, seed=4)
    batch = Batch(encoder.tokenize(texts[:4], 12), encoder.tokenize(texts[4:12], 20))
    calls: list[str] = []
    params = [p for p in encoder.model.parameters() if p.requires_grad]
    encoder.model.zero_grad(set_to_none=True)
    real = torch.autograd.backward

    def backward(loss: torch.Tensor) -> None:
        calls.append("backward:" + ("weights-have-grads" if any(p.grad is not None for p in params) else "no-grads"))
        real(loss)

    try:
        torch.autograd.backward = lambda *a, **k: (calls.append("chunk"), real(*a, **k))[1]
        cached_step(encoder, batch, Criterion(Objective("cl", InfoNCELoss(0.05), ListwiseKDLoss())), 0, 2, backward)
    finally:
        torch.autograd.backward = real
    assert calls[0] == "backward:no-grads" and calls.count("chunk") == 6 and "backward" not in "".join(calls[1:])
    assert all(p.grad is not None for p in params)


def test_grad_cache_under_deepspeed_is_refused_before_any_work(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """No DeepSpeed here: a stand-in accelerator reports the DeepSpeed backend, as accelerate's would."""
    import accelerate
    from accelerate.utils import DistributedType

    from llmret.training.train import TrainSettings, train

    class DeepSpeedStandIn(accelerate.Accelerator):
        @property
        def distributed_type(self) -> DistributedType:
            return DistributedType.DEEPSPEED

    monkeypatch.setattr(accelerate, "Accelerator", DeepSpeedStandIn)
    settings = TrainSettings(train_data=str(tmp_path / "absent.jsonl"), output_dir=str(tmp_path / "o"), grad_cache=True)
    with pytest.raises(ValueError, match="grad_cache does not run under DeepSpeed"):
        train(settings)  # the data is missing too: the backend is checked first
    assert not (tmp_path / "o").exists()
