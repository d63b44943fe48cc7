"""Pooling sees the same tokens whatever the padding side, and decoders end on an appended EOS."""

from pathlib import Path

import numpy as np
import pytest
import torch

from llmret.encoders.dense import DenseEncoder
from llmret.encoders.pooling import pool
from llmret.encoders.settings import EncoderSettings
from llmret.models.backbone import load_backbone

from helpers import random_texts


def test_pool_positions_by_hand() -> None:
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    left = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1]])
    assert pool(hidden, right, "last").flatten().tolist() == [2.0, 5.0]
    assert pool(hidden, left, "last").flatten().tolist() == [3.0, 7.0]
    assert pool(hidden, left, "cls").flatten().tolist() == [1.0, 6.0]  # not the PAD at position 0
    assert pool(hidden, right, "mean").flatten().tolist() == [1.0, 4.5]
    with pytest.raises(ValueError, match="unknown pooling"):
        pool(hidden, right, "bogus")


def _encode(folder: Path, side: str, pooling: str | None, texts: list[str], batch_size: int) -> np.ndarray:
    encoder = DenseEncoder(load_backbone(str(folder)), EncoderSettings(model=str(folder), pooling=pooling), "cpu")
    encoder.tokenizer.padding_side = side
    return encoder.encode(texts, query=False, batch_size=batch_size)


@pytest.mark.parametrize("model, pooling", [("tiny_llama", None), ("tiny_llama", "mean"), ("tiny_bert", None),
                                            ("tiny_bert", "mean")])
def test_padding_side_does_not_change_vectors(model: str, pooling: str | None, request: pytest.FixtureRequest) -> None:
    folder = request.getfixturevalue(model)
    texts = random_texts(12, seed=1)
    alone = _encode(folder, "right", pooling, texts, batch_size=1)  # no padding at all
    right = _encode(folder, "right", pooling, texts, batch_size=6)
    left = _encode(folder, "left", pooling, texts, batch_size=6)
    np.testing.assert_allclose(right, alone, atol=1e-5)
    np.testing.assert_allclose(left, alone, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(alone, axis=1), 1.0, atol=1e-5)


def test_decoder_appends_eos_and_keeps_bos_switchable(tiny_llama: Path) -> None:
    backbone = load_backbone(str(tiny_llama))
    assert backbone.info.kind == "decoder" and backbone.info.pooling == "last"
    tok = backbone.tokenizer
    encoder = DenseEncoder(backbone, EncoderSettings(model=str(tiny_llama)), "cpu")
    ids = encoder.tokenize(["alpha beta", "gamma " * 200], max_length=16)
    assert ids[0] == [tok.bos_token_id, tok.convert_tokens_to_ids("alpha"), tok.convert_tokens_to_ids("beta"), tok.eos_token_id]
    assert len(ids[1]) == 16 and ids[1][-1] == tok.eos_token_id  # truncated, EOS still last
    no_bos = DenseEncoder(backbone, EncoderSettings(model=str(tiny_llama), add_bos=False), "cpu")
    assert no_bos.tokenize(["alpha"], 16)[0] == [tok.convert_tokens_to_ids("alpha"), tok.eos_token_id]


def test_encoder_kind_defaults(tiny_bert: Path) -> None:
    info = load_backbone(str(tiny_bert)).info
    assert (info.kind, info.pooling, info.append_eos) == ("encoder", "cls", False)


def test_bidirectional_decoder_sees_the_future(tiny_llama: Path) -> None:
    from llmret.encoders.dense import bidirectional_mask

    backbone = load_backbone(str(tiny_llama))
    texts = random_texts(6, seed=4)
    for bidirectional in (False, True):
        encoder = DenseEncoder(backbone, EncoderSettings(model=str(tiny_llama), pooling="mean",
                                                         bidirectional=bidirectional), "cpu")
        batch = encoder.collate(encoder.tokenize(["alpha beta gamma", "alpha beta delta"], 16))  # differ at the end
        mask = batch["attention_mask"]
        with torch.inference_mode():
            hidden = encoder.model(input_ids=batch["input_ids"], attention_mask=bidirectional_mask(
                mask, encoder.model.config) if bidirectional else mask).last_hidden_state
        same_first_word = torch.allclose(hidden[0, 1], hidden[1, 1], atol=1e-6)  # position 1: "alpha"
        assert same_first_word is (not bidirectional)  # causal: "alpha" cannot see what follows it
        alone = np.stack([encoder.encode_passages([t])[0] for t in texts])
        for side in ("left", "right"):
            encoder.tokenizer.padding_side = side
            np.testing.assert_allclose(encoder.encode_passages(texts, batch_size=6), alone, atol=1e-5)
