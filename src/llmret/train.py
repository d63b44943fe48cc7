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
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from llmret.config import EncoderSettings, from_dict, to_dict
from llmret.data.sampling import epoch_order, sample_group
from llmret.data.training import TrainExample, require_teacher_scores
from llmret.encoders.base import DTYPES, TextEncoder
from llmret.encoders.dense import DenseEncoder
from llmret.encoders.sparse import SparseEncoder
from llmret.fileio import atomic_dir, atomic_write
from llmret.losses.infonce import InfoNCELoss
from llmret.losses.kd import ListwiseKDLoss
from llmret.losses.objective import Objective
from llmret.losses.regularizers import nonzero, regularization, warmup_weight
from llmret.saved import SavedModel

log = logging.getLogger(__name__)


@dataclass
class TrainSettings:
    """Training settings; defaults follow arXiv 2408.12194 (LoRA, InfoNCE at 0.02, lr 3e-4, 7 negatives)."""

    retriever: str = "dense"  # dense | sparse
    train_data: str = "builtin:code"  # Tevatron JSONL, a BEIR folder (qrels/train.tsv) or builtin:TASK
    corpus: str | None = None  # resolves passages given by id in a JSONL file
    output_dir: str = "runs/train"
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    lora_target_modules: list[str] | str = "all-linear"  # every attention and MLP projection
    lora_layers: int | None = None  # only the top N layers get adapters (cheaper backward on a CPU)
    learning_rate: float = 3e-4
    weight_decay: float = 0.0
    warmup_ratio: float = 0.1
    batch_size: int = 128  # queries per micro-batch; in-batch negatives come from these
    group_size: int = 8  # 1 positive + 7 hard negatives
    temperature: float | None = None  # None: 0.02 for dense (cosine), 1.0 for sparse (raw dot products)
    # cl: InfoNCE; kd: listwise KL from teacher scores; cl+kd: (1 - kd_weight) InfoNCE + kd_weight KL
    # (Lion's (InfoNCE + KL) / 2 at 0.5); marginmse: MarginMSE. Every objective but cl needs a teacher
    # 'score' on every training passage.
    objective: str = "cl"
    kd_weight: float = 0.5
    kd_student_temperature: float = 1.0  # distillation temperatures, not the contrastive one
    kd_teacher_temperature: float = 1.0
    similarity: str = "dot"
    epochs: float = 1.0
    max_steps: int | None = None
    max_queries: int | None = None
    grad_accum: int = 1
    grad_checkpointing: bool = False
    max_grad_norm: float = 1.0
    mixed_precision: str = "auto"  # auto: bf16 where the GPU supports it, else none (CPU bf16 is slow)
    seed: int = 42
    save_steps: int = 0  # 0: only at the end
    logging_steps: int = 10
    tensorboard: bool = False
    # sparse only: Lion used FLOPS with weights 0.05 (queries) and 0.04 (passages) next to ranking weight 1
    regularizer: str = "flops"  # flops | l1
    query_reg_weight: float = 0.05
    passage_reg_weight: float = 0.04
    reg_warmup_ratio: float = 0.33  # the weights rise quadratically over this share of the steps

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
    from llmret.data.negatives import mine_bm25_negatives
    from llmret.data.training import read_training, resolve_passages
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
    return examples[: settings.max_queries] if settings.max_queries else examples


def make_batch(encoder: TextEncoder, examples: list[TrainExample], indexes: list[int], epoch: int,
               settings: TrainSettings) -> tuple[list[list[int]], list[list[int]], torch.Tensor | None]:
    """Token ids of the queries and of their passage groups (positive first), and the teacher's scores
    of each group [queries, group] when every passage has one (else None)."""
    queries = [encoder.format_query(examples[i].query) for i in indexes]
    groups = [sample_group(examples, i, epoch, settings.seed, settings.group_size) for i in indexes]
    passages = [encoder.format_passage(p.full_text()) for group in groups for p in group]
    scored = all(p.score is not None for group in groups for p in group)
    teacher = torch.tensor([[p.score for p in group] for group in groups]) if scored and groups else None
    return (encoder.tokenize(queries, encoder.settings.query_max_length),
            encoder.tokenize(passages, encoder.passage_max_length), teacher)


