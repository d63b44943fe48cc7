"""Contrastive fine-tuning of a dense or learned-sparse retriever: LoRA (or full) + InfoNCE, on accelerate.

Sparse training is the same loop with a :class:`SparseEncoder` and FLOPS (or L1) regularisation of
query and passage term weights, with separate weights and a quadratic warm-up (SPLADE, Lion-SP).

accelerate places the model, runs DDP/FSDP/DeepSpeed when launched with ``accelerate launch``, and
handles mixed precision. Batches are built here (not by a DataLoader) from :mod:`llmret.data.sampling`,
so that which passages step N sees depends only on the seed; with the checkpoint's RNG, optimizer
and scheduler state that makes ``--resume`` continue exactly where a killed run stopped.

Output folder: ``checkpoint-N/state.pt`` every ``save_steps``; ``final/`` (adapter or full model,
tokenizer, ``llmret.json``); ``train_config.yaml`` (the settings used); ``log.jsonl``.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from llmret import budget
from llmret.callbacks import (
    Callback,
    CheckpointCallback,
    EvalCallback,
    LogCallback,
    LoopState,
)
from llmret.config import EncoderSettings, from_dict, to_dict
from llmret.data.sampling import epoch_order, sample_group
from llmret.data.training import TrainExample, require_teacher_scores
from llmret.encoders.base import DTYPES, TextEncoder
from llmret.encoders.dense import DenseEncoder
from llmret.encoders.sparse import SparseEncoder
from llmret.fileio import atomic_dir, atomic_write, write_json
from llmret.losses.infonce import InfoNCELoss
from llmret.losses.kd import ListwiseKDLoss
from llmret.losses.objective import Objective
from llmret.saved import SavedModel
from llmret.steps import Batch, Criterion, Regularizer, cached_step, plain_step

log = logging.getLogger(__name__)


def _opt(default: Any, help: str, **extra: Any) -> Any:  # noqa: A002 - argparse's word
    """A settings field whose help text the ``train`` command shows (flags are made from these fields)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **extra})
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class TrainSettings:
    """Training settings; defaults follow arXiv 2408.12194 (LoRA, InfoNCE at 0.02, lr 3e-4, 7 negatives).

    Each field is a ``train`` flag (``max_steps`` -> ``--max-steps``) and a key of a ``--config`` file.
    """

    retriever: str = _opt("dense", "what to train", choices=("dense", "sparse"))
    train_data: str = _opt("builtin:code", "Tevatron JSONL, a BEIR folder (qrels/train.tsv) or builtin:TASK")
    corpus: str | None = _opt(None, "corpus resolving passages given by id in a JSONL file")
    output_dir: str = _opt("runs/train", "where checkpoints, logs and final/ go")
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    lora: bool = _opt(True, "LoRA adapters (--no-lora: full fine-tuning)")
    lora_r: int = _opt(16, "LoRA rank")
    lora_alpha: int = _opt(32, "LoRA alpha")
    lora_dropout: float = _opt(0.1, "dropout on the LoRA input")
    lora_target_modules: list[str] | str = _opt("all-linear", "modules given adapters (default every attention "
                                                              "and MLP projection)")
    lora_layers: int | None = _opt(None, "only the top N layers get adapters (cheaper backward on a CPU)")
    learning_rate: float = _opt(3e-4, "peak learning rate (linear warm-up and decay)")
    weight_decay: float = _opt(0.0, "AdamW weight decay")
    warmup_ratio: float = _opt(0.1, "share of the steps spent warming up")
    batch_size: int = _opt(128, "queries per step over all processes; in-batch negatives come from these")
    group_size: int = _opt(8, "passages per query: 1 positive + hard negatives")
    temperature: float | None = _opt(None, "InfoNCE temperature (default 0.02 dense, 1.0 sparse: raw dot products)")
    objective: str = _opt("cl", "cl: InfoNCE; kd: listwise KL from teacher scores; cl+kd: (1 - kd_weight) "
                                "InfoNCE + kd_weight KL; marginmse: MarginMSE. All but cl need a teacher "
                                "'score' on every passage (llmret annotate)",
                          choices=("cl", "kd", "cl+kd", "marginmse"))
    kd_weight: float = _opt(0.5, "cl+kd: share of the KL part (0.5 is Lion's (InfoNCE + KL) / 2)")
    kd_student_temperature: float = _opt(1.0, "distillation temperature of the student's scores")
    kd_teacher_temperature: float = _opt(1.0, "distillation temperature of the teacher's scores")
    similarity: str = _opt("dot", "InfoNCE similarity: dot (cosine when the encoder normalises) or cos",
                           choices=("dot", "cos"))
    epochs: float = _opt(1.0, "passes over the training queries")
    max_steps: int | None = _opt(None, "stop after this many steps (instead of epochs)")
    max_train_queries: int | None = _opt(None, "train on a seeded subset of this many queries (nested across sizes)")
    grad_accum: int = _opt(1, "micro-batches per optimizer step")
    grad_checkpointing: bool = _opt(False, "recompute activations in the backward pass (less memory)")
    grad_cache: bool = _opt(False, "GradCache: exact large-batch training with the memory of one chunk")
    chunk_size: int = _opt(16, "GradCache: sequences forwarded at once")
    budget_flops: float | None = _opt(None, "train as many steps as this many FLOPs buy (see compute.json)")
    max_grad_norm: float = _opt(1.0, "gradient clipping (0: none)")
    mixed_precision: str = _opt("auto", "auto: bf16 where the GPU supports it, else none (CPU bf16 is slow)",
                                choices=("auto", "no", "bf16", "fp16"))
    seed: int = _opt(42, "seeds data order, negatives, subsets and initialisation")
    save_steps: int = _opt(0, "full training state every N steps, for --resume (0: none)")
    logging_steps: int = _opt(10, "log.jsonl record every N steps")
    tensorboard: bool = _opt(False, "also log to OUTPUT/tensorboard")
    eval_steps: list[int] = _opt([], "save checkpoint-N/model at these steps (and evaluate it with --eval-data)")
    eval_data: str | None = _opt(None, "evaluate checkpoint models on this data (builtin:TASK or BEIR folder)")
    eval_split: str = _opt("dev", "split of --eval-data")
    # sparse only: Lion used FLOPS with weights 0.05 (queries) and 0.04 (passages) next to ranking weight 1
    regularizer: str = _opt("flops", "sparse: sparsity regulariser", choices=("flops", "l1"))
    query_reg_weight: float = _opt(0.05, "sparse: query regulariser weight")
    passage_reg_weight: float = _opt(0.04, "sparse: passage regulariser weight")
    reg_warmup_ratio: float = _opt(0.33, "sparse: the weights rise quadratically over this share of the steps")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path | None = None) -> TrainSettings:
        data = dict(data)
        encoder = from_dict(EncoderSettings, data.pop("encoder", {}) or {}, source)
        settings = from_dict(cls, data, source)
        settings.encoder = encoder
        return settings


