"""Masked next-token prediction (MNTP): adapting a decoder to bidirectional attention before retrieval training.

A causal LM switched to bidirectional attention has never seen the future, and its states are
poor at first. MNTP (LLM2Vec; the Lion recipe's first stage) trains LoRA with full attention on the
target corpus: a share of the input tokens is replaced by a mask token, and the token at a masked
position i is predicted from the output at position i - 1, as next-token prediction does, so the
LM head keeps its meaning. Only masked positions are projected onto the vocabulary.

The result is merged into a plain causal-LM folder whose ``llmret.json`` says it is bidirectional,
so ``llmret train --model FOLDER`` (dense or sparse) starts from it with full attention.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from llmret.config import EncoderSettings, to_dict
from llmret.data.sampling import epoch_order
from llmret.encoders.base import DTYPES
from llmret.encoders.sparse import SparseEncoder
from llmret.encoders.vocab_head import head_detached
from llmret.fileio import atomic_dir
from llmret.saved import SavedModel

log = logging.getLogger(__name__)


@dataclass
class MNTPSettings:
    model: str = "smollm2-135m"
    data: str = "builtin:code"  # whose corpus to adapt on: builtin:TASK, a BEIR folder or a corpus JSONL
    output_dir: str = "runs/mntp"
    max_steps: int = 100
    batch_size: int = 16
    max_length: int = 128
    mask_ratio: float = 0.2
    learning_rate: float = 1e-4
    lora_r: int = 16
    lora_alpha: int = 32
    seed: int = 42
    save_steps: int = 0  # full state every N steps, for resume
    logging_steps: int = 1


def corpus_texts(spec: str) -> list[str]:
    from llmret.data.corpus import Corpus
    from llmret.registry import resolve_folder

    path = resolve_folder(spec, "train")
    corpus = Corpus.from_file(path / "corpus.jsonl" if path.is_dir() else path)
    return [doc.full_text() for doc in corpus]


def mask_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, mask_id: int, ratio: float,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked inputs, and a boolean [batch, length] of masked positions (never the first real token,
    which has no previous position to predict it from)."""
    first = attention_mask.int().argmax(dim=1, keepdim=True)
    positions = torch.arange(input_ids.shape[1]).unsqueeze(0)
    eligible = attention_mask.bool() & (positions > first)
    chosen = (torch.rand(input_ids.shape, generator=generator) < ratio) & eligible
    return input_ids.masked_fill(chosen, mask_id), chosen


def mntp_loss(model: torch.nn.Module, encoder: SparseEncoder, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              masked_ids: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the original token at each masked position i from the output at i - 1."""
    with head_detached(model) as head:
        hidden = model(**encoder.model_inputs(masked_ids, attention_mask)).logits
    rows, cols = chosen.nonzero(as_tuple=True)
    logits = head.finish(head.logits(hidden[rows, cols - 1], 0, head.vocab_size))
    return F.cross_entropy(logits.float(), input_ids[rows, cols])


def run_mntp(settings: MNTPSettings, *, resume: bool = False, force: bool = False,
             on_step: Callable[[int, float], None] | None = None) -> Path:
    """Adapt ``settings.model`` and return the merged model folder (``OUTPUT/final``).

    It runs on :func:`llmret.loop.run_loop`, as retrieval training does: several processes share each
    batch, checkpoints every ``save_steps`` resume exactly (masks are drawn from the step's own seed),
    and ``log.jsonl`` has the loss and tokens/s.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from peft import LoraConfig, get_peft_model

    from llmret.backbone import load_backbone
    from llmret.loop import LoopSettings, run_loop

    accelerator = Accelerator()
    set_seed(settings.seed)
    texts = corpus_texts(settings.data)  # bad data fails before the model loads
    if len(texts) < settings.batch_size:
        raise ValueError(f"{settings.data}: {len(texts)} texts are fewer than one batch of {settings.batch_size}")
    if settings.batch_size % accelerator.num_processes:
        raise ValueError(f"batch_size {settings.batch_size} does not split evenly over {accelerator.num_processes} processes")
    backbone = load_backbone(settings.model, dtype=DTYPES["float32"], lm_head=True)
    if backbone.info.kind != "decoder":
        raise ValueError(f"{settings.model}: MNTP adapts decoders; encoders are bidirectional already")
    encoder = SparseEncoder(backbone, EncoderSettings(model=settings.model, bidirectional=True), accelerator.device)
    tok = backbone.tokenizer
    mask_id = next(i for i in (tok.mask_token_id, tok.unk_token_id, tok.pad_token_id) if i is not None)
    model = get_peft_model(encoder.model, LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha,
                                                     target_modules="all-linear", bias="none"))
    model.train()
    per_epoch = len(texts) // settings.batch_size
    world, rank = accelerator.num_processes, accelerator.process_index

    def micro_step(prepared: torch.nn.Module, step: int, micro: int) -> tuple[dict[str, float], int]:
        epoch, within = divmod(step, per_epoch)
        rows = epoch_order(len(texts), epoch, settings.seed)[within * settings.batch_size:(within + 1) * settings.batch_size]
        batch = encoder.collate(encoder.tokenize([texts[i] for i in rows[rank::world]], settings.max_length))
        generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + step * 1_009 + rank)
        masked, chosen = mask_tokens(batch["input_ids"].cpu(), batch["attention_mask"].cpu(), mask_id,
                                     settings.mask_ratio, generator)
        loss = mntp_loss(prepared, encoder, batch["input_ids"], batch["attention_mask"], masked.to(accelerator.device),
                         chosen.to(accelerator.device))
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"MNTP loss became {value} at step {step + 1}; lower the learning rate")
        accelerator.backward(loss)
        return {"loss": value}, int(batch["attention_mask"].sum())

    def save_model(unwrapped: torch.nn.Module, folder: Path) -> None:
        merged = unwrapped.merge_and_unload()  # only at the end: merging changes the model
        with atomic_dir(folder) as tmp:
            merged.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            SavedModel(base_model=settings.model, model_info=replace(backbone.info, bidirectional=True),
                       adaptation={"mntp": to_dict(settings)}).write(tmp)

    loop = LoopSettings(settings.output_dir, settings.learning_rate, warmup_ratio=0.1, max_grad_norm=1.0,
                        save_steps=settings.save_steps, logging_steps=settings.logging_steps,
                        config_name="mntp_config.yaml", name="mntp")
    return run_loop(accelerator, model, micro_step, settings.max_steps, loop, to_dict(settings), save_model=save_model,
                    resume=resume, force=force, on_step=on_step)