def forward_sorted(encoder: TextEncoder, ids: list[list[int]], chunk: int) -> torch.Tensor:
    """Vectors for ``ids`` in their order, forwarded in length-sorted chunks of ``chunk`` sequences.

    Sequences do not interact, so this gives the same vectors as one padded batch while padding far
    less: the gain is largest for passage groups, whose lengths vary most.
    """
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    parts = [encoder.forward(**encoder.collate([ids[i] for i in order[s:s + chunk]])) for s in range(0, len(ids), chunk)]
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.tensor(order)] = torch.arange(len(order))
    return torch.cat(parts)[inverse.to(parts[0].device)]


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
BOOKKEEPING = ("save_steps", "logging_steps", "tensorboard", "output_dir")


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
          on_step: Callable[[int, float], None] | None = None) -> Path:
    """Train and return the folder of the final model (``OUTPUT/final``).

    ``resume`` continues from the newest checkpoint; settings that differ from the ones the run
    started with are an error naming them (``force`` accepts them).
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
    examples = load_examples(settings)
    if settings.objective != "cl":
        require_teacher_scores(examples, f"objective '{settings.objective}'")  # before the model loads
    if settings.retriever not in ("dense", "sparse"):
        raise ValueError(f"retriever must be dense or sparse, not '{settings.retriever}'")
    sparse = settings.retriever == "sparse"
    backbone = load_backbone(settings.encoder.model, dtype=DTYPES[settings.encoder.dtype or "float32"], lm_head=sparse)
    encoder = (SparseEncoder if sparse else DenseEncoder)(backbone, settings.encoder, accelerator.device)
    if settings.temperature is None:  # resolved here, so the saved config shows the value used
        settings.temperature = 1.0 if sparse else 0.02
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
    total = settings.max_steps or math.ceil(steps_per_epoch * settings.epochs)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    # The scheduler stays out of accelerator.prepare: prepared, it steps once per process, which is
    # right only when each process takes its own batches; here every process takes a share of the
    # same global batch, so the rate must follow the global step (stepped below once per update).
    scheduler = get_linear_schedule_with_warmup(optimizer, int(settings.warmup_ratio * total), total)
    model, optimizer = accelerator.prepare(model, optimizer)
    encoder.model = model
    objective = Objective(settings.objective, InfoNCELoss(settings.temperature, settings.similarity),
                          ListwiseKDLoss(settings.kd_student_temperature, settings.kd_teacher_temperature),
                          settings.kd_weight)
    reg_warmup = int(settings.reg_warmup_ratio * total)

    start = 0
    if ckpt is not None:
        state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=False)
        if state.get("world_size", world) != world:
            raise ValueError(f"{ckpt}: saved by {state['world_size']} processes; resume it with as many (now {world})")
        missing = accelerator.unwrap_model(model).load_state_dict(state["model"], strict=False)
        if missing.unexpected_keys:
            raise ValueError(f"{ckpt}: checkpoint does not match the model ({missing.unexpected_keys[:3]} ...)")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler") is not None and getattr(accelerator, "scaler", None) is not None:
            accelerator.scaler.load_state_dict(state["scaler"])
        rng_file = ckpt / f"rng-{rank}.pt"
        if not rng_file.is_file():
            raise ValueError(f"{rng_file}: this process's random state is missing from the checkpoint")
        _set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=False))
        start = state["step"]
        log.info("resumed from %s at step %d of %d", ckpt, start, total)
    elif resume:
        log.info("no checkpoint in %s: starting from scratch", out)

    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        _trim_log(out / "log.jsonl", start)  # a fresh run starts an empty log; a resumed one drops what followed its checkpoint
        with atomic_write(out / "train_config.yaml") as handle:
            yaml.safe_dump(used, handle, sort_keys=False)
    writer = None
    if settings.tensorboard and accelerator.is_main_process:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tensorboard"))

    micro = settings.batch_size
    bar = tqdm(total=total, initial=start, desc="training", disable=not accelerator.is_main_process)
    tokens, clock = 0, time.perf_counter()
    stats: dict[str, float] = {}
    for step in range(start, total):
        epoch, within = divmod(step, steps_per_epoch)
        order = epoch_order(len(examples), epoch, settings.seed)
        for a in range(settings.grad_accum):
            begin = (within * settings.grad_accum + a) * micro
            indexes = order[begin:begin + micro][rank::world]  # each process its share of the batch
            q, p, teacher = make_batch(encoder, examples, indexes, epoch, settings)
            with accelerator.accumulate(model):
                q_reps, p_reps = forward_sorted(encoder, q, micro), forward_sorted(encoder, p, micro)
                parts = objective(q_reps, p_reps, teacher)
                loss = parts.pop("loss")
                stats = {f"{name}_loss": float(value.detach()) for name, value in parts.items()}
                if sparse:
                    reg = warmup_weight(settings.query_reg_weight, step, reg_warmup) * regularization(q_reps, settings.regularizer) \
                        + warmup_weight(settings.passage_reg_weight, step, reg_warmup) * regularization(p_reps, settings.regularizer)
                    stats |= {"reg_loss": float(reg.detach()), "q_nonzero": nonzero(q_reps), "p_nonzero": nonzero(p_reps)}
                    loss = loss + reg
                accelerator.backward(loss)
                if accelerator.sync_gradients and settings.max_grad_norm:
                    accelerator.clip_grad_norm_(params, settings.max_grad_norm)
                optimizer.step()
                if accelerator.sync_gradients:
                    scheduler.step()
                optimizer.zero_grad()
            tokens += sum(map(len, q)) + sum(map(len, p))
        done = step + 1
        value = float(loss.detach())
        bar.update(1)
        if done % settings.logging_steps == 0 or done == total:
            elapsed = time.perf_counter() - clock
            record = {"step": done, "loss": value, "lr": scheduler.get_last_lr()[0], "tokens_per_s": tokens / elapsed,
                      **stats}
            bar.set_postfix(loss=f"{value:.4f}", lr=f"{record['lr']:.2e}", tok_s=f"{record['tokens_per_s']:.0f}",
                            **{k: f"{v:.0f}" for k, v in stats.items() if k.endswith("nonzero")})
            if accelerator.is_main_process:
                with open(out / "log.jsonl", "a") as handle:
                    handle.write(json.dumps(record) + "\n")
                if writer:
                    for key, val in record.items():
                        if key != "step":
                            writer.add_scalar(f"train/{key}", val, done)
            tokens, clock = 0, time.perf_counter()
        if settings.save_steps and done % settings.save_steps == 0 and done < total:
            save_checkpoint(out / f"checkpoint-{done}", accelerator.unwrap_model(model), optimizer, scheduler, done,
                            accelerator)
        if on_step is not None:
            on_step(done, value)
    bar.close()
    final = out / "final"
    if accelerator.is_main_process:
        save_final(final, accelerator.unwrap_model(model), encoder, settings)
    accelerator.wait_for_everyone()
    return final


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