# ---- data --------------------------------------------------------------------------------------------
def load_examples(settings: TrainSettings) -> list[TrainExample]:
    """Training examples from a JSONL file, a BEIR folder (BM25-mined negatives) or a built-in task."""
    from llmret.data.corpus import Corpus
    from llmret.data.dataset import load_dataset
    from llmret.data.training import read_training, resolve_passages
    from llmret.mining import mine_bm25_negatives
    from llmret.registry import resolve_folder

    spec = settings.train_data
    path = resolve_folder(spec, "train")
    if path.is_dir() and (path / "train.jsonl").is_file():
        examples = read_training(path / "train.jsonl", Corpus.from_file(path / "corpus.jsonl"))
    elif path.is_dir():
        data = load_dataset(path, "train")
        examples = resolve_passages(mine_bm25_negatives(data), data.corpus)
    else:
        examples = read_training(path, Corpus.from_file(settings.corpus) if settings.corpus else None)
    return subset(examples, settings.max_train_queries, settings.seed)


def subset(examples: list[TrainExample], size: int | None, seed: int) -> list[TrainExample]:
    """``size`` examples drawn by ``seed`` (in file order), so that smaller subsets of one seed are nested:
    quality against data then differs only by the data added."""
    if not size or size >= len(examples):
        return examples
    ranked = sorted(range(len(examples)), key=lambda i: random.Random(f"subset:{seed}:{i}").random())
    return [examples[i] for i in sorted(ranked[:size])]


def make_batch(encoder: TextEncoder, examples: list[TrainExample], indexes: list[int], epoch: int,
               settings: TrainSettings, with_teacher: bool = False) -> Batch:
    """Token ids of the queries and of their passage groups (positive first), with the teacher's scores
    of each group when the objective uses them (every process must then send them: collectives)."""
    queries = [encoder.format_query(examples[i].query) for i in indexes]
    groups = [sample_group(examples, i, epoch, settings.seed, settings.group_size) for i in indexes]
    passages = [encoder.format_passage(p.full_text()) for group in groups for p in group]
    teacher = torch.tensor([[p.score for p in group] for group in groups]) if with_teacher else None
    return Batch(encoder.tokenize(queries, encoder.settings.query_max_length),
                 encoder.tokenize(passages, encoder.passage_max_length), teacher)


