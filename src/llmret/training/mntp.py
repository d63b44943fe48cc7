"""Masked next-token prediction (MNTP): adapting a decoder to bidirectional attention before retrieval training.

A causal LM switched to bidirectional attention has never seen the future, and its states are
poor at first. MNTP (LLM2Vec; the Lion recipe's first stage) trains LoRA with full attention on the
target corpus: a share of the input tokens is chosen (never special tokens), and the token at a chosen
position i is predicted from the output at position i - 1, as next-token prediction does, so the
LM head keeps its meaning. Only chosen positions are projected onto the vocabulary. As in LLM2Vec and
the Lion code, the choice is transformers' own masked-LM collator (80% of the chosen tokens become
the mask token, "_" for decoders that have none, 10% a random token, 10% stay), texts are packed end
to end into blocks of ``max_length`` tokens (no padding), and LoRA has dropout.

The result is merged into a plain causal-LM folder whose ``llmret.json`` says it is bidirectional,
so ``llmret train --model FOLDER`` (dense or sparse) starts from it with full attention; the adapter
is kept unmerged in its ``adapter/`` folder, which ``llmret train --continue-adapter`` trains further
for retrieval (as Lion does, keeping the MNTP adapter's rank, alpha and dropout 0.05) where a fresh
LoRA over the merged weights is the default.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from llmret.data.sampling import epoch_order
from llmret.data.spec import load_corpus
from llmret.encoders.base import DTYPES
from llmret.encoders.settings import EncoderSettings
from llmret.encoders.sparse import SparseEncoder
from llmret.encoders.vocab_head import head_detached
from llmret.models.backbone import load_backbone
from llmret.models.saved import SavedModel
from llmret.training import trackers
from llmret.training.loop import Trainer, mixed_precision, run_loop
from llmret.training.settings import LoopSettings, MNTPSettings
from llmret.util.errors import InputError
from llmret.util.fileio import atomic_dir, check_output
from llmret.util.settings import bookkeeping, to_dict

log = logging.getLogger(__name__)

ADAPTER = "adapter"  # the MNTP LoRA adapter, unmerged, inside the merged model's folder


def corpus_texts(spec: str) -> list[str]:

    return [doc.full_text() for doc in load_corpus(spec, "train")]


def pack_blocks(ids: list[list[int]], size: int) -> list[list[int]]:
    """Token ids of consecutive texts joined end to end and cut into blocks of ``size`` (the remainder
    dropped), as transformers' run_mlm groups texts: every position of a block is a real token."""
    flat = [token for seq in ids for token in seq]
    return [flat[start:start + size] for start in range(0, len(flat) - size + 1, size)]


def masked_lm_collator(tokenizer: Any, ratio: float, mask_token: str | None = None) -> Any:
    """transformers' masked-LM collator (80% mask token, 10% random, 10% kept) for ``tokenizer``.

    A decoder has no mask token: LLM2Vec and Lion use "_"; the collator gets a copy of the tokenizer
    with it set, so the encoder's own tokenizer (and its special tokens) stay as they were.
    """
    from transformers import DataCollatorForLanguageModeling

    token = mask_token or tokenizer.mask_token
    if token is None:
        token = "_"
    if tokenizer.convert_tokens_to_ids(token) in (None, tokenizer.unk_token_id):
        raise InputError(f"mask token {token!r} is not in the vocabulary of {tokenizer.name_or_path}; "
                         "name one that is with --mask-token")
    if token != tokenizer.mask_token:
        tokenizer = copy.deepcopy(tokenizer)
        tokenizer.mask_token = token
    return DataCollatorForLanguageModeling(tokenizer, mlm_probability=ratio)


