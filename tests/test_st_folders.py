"""sentence-transformers folders are read whole: llmret's vectors equal SentenceTransformer.encode's.

Each shape is built with sentence-transformers itself over a tiny random BERT: Dense projections,
max / weighted-mean / concatenated pooling, cosine similarity without a Normalize module, prompts,
an old-style folder with the model in 0_Transformer/; a module llmret cannot reproduce is an error.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from llmret.encoders.dense import DenseEncoder
from llmret.encoders.settings import EncoderSettings
from llmret.util.errors import DataError

from helpers import random_texts


def build(folder: Path, bert: Path, pooling: str | tuple[str, ...], *, dense: list[int] | None = None,
          normalize: bool = False, similarity: str | None = None, prompts: dict[str, str] | None = None,
          lower: bool = False) -> Path:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer

    torch.manual_seed(1)
    transformer = Transformer(str(bert), max_seq_length=48, do_lower_case=lower)
    modules: list[torch.nn.Module] = [transformer, Pooling(32, pooling_mode=pooling)]
    width = 32 * (len(pooling) if isinstance(pooling, tuple) else 1)
    for out in dense or []:
        modules.append(Dense(width, out, activation_function=torch.nn.Tanh()))
        width = out
    if normalize:
        modules.append(Normalize())
    model = SentenceTransformer(modules=modules, device="cpu", prompts=prompts, similarity_fn_name=similarity)
    model.save(str(folder))
    return folder


def compare(folder: Path, cosine: bool) -> None:
    from sentence_transformers import SentenceTransformer

    texts = [t.title() for t in random_texts(9, seed=8, min_words=2, max_words=25)]  # a lowercasing model sees words
    st = SentenceTransformer(str(folder), device="cpu")
    ours = DenseEncoder.load(EncoderSettings(model=str(folder), query_max_length=48), "cpu")
    for side in ("left", "right"):
        ours.tokenizer.padding_side = side
        for mine, theirs in ((ours.encode_queries(texts, batch_size=4), st.encode_query(texts, batch_size=4)),
                             (ours.encode_passages(texts, batch_size=4), st.encode_document(texts, batch_size=4))):
            if cosine:
                theirs = theirs / np.linalg.norm(theirs, axis=1, keepdims=True)
            np.testing.assert_allclose(mine, theirs, atol=2e-5)


@pytest.mark.parametrize("shape", ["dense-projection", "max", "weightedmean", "cls+mean+sqrt", "last-dot",
                                   "prompts-lowercase"])
def test_folder_shapes_match_sentence_transformers(shape: str, tiny_bert: Path, tmp_path: Path) -> None:
    folder = tmp_path / shape
    if shape == "dense-projection":  # sentence-t5 / GTR / LaBSE shape: Dense after pooling, then Normalize
        build(folder, tiny_bert, "mean", dense=[24, 16], normalize=True)
    elif shape == "max":  # cosine similarity (the default) and no Normalize module
        build(folder, tiny_bert, "max")
    elif shape == "weightedmean":
        build(folder, tiny_bert, "weightedmean", similarity="cosine")
    elif shape == "cls+mean+sqrt":
        build(folder, tiny_bert, ("cls", "mean", "mean_sqrt_len_tokens"), normalize=True)
    elif shape == "last-dot":
        build(folder, tiny_bert, "lasttoken", similarity="dot")
    else:  # e5-style prompts, and a lowercasing Transformer
        build(folder, tiny_bert, "mean", normalize=True, prompts={"query": "query: ", "document": "passage: "}, lower=True)
    compare(folder, cosine=shape != "last-dot")
    encoder = DenseEncoder.load(EncoderSettings(model=str(folder)), "cpu")
    assert encoder.settings.passage_max_length == 48  # the folder's max_seq_length
    if shape == "prompts-lowercase":
        assert encoder.format_query("x") == "query: x" and encoder.format_passage("y") == "passage: y"


def test_old_folder_with_transformer_in_a_subfolder(tiny_bert: Path, tmp_path: Path) -> None:
    folder = build(tmp_path / "new", tiny_bert, "mean", normalize=True)
    old = tmp_path / "old"
    (old / "0_Transformer").mkdir(parents=True)
    for item in folder.iterdir():
        if item.is_file() and item.name not in ("modules.json", "config_sentence_transformers.json"):
            shutil.copy(item, old / "0_Transformer" / item.name)
        elif item.is_dir():
            shutil.copytree(item, old / item.name)
    shutil.copy(folder / "config_sentence_transformers.json", old)
    modules = json.loads((folder / "modules.json").read_text())
    modules[0]["path"] = "0_Transformer"
    (old / "modules.json").write_text(json.dumps(modules))
    compare(old, cosine=True)


def test_module_llmret_cannot_reproduce_is_named(tiny_bert: Path, tmp_path: Path) -> None:
    folder = build(tmp_path / "ln", tiny_bert, "mean")
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": 2, "name": "2", "path": "2_LayerNorm", "type": "sentence_transformers.models.LayerNorm"})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(DataError, match=r"modules.json: module 2 \('sentence_transformers.models.LayerNorm'\) cannot"):
        DenseEncoder.load(EncoderSettings(model=str(folder)), "cpu")
    folder = build(tmp_path / "euclid", tiny_bert, "mean", similarity="euclidean")
    with pytest.raises(DataError, match="similarity 'euclidean' cannot be searched by inner product"):
        DenseEncoder.load(EncoderSettings(model=str(folder)), "cpu")
