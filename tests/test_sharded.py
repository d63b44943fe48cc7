"""Sharded encoding and search on real data: SciFact (its test queries, their judged abstracts and the
corpus's first 700 others) encoded in 2 parts by 2 processes, indexed per part and searched together (or
indexed as one), gives the run of the unsharded pipeline, dense and sparse."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llmret.cli import main
from llmret.data.trec import read_run

from helpers import SCIFACT

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not SCIFACT.is_dir(), reason="needs the shared SciFact copy")]


@pytest.fixture(scope="module")
def scifact_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT masked LM with a WordPiece vocabulary learnt from SciFact, so that its texts
    map to distinct tokens (and scores almost never tie)."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

    with gzip.open(SCIFACT / "corpus.jsonl.gz", "rt") as f:
        texts = [json.loads(line)["text"] for line in f]
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=2000, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[
        ("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
                                   unk_token="[UNK]", mask_token="[MASK]")
    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=4, max_position_embeddings=128, pad_token_id=0))
    folder = tmp_path_factory.mktemp("scifact-bert")
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def same_up_to_ties(got: dict[str, float], want: dict[str, float], what: str) -> None:
    """The same ranking, score for score; two documents may trade places only where their scores are equal
    to float32's precision (a random model makes such ties now and then, and sums in another order
    break them either way: no fault of sharding)."""
    assert list(got.values()) == pytest.approx(list(want.values()), rel=1e-5), what
    for rank, ((doc, score), (wanted, wanted_score)) in enumerate(zip(got.items(), want.items()), start=1):
        if doc != wanted:
            assert score == pytest.approx(wanted_score, rel=1e-6), f"{what}: {doc} for {wanted} at rank {rank}"


@pytest.fixture(scope="module")
def scifact_part(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SciFact's test split over a fifth of its corpus (every judged abstract kept): each process's
    start-up and the index files are what sharding is tested on, and ~1000 passages have those."""
    folder = tmp_path_factory.mktemp("scifact-part")
    judged = {line.split("\t")[1] for line in (SCIFACT / "qrels" / "test.tsv").read_text().splitlines()[1:]}
    with gzip.open(SCIFACT / "corpus.jsonl.gz", "rt") as source, (folder / "corpus.jsonl").open("w") as out:
        others = 0
        for line in source:
            judged_doc = json.loads(line)["_id"] in judged
            if judged_doc or others < 700:
                out.write(line)
                others += not judged_doc
    shutil.copy(SCIFACT / "queries.jsonl", folder / "queries.jsonl")
    (folder / "qrels").mkdir()
    shutil.copy(SCIFACT / "qrels" / "test.tsv", folder / "qrels" / "test.tsv")
    return folder


@pytest.mark.parametrize("retriever", ["dense", "sparse"])
def test_two_processes_encode_halves_whose_indexes_search_as_one(scifact_bert: Path, scifact_part: Path,
                                                                 tmp_path: Path, retriever: str) -> None:
    common = ["encode", "--retriever", retriever, "--data", str(scifact_part), "--model", str(scifact_bert),
              "--passage-max-length", "64", "--query-max-length", "32"]
    if retriever == "dense":  # a random tiny BERT's CLS state barely varies: mean pooling tells texts apart
        common += ["--pooling", "mean"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # the whole corpus here, with the parts' one thread: sums in another order would move near-tied
    # passages past each other, which is no fault of sharding
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*common, "--out", str(tmp_path / "whole")]) == 0
    finally:
        torch.set_num_threads(threads)
    # two processes at once: one told its part by flags, the other by a launcher's RANK / WORLD_SIZE
    procs = [subprocess.Popen([sys.executable, "-m", "llmret.cli", *common, "--out", str(tmp_path / "parts"),
                               "--shard", "0", "--num-shards", "2"], env=env, stderr=subprocess.PIPE, text=True),
             subprocess.Popen([sys.executable, "-m", "llmret.cli", *common, "--out", str(tmp_path / "parts")],
                              env={**env, "RANK": "1", "WORLD_SIZE": "2"}, stderr=subprocess.PIPE, text=True)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
    parts = sorted((tmp_path / "parts" / "corpus").iterdir())
    assert [p.name for p in parts] == ["part-000-of-002", "part-001-of-002"]
    queries = str(tmp_path / "parts" / "queries")  # written once, by part 0

    assert main(["search", "--corpus", str(tmp_path / "whole" / "corpus"), "--queries", str(tmp_path / "whole" / "queries"),
                 "--k", "10", "--out", str(tmp_path / "whole.trec")]) == 0
    for i, part in enumerate(parts):
        assert main(["index", "--embeddings", str(part), "--out", str(tmp_path / f"ix{i}")]) == 0
    assert main(["search", "--index-dir", str(tmp_path / "ix0"), str(tmp_path / "ix1"), "--queries", queries,
                 "--k", "10", "--out", str(tmp_path / "merged.trec")]) == 0
    assert main(["index", "--embeddings", *map(str, parts), "--out", str(tmp_path / "one")]) == 0
    assert main(["search", "--index-dir", str(tmp_path / "one"), "--queries", queries, "--k", "10",
                 "--out", str(tmp_path / "one.trec")]) == 0
    whole = read_run(tmp_path / "whole.trec")
    assert len(whole) == 300
    for name in ("merged.trec", "one.trec"):
        got = read_run(tmp_path / name)
        assert got.keys() == whole.keys()
        for qid in whole:
            same_up_to_ties(got[qid], whole[qid], f"{name} query {qid}")
    # text queries through the saved part indexes (the encoder the parts were built with)
    assert main(["search", "--index-dir", str(tmp_path / "ix0"), str(tmp_path / "ix1"), "--data", str(scifact_part),
                 "--k", "10", "--out", str(tmp_path / "text.trec")]) == 0
    text = read_run(tmp_path / "text.trec")
    for qid in whole:
        same_up_to_ties(text[qid], whole[qid], f"text.trec query {qid}")