def mask_tokens(collator: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, special_ids: list[int],
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked inputs, and a boolean [batch, length] of chosen positions. Never chosen: padding, special
    tokens, and the first real token (no previous position predicts it)."""
    first = attention_mask.int().argmax(dim=1, keepdim=True)
    positions = torch.arange(input_ids.shape[1]).unsqueeze(0)
    keep = ~attention_mask.bool() | (positions <= first) | torch.isin(input_ids, torch.tensor(special_ids))
    collator.generator = generator  # the step's own seed, so a resumed run draws the same masks
    masked, labels = collator.torch_mask_tokens(input_ids.clone(), special_tokens_mask=keep)
    return masked, labels != -100


def mntp_loss(model: torch.nn.Module, encoder: SparseEncoder, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              masked_ids: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the original token at each masked position i from the output at i - 1."""
    with head_detached(model) as head:
        hidden = model(**encoder.model_inputs(masked_ids, attention_mask)).logits
    rows, cols = chosen.nonzero(as_tuple=True)
    logits = head.finish(head.logits(hidden[rows, cols - 1], slice(None)))
    return F.cross_entropy(logits.float(), input_ids[rows, cols])


def run_mntp(settings: MNTPSettings, *, resume: bool = False, force: bool = False,
             on_step: Callable[[int, float], None] | None = None) -> Path:
    """Adapt ``settings.model`` and return the merged model folder (``OUTPUT/final``).

    It runs on :func:`llmret.training.loop.run_loop`, as retrieval training does: several processes share each
    batch, checkpoints every ``save_steps`` resume exactly (masks are drawn from the step's own seed),
    and ``log.jsonl`` has the loss and tokens/s.
    """
    # long: micro_step and save_model are closures over the run's blocks, collator and backbone
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from peft import LoraConfig, get_peft_model

    accelerator = Accelerator(mixed_precision=mixed_precision(settings.mixed_precision),
                              gradient_accumulation_steps=settings.grad_accum,
                              **trackers.accelerator_options(settings.report_to, settings.output_dir))
    set_seed(settings.seed)
    check_output(settings.output_dir)
    texts = corpus_texts(settings.data)  # bad data fails before the model loads
    if settings.batch_size % accelerator.num_processes:
        raise InputError(f"batch_size {settings.batch_size} does not split evenly over {accelerator.num_processes} processes")
    backbone = load_backbone(settings.model, dtype=DTYPES["float32"], lm_head=True)
    if backbone.info.kind != "decoder":
        raise InputError(f"{settings.model}: MNTP adapts decoders; encoders are bidirectional already")
    # The encoder that reads through the LM head: its bidirectional attention masks (model_inputs), padding
    # (collate) and tokenising are what the retriever trained after MNTP will read with, so MNTP adapts the
    # model to exactly those inputs rather than to a second implementation of them.
    encoder = SparseEncoder(backbone, EncoderSettings(model=settings.model, bidirectional=True), accelerator.device)
    tok = backbone.tokenizer
    collator = masked_lm_collator(tok, settings.mask_ratio, settings.mask_token)
    if settings.pack:
        units = pack_blocks(tok(texts, add_special_tokens=True)["input_ids"], settings.max_length)
    else:
        units = encoder.tokenize(texts, settings.max_length)
    per_epoch = len(units) // (settings.batch_size * settings.grad_accum)  # optimizer steps
    if per_epoch == 0:
        raise InputError(f"{settings.data}: {len(units)} {'blocks' if settings.pack else 'texts'} are fewer than one "
                         f"step's {settings.batch_size * settings.grad_accum}")
    torch.manual_seed(settings.seed)  # the adapters drawn from the seed alone, however the model loaded
    model = get_peft_model(encoder.model, LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha,
                                                     lora_dropout=settings.lora_dropout,
                                                     target_modules=settings.lora_target_modules, bias="none"))
    set_seed(settings.seed)  # and the run's random numbers too
    model.train()
    world, rank = accelerator.num_processes, accelerator.process_index

    def micro_step(prepared: torch.nn.Module, step: int, micro: int) -> tuple[dict[str, float], int]:
        epoch, within = divmod(step, per_epoch)
        begin = (within * settings.grad_accum + micro) * settings.batch_size
        rows = epoch_order(len(units), epoch, settings.seed)[begin:begin + settings.batch_size]
        batch = encoder.collate([units[i] for i in rows[rank::world]])
        generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + (step * settings.grad_accum + micro) * 1_009
                                                  + rank)
        masked, chosen = mask_tokens(collator, batch["input_ids"].cpu(), batch["attention_mask"].cpu(),
                                     tok.all_special_ids, generator)
        loss = mntp_loss(prepared, encoder, batch["input_ids"], batch["attention_mask"], masked.to(accelerator.device),
                         chosen.to(accelerator.device))
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"MNTP loss became {value} at step {step + 1}; lower the learning rate")
        accelerator.backward(loss)
        return {"loss": value}, int(batch["attention_mask"].sum())

    def save_model(unwrapped: torch.nn.Module, folder: Path, state_dict: dict[str, torch.Tensor] | None) -> None:
        if state_dict is not None:  # gathered from FSDP / ZeRO-3 shards: the full weights, adapters included
            unwrapped.load_state_dict(state_dict)
        info = replace(backbone.info, bidirectional=True)
        with atomic_dir(folder) as tmp:
            # The adapter itself too, before merging: Lion trains its MNTP adapter further for retrieval
            # (``train --continue-adapter``) instead of a fresh one over the merged weights.
            unwrapped.save_pretrained(tmp / ADAPTER)
            SavedModel(base_model=settings.model, lora=True, model_info=info,
                       adaptation={"mntp": to_dict(settings)}).write(tmp / ADAPTER)
            merged = unwrapped.merge_and_unload()  # only at the end: merging changes the model
            merged.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            SavedModel(base_model=settings.model, model_info=info, adaptation={"mntp": to_dict(settings)}).write(tmp)

    schedule = math.ceil(per_epoch * settings.schedule_epochs) if settings.schedule_epochs else None
    total = settings.max_steps or schedule or per_epoch  # default: one epoch of blocks
    trainer = Trainer(config_name="mntp_config.yaml", name="mntp", schedule_steps=schedule,
                      bookkeeping=frozenset(bookkeeping(type(settings))), micro_batch=settings.batch_size // world)
    return run_loop(accelerator, model, micro_step, total, settings.part(LoopSettings), to_dict(settings),
                    trainer=trainer, save_model=save_model, resume=resume, force=force, on_step=on_step)