def estimate_tokens_per_step(encoder: TextEncoder, examples: list[TrainExample], settings: TrainSettings,
                             sample: int = 256) -> float:
    """Real tokens one optimizer step processes, from the first ``sample`` examples of epoch 0's order."""
    order = epoch_order(len(examples), 0, settings.seed)[:sample]
    batch = make_batch(encoder, examples, order, 0, settings)
    return batch.tokens / len(order) * settings.batch_size * settings.grad_accum


# ---- checkpoints -------------------------------------------------------------------------------------
def _trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def _rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    step: int, accelerator: Any) -> None:
    """The whole training state: trainable weights, optimizer, scheduler, the fp16 loss scaler, and the
    random state of every process (each rank writes its own), written atomically; ``state.pt`` is
    written last, after every rank has written, so its presence marks a complete checkpoint."""
    with atomic_write(folder / f"rng-{accelerator.process_index}.pt", "wb") as handle:
        torch.save(_rng_state(), handle)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        scaler = getattr(accelerator, "scaler", None)
        state = {"step": step, "model": _trainable_state(model), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
                 "world_size": accelerator.num_processes}
        with atomic_write(folder / "state.pt", "wb") as handle:
            torch.save(state, handle)
    accelerator.wait_for_everyone()


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint (one whose state.pt was fully written)."""
    done = [p for p in output_dir.glob("checkpoint-*") if (p / "state.pt").is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


# Settings that change what is logged or saved, not what is trained: a resume may change them.
BOOKKEEPING = ("save_steps", "logging_steps", "tensorboard", "output_dir", "eval_steps", "eval_data", "eval_split")


def settings_changes(saved: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[str]:
    """Names of the settings (``encoder.x`` for nested ones) that differ between two settings dicts."""
    changed = []
    for key in sorted(set(saved) | set(now)):
        if key in BOOKKEEPING and not prefix:
            continue
        old, new = saved.get(key), now.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changed += settings_changes(old, new, f"{prefix}{key}.")
        elif old != new:
            changed.append(f"{prefix}{key} ({old!r} -> {new!r})")
    return changed


def _trim_log(path: Path, last_step: int) -> None:
    """Drop log records after ``last_step`` (written after the checkpoint a resume starts from)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= last_step]
    with atomic_write(path) as handle:
        handle.write("".join(f"{line}\n" for line in keep))


# ---- the loop ----------------------------------------------------------------------------------------
def _wrap_lora(model: torch.nn.Module, settings: TrainSettings) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    targets = settings.lora_target_modules
    if settings.lora_layers:
        # Full names of the linear modules in the top N layers. peft's layers_to_transform cannot be used:
        # it needs explicit module names and a '.layers.' pattern that bare models (layers.0...) lack.
        total = int(getattr(model.config, "num_hidden_layers"))
        keep = set(range(total - settings.lora_layers, total))
        wanted = None if targets == "all-linear" else set([targets] if isinstance(targets, str) else targets)
        targets = [name for name, module in model.named_modules()
                   if isinstance(module, torch.nn.Linear) and (m := re.search(r"(?:^|\.)(\d+)\.", name))
                   and int(m.group(1)) in keep and (wanted is None or name.rsplit(".", 1)[-1] in wanted)]
    config = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                        target_modules=targets, bias="none")
    return get_peft_model(model, config)


