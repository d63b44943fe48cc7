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

import json
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

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


def run_mntp(settings: MNTPSettings) -> Path:
    """Adapt ``settings.model`` and return the merged model folder (``OUTPUT/final``)."""
    from peft import LoraConfig, get_peft_model
    from transformers import get_linear_schedule_with_warmup

    from llmret.backbone import load_backbone

    torch.manual_seed(settings.seed)
    texts = corpus_texts(settings.data)  # bad data fails before the model loads
    if len(texts) < settings.batch_size:
        raise ValueError(f"{settings.data}: {len(texts)} texts are fewer than one batch of {settings.batch_size}")
    backbone = load_backbone(settings.model, dtype=DTYPES["float32"], lm_head=True)
    if backbone.info.kind != "decoder":
        raise ValueError(f"{settings.model}: MNTP adapts decoders; encoders are bidirectional already")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    encoder = SparseEncoder(backbone, EncoderSettings(model=settings.model, bidirectional=True), device)
    tok = backbone.tokenizer
    mask_id = next(i for i in (tok.mask_token_id, tok.unk_token_id, tok.pad_token_id) if i is not None)
    model = get_peft_model(encoder.model, LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha,
                                                     target_modules="all-linear", bias="none"))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(0.1 * settings.max_steps), settings.max_steps)
    generator = torch.Generator().manual_seed(settings.seed)
    out = Path(settings.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    per_epoch = len(texts) // settings.batch_size
    bar = tqdm(range(settings.max_steps), desc="mntp")
    with open(out / "log.jsonl", "w") as handle:
        for step in bar:
            epoch, within = divmod(step, per_epoch)
            rows = epoch_order(len(texts), epoch, settings.seed)[within * settings.batch_size:(within + 1) * settings.batch_size]
            batch = encoder.collate(encoder.tokenize([texts[i] for i in rows], settings.max_length))
            masked, chosen = mask_tokens(batch["input_ids"].cpu(), batch["attention_mask"].cpu(), mask_id,
                                         settings.mask_ratio, generator)
            loss = mntp_loss(model, encoder, batch["input_ids"], batch["attention_mask"], masked.to(device), chosen.to(device))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"MNTP loss became {value} at step {step + 1}; lower the learning rate")
            handle.write(json.dumps({"step": step + 1, "loss": value}) + "\n")
            bar.set_postfix(loss=f"{value:.3f}")
    merged = model.merge_and_unload()
    final = out / "final"
    info = replace(backbone.info, bidirectional=True)
    with atomic_dir(final) as tmp:
        merged.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        SavedModel(base_model=settings.model, model_info=info, adaptation={"mntp": to_dict(settings)}).write(tmp)
    return final
