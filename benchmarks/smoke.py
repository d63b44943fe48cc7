"""What the benchmarks' ``--smoke`` runs use: tiny random models and synthetic texts, made in seconds.

The smoke size runs every code path of a benchmark (llmret and its anchor, in one run) in seconds, so
the test suite can run it and a benchmark never silently breaks. Its figures mean nothing.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

WORDS = [f"w{i}" for i in range(200)]


def texts(n: int, seed: int = 0, words: int = 24) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, words))) for _ in range(n)]


def tiny_model(kind: str) -> str:
    """A saved random-initialised ``llama`` (causal LM) or ``bert`` (masked LM) folder, with a word-level tokenizer."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertForMaskedLM, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    folder = Path(tempfile.mkdtemp(prefix=f"smoke-{kind}-"))
    if kind == "llama":
        specials = ["<pad>", "<s>", "</s>", "<unk>"]
        named = dict(bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
        single = "<s> $A"
    else:
        specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
        named = dict(cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]", mask_token="[MASK]")
        single = "[CLS] $A [SEP]"
    vocab = {t: i for i, t in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=named["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    used = [t for t in specials if t in single.split()]
    tok.post_processor = processors.TemplateProcessing(single=single, special_tokens=[(t, vocab[t]) for t in used])
    PreTrainedTokenizerFast(tokenizer_object=tok, **named).save_pretrained(folder)
    size = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=128)
    if kind == "llama":
        LlamaForCausalLM(LlamaConfig(vocab_size=len(vocab), num_key_value_heads=2, bos_token_id=1, eos_token_id=2,
                                     pad_token_id=0, **size)).save_pretrained(folder)
    else:
        BertForMaskedLM(BertConfig(vocab_size=len(vocab), pad_token_id=0, **size)).save_pretrained(folder)
    return str(folder)
