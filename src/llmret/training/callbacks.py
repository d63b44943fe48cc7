"""What happens around training steps: logging, checkpoints, evaluation. The loop calls each
callback after every optimizer step with the same :class:`LoopState`; a callback that needs a
collective (checkpoints) runs on every process, the rest only where they write."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from llmret.util.fileio import atomic_write

log = logging.getLogger(__name__)


@dataclass
class LoopState:
    """The loop's objects and where it stands; ``record`` holds this step's loss parts."""

    step: int  # optimizer steps done
    total: int
    out: Path
    accelerator: Any
    model: torch.nn.Module  # as prepared (DDP-wrapped on several processes)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    save_model: Callable[[Path], None]  # writes a loadable model folder (main process)
    record: dict[str, float] = field(default_factory=dict)
    tokens: int = 0  # real tokens this step, over all processes
    flops_per_token: float = 0.0

    @property
    def is_main(self) -> bool:
        return bool(self.accelerator.is_main_process)


class Callback:
    def on_step(self, state: LoopState) -> None:
        """After each optimizer step."""


class LogCallback(Callback):
    """``log.jsonl`` (and the run's experiment trackers) every ``every`` steps: loss parts, lr, tokens/s,
    cumulative FLOPs."""

    def __init__(self, every: int, bar: Any, flops_done: float = 0.0) -> None:
        self.every, self.bar, self.flops = every, bar, flops_done
        self.tokens, self.clock = 0, time.perf_counter()

    def on_step(self, state: LoopState) -> None:
        self.tokens += state.tokens
        self.flops += state.tokens * state.flops_per_token
        self.bar.update(1)
        if state.step % self.every and state.step != state.total:
            return
        elapsed = time.perf_counter() - self.clock
        record = {"step": state.step, "loss": state.record["loss"], "lr": state.scheduler.get_last_lr()[0],
                  "tokens_per_s": self.tokens / elapsed, "flops": self.flops,
                  **{k: v for k, v in state.record.items() if k != "loss"}}
        self.bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}", tok_s=f"{record['tokens_per_s']:.0f}",
                             **{k: f"{v:.0f}" for k, v in record.items() if k.endswith("nonzero")})
        if state.is_main:
            with open(state.out / "log.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")
        state.accelerator.log({k: v for k, v in record.items() if k != "step"}, step=state.step)  # trackers, if any
        self.tokens, self.clock = 0, time.perf_counter()


class CheckpointCallback(Callback):
    """The full training state every ``every`` steps (not at the end: ``final/`` is written then)."""

    def __init__(self, every: int, save: Callable[[Path, LoopState], None]) -> None:
        self.every, self.save = every, save

    def on_step(self, state: LoopState) -> None:
        if self.every and state.step % self.every == 0 and state.step < state.total:
            self.save(state.out / f"checkpoint-{state.step}", state)


class EvalCallback(Callback):
    """At the chosen steps: a loadable model in ``checkpoint-N/model``, and, given data, its scores in
    ``eval.jsonl`` (quality against training steps: the first study's data-efficiency curves).

    The model is evaluated as saved, loaded afresh, so what is scored is what a user would load;
    loading draws random numbers (adapter initialisation), so it runs in a forked random state and
    training continues exactly as without evaluation.
    """

    def __init__(self, steps: list[int], evaluate: Callable[[Path], dict[str, float]] | None) -> None:
        self.steps, self.evaluate = set(steps), evaluate

    def on_step(self, state: LoopState) -> None:
        if state.step not in self.steps:
            return
        folder = state.out / f"checkpoint-{state.step}" / "model"
        state.save_model(folder)  # on every process (gathering shards takes them all); main writes
        if state.is_main:
            if self.evaluate is not None:
                with torch.random.fork_rng(devices=[]):
                    scores = self.evaluate(folder)
                log.info("step %d: %s", state.step, ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
                _append_record(state.out / "eval.jsonl", {"step": state.step, "model": str(folder), **scores})
        state.accelerator.wait_for_everyone()


def _append_record(path: Path, record: dict[str, Any]) -> None:
    """Append a record, keeping one per step (a resumed run re-evaluates a step it had not finished)."""
    old = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    keep = [r for r in old if r["step"] != record["step"]] + [record]
    with atomic_write(path) as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in sorted(keep, key=lambda r: r["step"])))
