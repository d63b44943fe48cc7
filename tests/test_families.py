"""Every family a user would pick: llmret's vector for a text in a left- or right-padded batch equals
the vector from transformers' own forward on that text alone, with the model's default kind and pooling.

The reference numbers positions as each model does itself (RoBERTa, XLM-R and MPNet from
``padding_idx + 1``), so an encoder that numbers them otherwise fails here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from llmret.encoders.dense import DenseEncoder
from llmret.encoders.settings import EncoderSettings
from llmret.models.backbone import load_backbone

from helpers import WORDS, random_texts

SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
DECODER = dict(SMALL, num_key_value_heads=2, head_dim=8, max_position_embeddings=128)


def bpe_tokenizer(eos: str):
    """A byte-level BPE tokenizer trained on WORDS, with no BOS (Qwen's shape: transformers rebuilds
    Qwen tokenizers from BPE vocab and merges, so a word-level one would not survive saving)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([" ".join(WORDS)] * 4, trainers.BpeTrainer(
        vocab_size=400, special_tokens=[eos], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=eos)


def tokenizer(specials: list[str], single: str, **named: str):
    """A word-level fast tokenizer over WORDS with the given special tokens and template."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if single == "BPE":
        return bpe_tokenizer(named["eos_token"])
    vocab = {tok: i for i, tok in enumerate(specials + list(WORDS))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=named["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    used = [t for t in specials if t in single.split()]
    tok.post_processor = processors.TemplateProcessing(single=single, special_tokens=[(t, vocab[t]) for t in used])
    return PreTrainedTokenizerFast(tokenizer_object=tok, **named)


BERT_TOK = (["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"], "[CLS] $A [SEP]",
            dict(cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]", mask_token="[MASK]"))
ROBERTA_TOK = (["<s>", "<pad>", "</s>", "<unk>", "<mask>"], "<s> $A </s>",  # pad id 1, as the real ones
               dict(bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>", pad_token="<pad>",
                    unk_token="<unk>", mask_token="<mask>"))
T5_TOK = (["<pad>", "</s>", "<unk>"], "$A </s>", dict(eos_token="</s>", pad_token="<pad>", unk_token="<unk>"))
LLAMA_TOK = (["<pad>", "<s>", "</s>", "<unk>"], "<s> $A", dict(bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                                               unk_token="<unk>"))
GEMMA_TOK = (["<pad>", "<eos>", "<bos>", "<unk>"], "<bos> $A", dict(bos_token="<bos>", eos_token="<eos>",
                                                                   pad_token="<pad>", unk_token="<unk>"))
QWEN_TOK = (["<|endoftext|>"], "BPE", dict(eos_token="<|endoftext|>"))


def _config(family: str, vocab: int):
    import transformers as tf

    ids = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)
    roberta_ids = dict(pad_token_id=1, bos_token_id=0, eos_token_id=2)
    return {
        "bert": lambda: tf.BertConfig(vocab_size=vocab, max_position_embeddings=64, **SMALL),
        "roberta": lambda: tf.RobertaConfig(vocab_size=vocab, max_position_embeddings=66, **SMALL, **roberta_ids),
        "xlm-roberta": lambda: tf.XLMRobertaConfig(vocab_size=vocab, max_position_embeddings=66, **SMALL, **roberta_ids),
        "camembert": lambda: tf.CamembertConfig(vocab_size=vocab, max_position_embeddings=66, **SMALL, **roberta_ids),
        "longformer": lambda: tf.LongformerConfig(vocab_size=vocab, max_position_embeddings=66, attention_window=4,
                                                  **SMALL, **roberta_ids),
        "mpnet": lambda: tf.MPNetConfig(vocab_size=vocab, max_position_embeddings=66, **SMALL, **roberta_ids),
        "distilbert": lambda: tf.DistilBertConfig(vocab_size=vocab, dim=32, hidden_dim=64, n_layers=2, n_heads=4,
                                                  max_position_embeddings=64, pad_token_id=0),
        "albert": lambda: tf.AlbertConfig(vocab_size=vocab, embedding_size=16, max_position_embeddings=64, **SMALL, **ids),
        "electra": lambda: tf.ElectraConfig(vocab_size=vocab, embedding_size=16, max_position_embeddings=64, **SMALL),
        "deberta-v2": lambda: tf.DebertaV2Config(vocab_size=vocab, max_position_embeddings=64, relative_attention=True,
                                                 position_biased_input=False, pos_att_type=["p2c", "c2p"],
                                                 position_buckets=16, norm_rel_ebd="layer_norm", **SMALL),
        "modernbert": lambda: tf.ModernBertConfig(vocab_size=vocab, max_position_embeddings=64, local_attention=8,
                                                  **SMALL, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                                  cls_token_id=1, sep_token_id=2),
        "t5": lambda: tf.T5Config(vocab_size=vocab, d_model=32, d_ff=64, d_kv=8, num_layers=2, num_heads=4,
                                  pad_token_id=0, eos_token_id=1, decoder_start_token_id=0),
        "llama": lambda: tf.LlamaConfig(vocab_size=vocab, **DECODER, **ids),
        "mistral": lambda: tf.MistralConfig(vocab_size=vocab, **DECODER, **ids),
        "qwen2": lambda: tf.Qwen2Config(vocab_size=vocab, **DECODER, pad_token_id=0, eos_token_id=0),
        "qwen3": lambda: tf.Qwen3Config(vocab_size=vocab, **DECODER, pad_token_id=0, eos_token_id=0),
        "gemma2": lambda: tf.Gemma2Config(vocab_size=vocab, **DECODER, pad_token_id=0, eos_token_id=1, bos_token_id=2),
        "gemma3": lambda: tf.Gemma3TextConfig(vocab_size=vocab, **DECODER, sliding_window=4, pad_token_id=0,
                                              eos_token_id=1, bos_token_id=2),
        "phi3": lambda: tf.Phi3Config(vocab_size=vocab, **{k: v for k, v in DECODER.items() if k != "head_dim"},
                                      pad_token_id=0, bos_token_id=1, eos_token_id=2),
    }[family]()


FAMILIES = {  # family -> (tokenizer, kind, default pooling)
    "bert": (BERT_TOK, "encoder", "cls"), "roberta": (ROBERTA_TOK, "encoder", "cls"),
    "xlm-roberta": (ROBERTA_TOK, "encoder", "cls"), "mpnet": (ROBERTA_TOK, "encoder", "cls"),
    "camembert": (ROBERTA_TOK, "encoder", "cls"), "longformer": (ROBERTA_TOK, "encoder", "cls"),
    "distilbert": (BERT_TOK, "encoder", "cls"), "albert": (BERT_TOK, "encoder", "cls"),
    "electra": (BERT_TOK, "encoder", "cls"), "deberta-v2": (BERT_TOK, "encoder", "cls"),
    "modernbert": (BERT_TOK, "encoder", "cls"), "t5": (T5_TOK, "encoder", "mean"),
    "llama": (LLAMA_TOK, "decoder", "last"), "mistral": (LLAMA_TOK, "decoder", "last"),
    "qwen2": (QWEN_TOK, "decoder", "last"), "qwen3": (QWEN_TOK, "decoder", "last"),
    "gemma2": (GEMMA_TOK, "decoder", "last"), "gemma3": (GEMMA_TOK, "decoder", "last"),
    "phi3": (LLAMA_TOK, "decoder", "last"),
}


def make_family(folder: Path, family: str) -> Path:
    from transformers import AutoModel, T5EncoderModel

    specials, single, named = FAMILIES[family][0]
    tok = tokenizer(specials, single, **named)
    torch.manual_seed(0)
    config = _config(family, len(tok))
    model = T5EncoderModel(config) if family == "t5" else AutoModel.from_config(config, attn_implementation="eager")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def reference(folder: Path, texts: list[str], kind: str, pooling: str) -> np.ndarray:
    """transformers' own forward on each text alone (no padding, positions as the model numbers them)."""
    from transformers import AutoModel, AutoTokenizer, T5EncoderModel

    tok = AutoTokenizer.from_pretrained(folder)
    model = (T5EncoderModel if (folder / "config.json").read_text().count('"t5"') else AutoModel).from_pretrained(folder)
    model.eval()
    out = []
    for text in texts:
        ids = tok(text)["input_ids"]
        if kind == "decoder" and ids[-1] != tok.eos_token_id:
            ids = ids + [tok.eos_token_id]
        with torch.no_grad():
            hidden = model(input_ids=torch.tensor([ids])).last_hidden_state[0]
        vector = {"cls": hidden[0], "last": hidden[-1], "mean": hidden.mean(dim=0)}[pooling]
        out.append(torch.nn.functional.normalize(vector, dim=-1).numpy())
    return np.stack(out)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_vectors_match_transformers_forward(family: str, tmp_path: Path) -> None:
    folder = make_family(tmp_path / family, family)
    _, kind, pooling = FAMILIES[family]
    texts = random_texts(7, seed=3, min_words=2, max_words=20)
    expected = reference(folder, texts, kind, pooling)
    backbone = load_backbone(str(folder))
    assert (backbone.info.kind, backbone.info.pooling) == (kind, pooling)
    encoder = DenseEncoder(backbone, EncoderSettings(model=str(folder), passage_max_length=60), "cpu")
    for side in ("left", "right"):
        encoder.tokenizer.padding_side = side
        got = encoder.encode_passages(texts, batch_size=4)
        np.testing.assert_allclose(got, expected, atol=2e-5, err_msg=f"{family}, {side} padding")