def _mixed_precision(choice: str) -> str:
    if choice != "auto":
        return choice
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def train(settings: TrainSettings, *, resume: bool = False, force: bool = False,
          on_step: Callable[[int, float], None] | None = None, callbacks: Sequence[Callback] = ()) -> Path:
    """Train and return the folder of the final model (``OUTPUT/final``).

    ``resume`` continues from the newest checkpoint; settings that differ from the ones the run
    started with are an error naming them (``force`` accepts them). ``callbacks`` run after each
    step, after logging, checkpoints and evaluation; ``on_step(step, loss)`` is the short form.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    from llmret.backbone import load_backbone

    out = Path(settings.output_dir)
    accelerator = Accelerator(mixed_precision=_mixed_precision(settings.mixed_precision),
                              gradient_accumulation_steps=settings.grad_accum)
    set_seed(settings.seed, device_specific=True)  # each process draws its own dropout masks
    if settings.batch_size % accelerator.num_processes:
        # Every process must run as many forward passes as the others, or DDP's collectives deadlock.
        raise ValueError(f"batch_size {settings.batch_size} does not split evenly over {accelerator.num_processes} processes")
    if settings.budget_flops is not None and settings.max_steps is not None:
        raise ValueError("give --budget-flops or --max-steps, not both: the budget decides the number of steps")
    if settings.eval_data and not settings.eval_steps:
        raise ValueError("--eval-data needs --eval-steps: the steps at which to evaluate")
    if settings.retriever not in ("dense", "sparse"):
        raise ValueError(f"retriever must be dense or sparse, not '{settings.retriever}'")
    sparse = settings.retriever == "sparse"
    if settings.temperature is None:  # resolved here, so the saved config shows the value used
        settings.temperature = 1.0 if sparse else 0.02
    objective = Objective(settings.objective, InfoNCELoss(settings.temperature, settings.similarity),
                          ListwiseKDLoss(settings.kd_student_temperature, settings.kd_teacher_temperature),
                          settings.kd_weight)
    examples = load_examples(settings)
    if objective.needs_teacher:
        require_teacher_scores(examples, f"objective '{settings.objective}'")  # before the model loads
    backbone = load_backbone(settings.encoder.model, dtype=DTYPES[settings.encoder.dtype or "float32"], lm_head=sparse)
    encoder = (SparseEncoder if sparse else DenseEncoder)(backbone, settings.encoder, accelerator.device)
    used = {**to_dict(settings), "encoder": {"model": settings.encoder.model, **to_dict(encoder.settings)}}
    ckpt = latest_checkpoint(out) if resume else None
    if ckpt is not None and (out / "train_config.yaml").is_file() and not force:
        changed = settings_changes(yaml.safe_load((out / "train_config.yaml").read_text()) or {}, used)
        if changed:
            raise ValueError(f"{out / 'train_config.yaml'}: resuming with other settings than the run started with: "
                             f"{'; '.join(changed)} (pass --force to accept them)")

    model = backbone.model
    if settings.grad_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = _wrap_lora(model, settings) if settings.lora else model
    model.train()

    world, rank = accelerator.num_processes, accelerator.process_index
    steps_per_epoch = len(examples) // (settings.batch_size * settings.grad_accum)
    if steps_per_epoch == 0:
        raise ValueError(f"{len(examples)} training queries are fewer than one step's "
                         f"{settings.batch_size * settings.grad_accum}; lower batch_size or grad_accum")
    compute = budget.plan(model, settings.lora, settings.grad_checkpointing or settings.grad_cache,
                          estimate_tokens_per_step(encoder, examples, settings), settings.budget_flops)
    total = compute.steps or settings.max_steps or math.ceil(steps_per_epoch * settings.epochs)
    log.info("%d steps of ~%.3g FLOPs (%.3g per token, %d of %d parameters trained%s)", total, compute.flops_per_step,
             compute.flops_per_token, compute.trainable, compute.parameters, ", LoRA" if settings.lora else "")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    # The scheduler stays out of accelerator.prepare: prepared, it steps once per process, which is
    # right only when each process takes its own batches; here every process takes a share of the
    # same global batch, so the rate must follow the global step (stepped below once per update).
    scheduler = get_linear_schedule_with_warmup(optimizer, int(settings.warmup_ratio * total), total)
    model, optimizer = accelerator.prepare(model, optimizer)
    encoder.model = model
    regularizer = Regularizer(settings.regularizer, settings.query_reg_weight, settings.passage_reg_weight,
                              int(settings.reg_warmup_ratio * total)) if sparse else None
    criterion = Criterion(objective, regularizer)

    start = 0
    if ckpt is not None:
        start = _restore(ckpt, accelerator, model, optimizer, scheduler)
        log.info("resumed from %s at step %d of %d", ckpt, start, total)
    elif resume:
        log.info("no checkpoint in %s: starting from scratch", out)

    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        _trim_log(out / "log.jsonl", start)  # a fresh run starts an empty log; a resumed one drops what followed its checkpoint
        with atomic_write(out / "train_config.yaml") as handle:
            yaml.safe_dump(used, handle, sort_keys=False)
        write_json(out / "compute.json", {**compute.to_json(), "steps": total})

    def save_model(folder: Path) -> None:
        save_final(folder, accelerator.unwrap_model(model), encoder, settings)

    def save_state(folder: Path, state: LoopState) -> None:
        save_checkpoint(folder, accelerator.unwrap_model(model), optimizer, scheduler, state.step, accelerator)

    bar = tqdm(total=total, initial=start, desc="training", disable=not accelerator.is_main_process)
    done_flops = _logged_flops(out / "log.jsonl") if start else 0.0
    evaluate = _checkpoint_evaluator(settings) if settings.eval_data else None
    loop = [LogCallback(settings.logging_steps, settings.tensorboard, bar, done_flops),
            CheckpointCallback(settings.save_steps, save_state), EvalCallback(settings.eval_steps, evaluate),
            *callbacks]
    state = LoopState(start, total, out, accelerator, model, optimizer, scheduler, save_model,
                      flops_per_token=compute.flops_per_token)
    micro = settings.batch_size
    for step in range(start, total):
        epoch, within = divmod(step, steps_per_epoch)
        order = epoch_order(len(examples), epoch, settings.seed)
        state.tokens = 0
        for a in range(settings.grad_accum):
            begin = (within * settings.grad_accum + a) * micro
            indexes = order[begin:begin + micro][rank::world]  # each process its share of the batch
            batch = make_batch(encoder, examples, indexes, epoch, settings, objective.needs_teacher)
            with accelerator.accumulate(model):
                if settings.grad_cache:
                    state.record = cached_step(encoder, batch, criterion, step, settings.chunk_size,
                                               accelerator.backward, lambda: accelerator.no_sync(model))
                else:
                    state.record = plain_step(encoder, batch, criterion, step, micro, accelerator.backward)
                if accelerator.sync_gradients and settings.max_grad_norm:
                    accelerator.clip_grad_norm_(params, settings.max_grad_norm)
                optimizer.step()
                if accelerator.sync_gradients:
                    scheduler.step()
                optimizer.zero_grad()
            state.tokens += batch.tokens
        state.step = step + 1
        for callback in loop:
            callback.on_step(state)
        if on_step is not None:
            on_step(state.step, state.record["loss"])
    bar.close()
    final = out / "final"
    if accelerator.is_main_process:
        save_model(final)
    accelerator.wait_for_everyone()
    return final


def _restore(ckpt: Path, accelerator: Any, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             scheduler: Any) -> int:
    """Load a checkpoint's training state into this process; returns its step."""
    state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=False)
    world = accelerator.num_processes
    if state.get("world_size", world) != world:
        raise ValueError(f"{ckpt}: saved by {state['world_size']} processes; resume it with as many (now {world})")
    missing = accelerator.unwrap_model(model).load_state_dict(state["model"], strict=False)
    if missing.unexpected_keys:
        raise ValueError(f"{ckpt}: checkpoint does not match the model ({missing.unexpected_keys[:3]} ...)")
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler") is not None and getattr(accelerator, "scaler", None) is not None:
        accelerator.scaler.load_state_dict(state["scaler"])
    rng_file = ckpt / f"rng-{accelerator.process_index}.pt"
    if not rng_file.is_file():
        raise ValueError(f"{rng_file}: this process's random state is missing from the checkpoint")
    _set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=False))
    return int(state["step"])


