"""The optimisation loop every trainer in llmret shares: retrieval training and MNTP alike.

A trainer supplies the prepared model's micro-step (forward, loss, backward; it returns the loss parts
and the tokens it processed) and what a saved model is; the loop owns the optimizer, the warm-up
schedule, gradient accumulation and clipping, checkpoints with every process's random state, the
resume check, and the callbacks (logging, checkpoints, evaluation, the caller's own).

``OUTPUT/checkpoint-N/state.pt`` every ``save_steps`` (``rng-R.pt`` per process), ``config.yaml`` or
the caller's name for the settings used, ``log.jsonl``, and ``final/`` at the end.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from llmret.losses.distributed import keep_group_until_exit
from llmret.training import trackers
from llmret.training.callbacks import Callback, CheckpointCallback, LogCallback, LoopState
from llmret.training.settings import LoopSettings
from llmret.util.errors import InputError
from llmret.util.fileio import atomic_write, write_json

log = logging.getLogger(__name__)

MicroStep = Callable[[torch.nn.Module, int, int], tuple[dict[str, float], int]]
"""(prepared model, step, micro-batch index) -> (loss parts incl. ``loss``, tokens processed here)."""


@dataclass
class Trainer:
    """What a trainer tells the loop about itself, beside the loop's settings: the file its settings are
    saved to (and compared with on resume), which of them are bookkeeping (a resumed run may change those),
    its progress bar's label, its micro-batch per process (DeepSpeed's config asks for it), and the
    learning-rate schedule's length where it outlasts the run (MNTP)."""

    config_name: str = "train_config.yaml"
    bookkeeping: frozenset[str] = frozenset()
    name: str = "training"
    micro_batch: int | None = None
    schedule_steps: int | None = None


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


def sharded(accelerator: Any) -> bool:
    """Whether each process holds only its shard of the weights and optimizer state (FSDP, DeepSpeed
    ZeRO-3): checkpoints then go through accelerate's sharded save and load, and a saved model is
    gathered from every process first."""
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)


def save_checkpoint(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    step: int, accelerator: Any) -> None:
    """The whole training state: trainable weights, optimizer, scheduler, the fp16 loss scaler, and the
    random state of every process (each rank writes its own), written atomically; ``state.pt`` is
    written last, after every rank has written, so its presence marks a complete checkpoint. Sharded
    (FSDP, ZeRO-3), every process writes its shards of the weights and optimizer state through
    ``accelerator.save_state`` into ``sharded/``, and ``state.pt`` holds the rest."""
    with atomic_write(folder / f"rng-{accelerator.process_index}.pt", "wb") as handle:
        torch.save(_rng_state(), handle)
    if sharded(accelerator):
        accelerator.save_state(str(folder / "sharded"))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        scaler = getattr(accelerator, "scaler", None)
        state = {"step": step, "scheduler": scheduler.state_dict(),
                 "scaler": scaler.state_dict() if scaler is not None else None, "world_size": accelerator.num_processes}
        if sharded(accelerator):
            state["sharded"] = True
        else:
            state |= {"model": _trainable_state(model), "optimizer": optimizer.state_dict()}
        with atomic_write(folder / "state.pt", "wb") as handle:
            torch.save(state, handle)
    accelerator.wait_for_everyone()


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint (one whose state.pt was fully written)."""
    done = [p for p in output_dir.glob("checkpoint-*") if (p / "state.pt").is_file()]
    return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)


def settings_changes(saved: dict[str, Any], now: dict[str, Any], bookkeeping: frozenset[str] = frozenset(),
                     prefix: str = "") -> list[str]:
    """Names of the settings (``encoder.x`` for nested ones) that differ between two settings dicts, but
    for the ``bookkeeping`` ones (what is logged or saved, not what is trained)."""
    changed = []
    for key in sorted(set(saved) | set(now)):
        if key in bookkeeping and not prefix:
            continue
        old, new = saved.get(key), now.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changed += settings_changes(old, new, prefix=f"{prefix}{key}.")
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




def mixed_precision(choice: str) -> str:
    """auto: bf16 where the GPU supports it, else none (CPU bf16 matmul is slow)."""
    if choice != "auto":
        return choice
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def _restore(ckpt: Path, accelerator: Any, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             scheduler: Any) -> int:
    """Load a checkpoint's training state into this process; returns its step."""
    state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=False)
    world = accelerator.num_processes
    if state.get("world_size", world) != world:
        raise InputError(f"{ckpt}: saved by {state['world_size']} processes; resume it with as many (now {world})")
    if state.get("sharded"):
        if not sharded(accelerator):
            raise InputError(f"{ckpt}: saved sharded (FSDP or DeepSpeed); resume it under the same launch config")
        accelerator.load_state(str(ckpt / "sharded"))  # this process's shards of weights and optimizer
    else:
        missing = accelerator.unwrap_model(model).load_state_dict(state["model"], strict=False)
        if missing.unexpected_keys:
            raise InputError(f"{ckpt}: checkpoint does not match the model ({missing.unexpected_keys[:3]} ...)")
        optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler") is not None and getattr(accelerator, "scaler", None) is not None:
        accelerator.scaler.load_state_dict(state["scaler"])
    rng_file = ckpt / f"rng-{accelerator.process_index}.pt"
    if not rng_file.is_file():
        raise InputError(f"{rng_file}: this process's random state is missing from the checkpoint")
    _set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=False))
    return int(state["step"])


