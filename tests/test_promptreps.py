"""Zero-shot sparse from a decoder (PromptReps): next-word logits after a prompt, restricted to the text's own
tokens, checked by hand against transformers' own forward; suffixes survive truncation; the recipe from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmret.cli import main
from llmret.encoders.recipes import RECIPES
from llmret.encoders.settings import EncoderSettings
from llmret.encoders.sparse import SparseEncoder
from llmret.models.backbone import load_backbone
from llmret.training.train import TrainSettings, train

from helpers import WORDS, random_texts, write_beir_folder, write_training_file

PREFIX, SUFFIX = f"{WORDS[0]} {WORDS[1]} ", f" {WORDS[2]} {WORDS[3]}"  # prompt words the texts may share


def _by_hand(model: torch.nn.Module, tok: AutoTokenizer, text: str, length: int, k: int) -> tuple[torch.Tensor, bool]:
    """The paper's vector from the model's own logits: BOS, prompt, text cut to fit, prompt's end; the
    last position's log(1 + ReLU(logits)) on the text's own (non-special) tokens, its k largest."""
    words = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    head, body, tail = words(PREFIX), words(text), words(SUFFIX)
    room = length - 1 - len(head) - len(tail)
    ids = [tok.bos_token_id, *head, *body[:room], *tail]
    with torch.no_grad():
        weights = torch.log1p(torch.relu(model(torch.tensor([ids])).logits[0, -1]))
    own = torch.zeros_like(weights, dtype=torch.bool)
    own[sorted(set(body[:room]) - set(tok.all_special_ids))] = True
    weights = weights * own
    top = weights.topk(k)
    return torch.zeros_like(weights).scatter(0, top.indices, top.values), len(body) > room


def test_last_token_sparse_vectors_match_transformers_by_hand(tiny_llama: Path) -> None:
    settings = EncoderSettings(model=str(tiny_llama), pooling="last", add_bos=True, input_terms_only=True,
                               zero_special_terms=True, passage_prefix=PREFIX, passage_suffix=SUFFIX,
                               passage_max_length=12, passage_top_k=3)
    encoder = SparseEncoder(load_backbone(str(tiny_llama), lm_head=True), settings, "cpu")
    model, tok = AutoModelForCausalLM.from_pretrained(tiny_llama), AutoTokenizer.from_pretrained(tiny_llama)
    texts = [f"{WORDS[1]} {WORDS[10]} {WORDS[11]}", *random_texts(3, seed=4, min_words=2, max_words=20)]
    expected = [_by_hand(model, tok, text, 12, 3) for text in texts]
    assert any(cut for _, cut in expected) and not all(cut for _, cut in expected)
    for side in ("right", "left"):
        encoder.tokenizer.padding_side = side
        got = torch.tensor(encoder.encode_passages(texts).toarray())
        for row, (vector, _) in enumerate(expected):
            torch.testing.assert_close(got[row], vector)
    # the first text shares WORDS[1] with the prompt and keeps it; WORDS[0] is only the prompt's
    first = got[0]
    assert first[tok.convert_tokens_to_ids(WORDS[0])] == 0 and (first > 0).sum() == 3
    assert encoder.truncated["passages"] == 2 * sum(cut for _, cut in expected)


def test_suffix_is_kept_when_the_text_is_cut_and_must_leave_room(tiny_llama: Path, tiny_bert: Path) -> None:
    for folder, closing in ((tiny_llama, 0), (tiny_bert, 1)):
        encoder = SparseEncoder(load_backbone(str(folder), lm_head=True),
                                EncoderSettings(model=str(folder), query_suffix=SUFFIX, query_max_length=8), "cpu")
        tail = encoder.tokenizer(SUFFIX, add_special_tokens=False)["input_ids"]
        (ids,) = encoder.token_ids([" ".join(WORDS[5:25])], query=True)
        assert len(ids) <= 8 and ids[len(ids) - closing - len(tail):len(ids) - closing] == tail
        assert WORDS[5] in encoder.tokenizer.convert_ids_to_tokens(ids)  # the text's start is kept, its end cut
        with pytest.raises(ValueError, match="no room for text"):
            encoder.tokenize(["alpha"], 3, suffix=f"{WORDS[4]} {WORDS[5]} {WORDS[6]}")


def test_training_restricts_to_the_text_and_not_the_prompt(tiny_llama: Path, tmp_path: Path) -> None:
    data = write_training_file(tmp_path / "train.jsonl", 8, (1, 5))
    encoder = EncoderSettings(model=str(tiny_llama), query_max_length=12, passage_max_length=16, query_prefix=PREFIX,
                              passage_suffix=SUFFIX, input_terms_only=True, zero_special_terms=True)
    final = train(TrainSettings(retriever="sparse", train_data=str(data), output_dir=str(tmp_path / "run"), batch_size=4,
                                group_size=2, max_steps=2, logging_steps=1, lora_r=4, encoder=encoder))
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and all(r["loss"] == r["loss"] for r in log)
    reloaded = SparseEncoder.load(EncoderSettings(model=str(final)), "cpu")
    assert reloaded.settings.passage_suffix == SUFFIX and reloaded.wants_own_terms
    vectors = reloaded.encode_queries([f"{WORDS[20]} {WORDS[21]}"])
    prompt_only = reloaded.tokenizer.convert_tokens_to_ids(WORDS[0])
    assert vectors[0, prompt_only] == 0 and 0 < vectors.nnz <= 2


def test_promptreps_recipe_from_the_cli(tiny_llama: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs = {f"d{i}": text for i, text in enumerate(random_texts(12, seed=3, min_words=4))}
    queries = {f"q{i}": docs[f"d{i}"].split(" ", 2)[-1] for i in range(4)}
    folder = write_beir_folder(tmp_path / "data", docs, queries, {f"q{i}": {f"d{i}": 1} for i in range(4)})
    out = tmp_path / "out"
    assert main(["evaluate", "--retriever", "sparse", "--recipe", "promptreps", "--model", str(tiny_llama),
                 "--data", str(folder), "--out", str(out), "--passage-top-k", "4"]) == 0
    settings = json.loads((out / "settings.json").read_text())
    recipe = RECIPES["promptreps"]["encoder"]
    assert settings["pooling"] == "last" and settings["passage_suffix"] == recipe["passage_suffix"]
    assert settings["passage_top_k"] == 4 and settings["query_top_k"] == 128  # the flag over the recipe
    assert settings["sparsity"]["passage_nonzero"] <= 4
    capsys.readouterr()
    assert main(["evaluate", "--retriever", "dense", "--recipe", "promptreps", "--model", str(tiny_llama),
                 "--data", str(folder), "--out", str(tmp_path / "no")]) == 2
    assert "add --retriever sparse" in capsys.readouterr().err


def test_own_tokens_under_a_byte_level_tokenizer_whose_spans_carry_the_space(tmp_path: Path) -> None:
    """GPT-2-style tokens (SmolLM2's, Qwen's) start with the space before a word: the first word after a prefix
    that ends in a space is still the text's own."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(random_texts(200, seed=1) + ["query: passage:"], vocab_size=400, special_tokens=["<s>", "</s>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>", pad_token="</s>")
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, bos_token_id=0, eos_token_id=1,
                                         pad_token_id=1))
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    encoder = SparseEncoder(load_backbone(str(tmp_path / "m"), lm_head=True),
                            EncoderSettings(model=str(tmp_path / "m"), input_terms_only=True, query_prefix="query: "), "cpu")
    text = f"{WORDS[6]} {WORDS[7]} {WORDS[8]}"
    (ids,) = encoder.token_ids([text], query=True)
    own = [t for t, mine in zip(ids, ids.own) if mine]
    assert own == tok(" " + text, add_special_tokens=False)["input_ids"][-len(own):]
    assert tok.decode(own).strip() == text  # every word of the text, the first one included; no prompt word