def _logged_flops(path: Path) -> float:
    """The cumulative FLOPs of the last log record (a resumed run counts on from there)."""
    lines = [line for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    return float(json.loads(lines[-1]).get("flops", 0.0)) if lines else 0.0


def _checkpoint_evaluator(settings: TrainSettings) -> Callable[[Path], dict[str, float]]:
    """Scores of a saved checkpoint model on ``eval_data`` under that data's rules."""
    from llmret.pipeline import evaluate_retriever
    from llmret.registry import load
    from llmret.retrievers.dense import DenseRetriever
    from llmret.retrievers.sparse import SparseRetriever

    data, rules = load(settings.eval_data or "", settings.eval_split)

    def evaluate(folder: Path) -> dict[str, float]:
        cls, retriever = ((SparseEncoder, SparseRetriever) if settings.retriever == "sparse"
                          else (DenseEncoder, DenseRetriever))
        encoder = cls.load(EncoderSettings(model=str(folder)), dataset=rules.encoder_layer())
        result = evaluate_retriever(retriever(encoder), data, folder.parent / "eval", rules=rules)
        return result.evaluation.aggregate

    return evaluate


def save_final(folder: Path, model: torch.nn.Module, encoder: TextEncoder, settings: TrainSettings) -> None:
    """The trained model (a peft adapter folder, or a full model) with its description (llmret.json).

    A full model over a sentence-transformers folder keeps its Dense head as module files, so the
    folder encodes as the trained model did.
    """
    from llmret import st_folder

    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        encoder.tokenizer.save_pretrained(tmp)
        if not settings.lora and encoder.head is not None:
            info = encoder.info
            st_folder.write(tmp, pooling=info.pooling, normalize=info.normalize, max_length=info.max_length,
                            dim=int(model.config.hidden_size), lowercase=info.lowercase, head=encoder.head)
        SavedModel(base_model=settings.encoder.model, paradigm=encoder.paradigm, lora=settings.lora,
                   model_info=encoder.info, encoder=encoder.settings.explicit()).write(tmp)