def _logged_flops(path: Path) -> float:
    """The cumulative FLOPs of the last log record (a resumed run counts on from there)."""
    lines = [line for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    return float(json.loads(lines[-1]).get("flops", 0.0)) if lines else 0.0


SaveModel = Callable[[torch.nn.Module, Path, "dict[str, torch.Tensor] | None"], None]
"""(unwrapped model, folder, its full state dict when gathered from shards, else None) -> writes a loadable model."""


def run_loop(accelerator: Any, model: torch.nn.Module, micro_step: MicroStep, total: int, settings: LoopSettings,
             used: dict[str, Any], *, trainer: Trainer, save_model: SaveModel, resume: bool = False,
             force: bool = False, prepared: Callable[[torch.nn.Module], None] | None = None,
             callbacks: Sequence[Callback] = (), on_step: Callable[[int, float], None] | None = None,
             flops_per_token: float = 0.0, records: dict[str, Any] | None = None) -> Path:
    """Run ``total`` optimizer steps of ``micro_step`` over ``model`` and save ``final/``; returns it.

    ``used`` are the settings written to the output folder; on ``resume`` they must equal the saved
    ones but for ``trainer.bookkeeping`` (``force`` accepts differences). ``prepared`` receives the model as accelerate wrapped it.
    ``save_model(unwrapped model, folder, state dict)`` writes a loadable model (main process only; the
    state dict is gathered from every process first when they hold shards). ``records``
    (file name -> JSON object) are written beside the settings once the resume check has passed.
    """
    # long: the optimizer, scheduler and callbacks share one run's state; split, they would pass it all around
    from transformers import get_linear_schedule_with_warmup

    out = Path(settings.output_dir)
    ckpt = latest_checkpoint(out) if resume else None
    if ckpt is not None and (out / trainer.config_name).is_file() and not force:
        changed = settings_changes(yaml.safe_load((out / trainer.config_name).read_text()) or {}, used,
                                   trainer.bookkeeping)
        if changed:
            raise InputError(f"{out / trainer.config_name}: resuming with other settings than the run started with: "
                             f"{'; '.join(changed)} (pass --force to accept them)")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)
    # The scheduler stays out of accelerator.prepare: prepared, it steps once per process, which is
    # right only when each process takes its own batches; here every process takes a share of the
    # same global batch, so the rate must follow the global step (stepped below once per update).
    length = max(trainer.schedule_steps or total, total)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(settings.warmup_ratio * length), length)
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.DEEPSPEED and trainer.micro_batch:
        # DeepSpeed reads its micro-batch from a prepared DataLoader; batches are built here instead
        accelerator.state.deepspeed_plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = trainer.micro_batch
    model, optimizer = accelerator.prepare(model, optimizer)
    keep_group_until_exit()  # DDP's reducer must not hold the group's last reference
    params = [p for p in model.parameters() if p.requires_grad]  # FSDP2 replaces them with sharded ones
    if prepared is not None:
        prepared(model)

    start = 0
    if ckpt is not None:
        start = _restore(ckpt, accelerator, model, optimizer, scheduler)
        log.info("resumed from %s at step %d of %d", ckpt, start, total)
    elif resume:
        log.info("no checkpoint in %s: starting from scratch", out)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        _trim_log(out / "log.jsonl", start)  # a fresh run starts an empty log; a resumed one drops what followed its checkpoint
        with atomic_write(out / trainer.config_name) as handle:
            yaml.safe_dump(used, handle, sort_keys=False)
        for name, record in (records or {}).items():
            write_json(out / name, record)

    def save_state(folder: Path, state: LoopState) -> None:
        save_checkpoint(folder, accelerator.unwrap_model(model), optimizer, scheduler, state.step, accelerator)

    bar = tqdm(total=total, initial=start, desc=trainer.name, disable=not accelerator.is_main_process)
    trackers.start(accelerator, settings.report_to, out.name, used)
    loop = [LogCallback(settings.logging_steps, bar, _logged_flops(out / "log.jsonl") if start else 0.0),
            CheckpointCallback(settings.save_steps, save_state), *callbacks]
    def save_loadable(folder: Path) -> None:  # called on every process: gathering shards is a collective
        state_dict = accelerator.get_state_dict(model) if sharded(accelerator) else None
        if accelerator.is_main_process:
            save_model(accelerator.unwrap_model(model), folder, state_dict)

    state = LoopState(start, total, out, accelerator, model, optimizer, scheduler, save_loadable,
                      flops_per_token=flops_per_token)
    for step in range(start, total):
        state.tokens = 0
        for micro in range(settings.grad_accum):
            with accelerator.accumulate(model):
                state.record, tokens = micro_step(model, step, micro)
                if accelerator.sync_gradients and settings.max_grad_norm:
                    accelerator.clip_grad_norm_(params, settings.max_grad_norm)
                optimizer.step()
                if accelerator.sync_gradients:
                    scheduler.step()
                optimizer.zero_grad()
            state.tokens += tokens
        if accelerator.num_processes > 1:  # the global step's tokens, for tokens/s and FLOPs
            state.tokens = int(accelerator.reduce(torch.tensor(state.tokens, device=accelerator.device), reduction="sum"))
        state.step = step + 1
        for callback in loop:
            callback.on_step(state)
        if on_step is not None:
            on_step(state.step, state.record["loss"])
    bar.close()
    final = out / "final"
    state.save_model(final)
    accelerator.wait_for_everyone()
    accelerator.end_training()  # closes the trackers (none: nothing to do)
    return final
