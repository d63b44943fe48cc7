"""Learned-sparse retrieval: the chunked LM-head encoder, indexes, regularisers, training, fusion, export."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from llmret.cli import main
from llmret.data import read_run
from llmret.encoders.dense import DenseEncoder
from llmret.encoders.settings import EncoderSettings
from llmret.encoders.sparse import SparseEncoder, sparsify
from llmret.evaluation.fusion import fuse
from llmret.index.anserini import term_names
from llmret.index.sparse import SeismicSettings, SeismicSparseIndex, SparseIndex
from llmret.losses.regularizers import regularization, warmup_weight
from llmret.models.backbone import load_backbone
from llmret.training.train import TrainSettings, train

from helpers import WORDS, random_texts, write_beir_folder


def naive_weights(encoder: SparseEncoder, batch: dict[str, torch.Tensor], pooling: str) -> torch.Tensor:
    """The textbook formula over the full [batch, length, vocab] logits, for comparison."""
    logits = encoder.model(**encoder.model_inputs(**batch)).logits
    weights = torch.log1p(torch.relu(logits)) * batch["attention_mask"].unsqueeze(-1)
    return weights.max(dim=1).values if pooling == "max" else weights.sum(dim=1)


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_bert"])
@pytest.mark.parametrize("pooling", ["max", "sum"])
def test_chunked_head_equals_full_logits_in_value_and_gradient(model: str, pooling: str,
                                                              request: pytest.FixtureRequest) -> None:
    folder = request.getfixturevalue(model)
    encoder = SparseEncoder(load_backbone(str(folder), lm_head=True),
                            EncoderSettings(model=str(folder), pooling=pooling, vocab_chunk=7), "cpu")
    batch = encoder.collate(encoder.tokenize(random_texts(4, seed=2), 64))
    ours = encoder.forward(**batch)
    reference = naive_weights(encoder, batch, pooling)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    assert encoder.model.get_output_embeddings().__class__.__name__ == "Linear"  # the head is put back

    weight = encoder.model.get_output_embeddings().weight
    (grad_ours,) = torch.autograd.grad(ours.pow(2).sum(), weight)
    (grad_ref,) = torch.autograd.grad(naive_weights(encoder, batch, pooling).pow(2).sum(), weight)
    torch.testing.assert_close(grad_ours, grad_ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_bert"])
@pytest.mark.parametrize("pooling", ["max", "sum", "last"])
def test_own_terms_head_equals_the_textbook_formula_restricted_to_the_texts_tokens(
        model: str, pooling: str, request: pytest.FixtureRequest) -> None:
    """With input_terms_only, only the batch's own tokens' head rows are projected: the same weights and
    gradients as the full logits kept on each text's own tokens (its special tokens zeroed)."""
    folder = request.getfixturevalue(model)
    settings = EncoderSettings(model=str(folder), pooling=pooling, vocab_chunk=5, input_terms_only=True,
                               zero_special_terms=True)
    encoder = SparseEncoder(load_backbone(str(folder), lm_head=True), settings, "cpu")
    assert encoder._own_rows(torch.tensor([[3, 4, 3, 0]]), torch.tensor([[1, 1, 1, 0]])).tolist() == [3, 4]
    batch = encoder.collate(encoder.tokenize(random_texts(4, seed=3, max_words=12), 64))
    ours = encoder.forward(**batch)
    logits = encoder.model(**encoder.model_inputs(**batch)).logits
    if pooling == "last":
        last = batch["attention_mask"].sum(1) - 1  # padded on the right
        assert batch["attention_mask"][torch.arange(4), last].all()
        full = torch.log1p(torch.relu(logits[torch.arange(4), last]))
    else:
        full = naive_weights(encoder, batch, pooling)
    own = torch.zeros_like(full, dtype=torch.bool)
    for row, (ids, mask) in enumerate(zip(batch["input_ids"], batch["attention_mask"])):
        own[row, ids[mask.bool()]] = True
    own[:, encoder.tokenizer.all_special_ids] = False
    reference = full * own
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    weight = encoder.model.get_output_embeddings().weight
    (grad_ours,) = torch.autograd.grad(ours.pow(2).sum(), weight)
    (grad_ref,) = torch.autograd.grad(reference.pow(2).sum(), weight)
    torch.testing.assert_close(grad_ours, grad_ref, atol=1e-5, rtol=1e-4)
    whole = SparseEncoder(load_backbone(str(folder), lm_head=True),
                          EncoderSettings(**{**vars(settings), "full_vocab_head": True}), "cpu")
    assert whole._own_rows(batch["input_ids"], batch["attention_mask"]) is None
    torch.testing.assert_close(whole.forward(**batch), ours, atol=1e-6, rtol=1e-6)


def test_sparse_defaults_and_padding_side(tiny_llama: Path) -> None:
    backbone = load_backbone(str(tiny_llama), lm_head=True)
    encoder = SparseEncoder(backbone, EncoderSettings(model=str(tiny_llama)), "cpu")
    assert (encoder.info.pooling, encoder.info.add_bos, encoder.info.append_eos) == ("max", False, False)
    ids = encoder.tokenize(["alpha beta"], 16)[0]
    assert ids[0] != encoder.tokenizer.bos_token_id and ids[-1] != encoder.tokenizer.eos_token_id
    texts = random_texts(6, seed=4)
    right = encoder.encode_passages(texts).toarray()
    encoder.tokenizer.padding_side = "left"
    np.testing.assert_allclose(encoder.encode_passages(texts).toarray(), right, atol=1e-5)
    with pytest.raises(ValueError, match="sparse pooling"):
        SparseEncoder(backbone, EncoderSettings(model=str(tiny_llama), pooling="cls"), "cpu")
    with pytest.raises(ValueError, match="sparse encoders only"):
        DenseEncoder(load_backbone(str(tiny_llama)), EncoderSettings(model=str(tiny_llama), query_top_k=5), "cpu")


def test_sparsify_prunes_and_quantizes() -> None:
    reps = torch.tensor([[0.0, 0.512, 2.0, 0.004, 1.0], [0.3, 0.0, 0.0, 0.0, 0.0]])
    matrix = sparsify(reps, top_k=2, quantize=100)
    np.testing.assert_allclose(matrix.toarray(), [[0, 0, 2.0, 0, 1.0], [0.3, 0, 0, 0, 0]], atol=1e-6)
    assert sparsify(reps, quantize=100).nnz == 4  # 0.004 rounds to zero and is dropped


def random_sparse(rows: int, vocab: int, nnz: int, seed: int) -> sp.csr_matrix:
    """Rows with ``nnz`` terms drawn Zipf-like, as learned-sparse vectors are (a few terms are everywhere)."""
    rng = np.random.default_rng(seed)
    probs = 1.0 / np.arange(1, vocab + 1) ** 0.8
    probs /= probs.sum()
    data, indices, indptr = [], [], [0]
    for _ in range(rows):
        terms = np.unique(rng.choice(vocab, size=nnz, p=probs))
        indices.append(terms)
        data.append(rng.gamma(1.5, 0.5, size=len(terms)).astype(np.float32))
        indptr.append(indptr[-1] + len(terms))
    return sp.csr_matrix((np.concatenate(data), np.concatenate(indices), indptr), shape=(rows, vocab))


def test_exact_index_equals_brute_force_and_roundtrips(tmp_path: Path) -> None:
    docs, queries = random_sparse(500, 300, 40, seed=1), random_sparse(20, 300, 8, seed=2)
    ids = [f"d{i}" for i in range(500)]
    index = SparseIndex(ids, docs)
    scores, hits = index.search(queries, k=10)
    dense = (queries @ docs.T).toarray()
    for row in range(20):
        expected = np.argsort(-dense[row], kind="stable")[:10]
        np.testing.assert_allclose(scores[row], dense[row][expected], rtol=1e-5)
        assert set(hits[row]) == {ids[i] for i in expected}
    index.save(tmp_path / "idx")
    again_scores, again_hits = SparseIndex.load(tmp_path / "idx").search(queries, k=10)
    assert again_hits == hits
    empty = sp.csr_matrix((1, 300), dtype=np.float32)
    assert index.search(empty, k=10)[1] == [[]]  # a query with no terms matches nothing


def test_seismic_agrees_with_exact() -> None:
    docs, queries = random_sparse(3000, 2000, 60, seed=3), random_sparse(50, 2000, 15, seed=4)
    ids = [f"d{i}" for i in range(3000)]
    _, exact = SparseIndex(ids, docs).search(queries, k=10)
    scores, approx = SeismicSparseIndex(ids, docs, SeismicSettings(n_postings=1000, query_cut=15, heap_factor=0.9)).search(queries, k=10)
    recall = np.mean([len(set(a) & set(e)) / len(e) for a, e in zip(approx, exact)])
    assert recall >= 0.95
    assert all(np.all(np.diff(s) <= 1e-6) for s in scores)  # best first


def test_flops_and_l1_by_hand() -> None:
    reps = torch.tensor([[1.0, 0.0, 2.0], [3.0, 0.0, 0.0]], requires_grad=True)
    flops = regularization(reps, "flops")
    assert flops.item() == pytest.approx(((1 + 3) / 2) ** 2 + 0 + (2 / 2) ** 2)
    (grad,) = torch.autograd.grad(flops, reps)
    # d/dw_ij of sum_j (mean_i |w_ij|)^2 = 2 * mean_j / n * sign(w_ij); |.| has subgradient 0 at 0 (as in SPLADE)
    torch.testing.assert_close(grad, torch.tensor([[2.0, 0.0, 1.0], [2.0, 0.0, 0.0]]))
    assert regularization(reps, "l1").item() == pytest.approx((1 + 2 + 3) / 2)
    assert [warmup_weight(0.04, s, 10) for s in (0, 5, 10, 20)] == pytest.approx([0.0, 0.01, 0.04, 0.04])
    with pytest.raises(ValueError, match="regularizer"):
        regularization(reps, "l2")


def _flops_on_a_share(rank: int, world: int, port: int, reps: torch.Tensor, out: str) -> None:
    """One process of a gloo group: its share of the batch, FLOPS, gradient averaged as DDP does."""
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    share = reps[rank::world].clone().requires_grad_(True)
    loss = regularization(share, "flops")
    (grad,) = torch.autograd.grad(loss, share)
    torch.save({"value": loss.item(), "grad": grad / world}, f"{out}-{rank}.pt")  # DDP divides by world size
    dist.destroy_process_group()


@pytest.mark.slow  # two processes
def test_flops_does_not_depend_on_the_number_of_devices(tmp_path: Path) -> None:
    import socket

    import torch.multiprocessing as mp

    reps = torch.rand(6, 5)
    full = reps.clone().requires_grad_(True)
    value = regularization(full, "flops")
    (grad,) = torch.autograd.grad(value, full)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_flops_on_a_share, args=(2, port, reps, str(tmp_path / "r")), nprocs=2)
    for rank in range(2):
        part = torch.load(tmp_path / f"r-{rank}.pt")
        assert part["value"] == pytest.approx(value.item(), rel=1e-6)
        torch.testing.assert_close(part["grad"], grad[rank::2])


@pytest.fixture()
def sparse_dataset(tmp_path: Path) -> Path:
    """Queries are a few words of their document: lexical overlap a sparse model can use."""
    docs = {f"d{i}": t for i, t in enumerate(random_texts(30, seed=5, min_words=10))}
    queries = {f"q{i}": " ".join(docs[f"d{i}"].split()[:4]) for i in range(0, 30, 3)}
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(0, 30, 3)}
    return write_beir_folder(tmp_path / "lexical", docs, queries, qrels)


def test_sparse_evaluate_mirrors_dense_and_staged_search(tiny_bert: Path, sparse_dataset: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--data", str(sparse_dataset), "--model", str(tiny_bert), "--k", "5"]
    assert main(["evaluate", "--retriever", "dense", "--out", str(tmp_path / "dense"), *common]) == 0
    assert main(["evaluate", "--retriever", "sparse", "--out", str(tmp_path / "sparse"), *common]) == 0
    for name in ("run.trec", "metrics.json", "settings.json"):
        assert (tmp_path / "sparse" / name).is_file()
    dense_m = json.loads((tmp_path / "dense" / "metrics.json").read_text())
    sparse_m = json.loads((tmp_path / "sparse" / "metrics.json").read_text())
    assert dense_m.keys() == sparse_m.keys() and dense_m["aggregate"].keys() == sparse_m["aggregate"].keys()
    settings = json.loads((tmp_path / "sparse" / "settings.json").read_text())
    assert settings["retriever"] == "sparse" and settings["pooling"] == "max" and settings["index"] == "exact"
    assert len(list((tmp_path / "sparse" / "embeddings").glob("shard-*.npz"))) == 1

    emb = tmp_path / "emb"
    assert main(["encode", "--retriever", "sparse", "--data", str(sparse_dataset), "--model", str(tiny_bert),
                 "--out", str(emb), "--shard-size", "7"]) == 0
    assert main(["search", "--corpus", str(emb / "corpus"), "--queries", str(emb / "queries"),
                 "--out", str(tmp_path / "staged.trec"), "--k", "5"]) == 0
    staged, one = read_run(tmp_path / "staged.trec"), read_run(tmp_path / "sparse" / "run.trec")
    for qid in one:
        assert list(staged[qid]) == list(one[qid])
        np.testing.assert_allclose(list(staged[qid].values()), list(one[qid].values()), rtol=1e-5)

    # The sparsity report (index size, non-zeros, FLOPS) by hand from the staged vectors
    import scipy.sparse as sp

    from llmret.index.shards import EmbeddingShards

    docs_m, queries_m = (sp.vstack([v for _, v in EmbeddingShards(emb / part)]).toarray() > 0 for part in ("corpus", "queries"))
    report = settings["sparsity"]
    assert report["postings"] == int(docs_m.sum()) and report["passage_nonzero"] == pytest.approx(docs_m.sum() / 30)
    assert report["query_nonzero"] == pytest.approx(queries_m.sum() / len(queries_m))
    assert report["flops"] == pytest.approx(float((docs_m.mean(axis=0) * queries_m.mean(axis=0)).sum()), rel=1e-9)
    assert report["flops_per_query"] == pytest.approx(report["flops"] * 30)

    # ... and the same report from a saved index (Seismic's files keep no counts: the index saves them)
    assert main(["index", "--embeddings", str(emb / "corpus"), "--index", "seismic", "--out", str(tmp_path / "ix")]) == 0
    meta = json.loads((tmp_path / "ix" / "meta.json").read_text())
    assert meta["sparsity"]["postings"] == report["postings"]
    capsys.readouterr()
    assert main(["inspect", "--index-dir", str(tmp_path / "ix"), "--queries", str(emb / "queries")]) == 0
    out = capsys.readouterr().out
    assert f"{report['postings']:,} postings" in out and f"{report['query_nonzero']:.1f} a query" in out
    assert f"FLOPS {report['flops']:.2f} a query-passage pair" in out
    assert main(["inspect", "--embeddings", str(emb / "corpus")]) == 0
    assert f"{report['passage_nonzero']:.1f} terms a passage" in capsys.readouterr().out
    assert main(["inspect", "--embeddings", str(tmp_path / "dense" / "embeddings")]) == 2
    assert "dense embeddings" in capsys.readouterr().err

    assert main(["anserini", "--embeddings", str(emb / "corpus"), "--out", str(tmp_path / "docs.jsonl")]) == 0
    assert main(["anserini", "--embeddings", str(emb / "queries"), "--queries", "--out", str(tmp_path / "q.tsv")]) == 0
    lines = [json.loads(line) for line in (tmp_path / "docs.jsonl").read_text().splitlines()]
    assert len(lines) == 30 and all(isinstance(w, int) and w > 0 for doc in lines for w in doc["vector"].values())
    qid, terms = (tmp_path / "q.tsv").read_text().splitlines()[0].split("\t")
    assert qid in one and terms.split()


def test_anserini_term_names_are_unique_and_whitespace_free() -> None:
    names = term_names(["the", "a b", None, "", "the", "\n"])
    assert names == ["<id:0>", "<id:1>", "<id:2>", "<id:3>", "<id:4>", "<id:5>"]
    assert term_names(["x", "y", "z z"]) == ["x", "y", "<id:2>"]


def test_inspect_prints_expansion_terms(tiny_bert: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "--model", str(tiny_bert), "--top", "3", "alpha beta gamma"]) == 0
    out = capsys.readouterr().out
    assert "non-zero terms" in out and len(out.splitlines()[1].split()) == 6  # three (term, weight) pairs


def test_fusion_rrf_and_linear_by_hand(tmp_path: Path) -> None:
    a = {"q": {"d1": 3.0, "d2": 2.0, "d3": 1.0}}
    b = {"q": {"d2": 0.9, "d4": 0.5, "d1": 0.1}}
    rrf = fuse([a, b], "rrf", k=60)["q"]
    assert rrf["d2"] == pytest.approx(1 / 62 + 1 / 61) and rrf["d3"] == pytest.approx(1 / 63)
    assert list(rrf)[0] == "d2"
    linear = fuse([a, b], "linear", weights=[0.25, 0.75])["q"]
    assert linear["d1"] == pytest.approx(0.25 * 1.0 + 0.75 * 0.0)
    assert linear["d2"] == pytest.approx(0.25 * 0.5 + 0.75 * 1.0)
    with pytest.raises(ValueError, match="weights"):
        fuse([a, b], "linear", weights=[1.0])
    empty = {"q": {}}  # a run without documents (every term pruned) adds nothing
    assert fuse([a, empty], "rrf")["q"] == pytest.approx({"d1": 1 / 61, "d2": 1 / 62, "d3": 1 / 63})
    assert fuse([empty, a], "linear", weights=[0.5, 0.25])["q"] == pytest.approx({"d1": 0.25, "d2": 0.125, "d3": 0.0})
    assert fuse([empty, empty], "rrf") == {"q": {}}


def test_fusion_agrees_with_ranx_where_ranx_can_fuse() -> None:
    """ranx (the reference) on runs it accepts: every query answered by every run, no tied scores."""
    import random

    import ranx

    rng = random.Random(4)
    runs = [{f"q{q}": {f"d{d}": rng.random() for d in rng.sample(range(40), 15)} for q in range(6)} for _ in range(3)]
    reference = [ranx.Run(run, name=f"r{i}") for i, run in enumerate(runs)]
    for method, params, ours in (("rrf", {"k": 60}, fuse(runs, "rrf")),
                                 ("wsum", {"weights": [0.2, 0.3, 0.5]}, fuse(runs, "linear", weights=[0.2, 0.3, 0.5]))):
        theirs = ranx.fuse(reference, method=method, params=params,
                           **({"norm": "min-max"} if method == "wsum" else {})).to_dict()
        for qid, docs in theirs.items():
            assert ours[qid] == pytest.approx(docs, rel=1e-9)


def test_sparse_training_logs_nonzero_terms_and_loads_back(tiny_llama: Path, tmp_path: Path) -> None:
    from llmret.data.training import Passage, TrainExample, write_training

    docs = random_texts(24, seed=9, min_words=6)
    examples = [TrainExample(f"q{i}", " ".join(docs[i].split()[:3]), [Passage(f"d{i}", docs[i])],
                             [Passage(f"d{(i + 5) % 24}", docs[(i + 5) % 24])]) for i in range(24)]
    write_training(tmp_path / "train.jsonl", examples)
    settings = TrainSettings(retriever="sparse", train_data=str(tmp_path / "train.jsonl"), output_dir=str(tmp_path / "run"),
                             encoder=EncoderSettings(model=str(tiny_llama), query_max_length=16, passage_max_length=32,
                                                     bidirectional=True),
                             batch_size=4, group_size=2, max_steps=4, logging_steps=1, lora_r=4, learning_rate=1e-2)
    final = train(settings)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert all({"q_nonzero", "p_nonzero", "ranking_loss", "reg_loss"} <= set(r) for r in log)
    assert log[0]["reg_loss"] == 0.0 and log[-1]["reg_loss"] > 0.0  # quadratic warm-up starts at zero
    assert "temperature: 1.0" in (tmp_path / "run" / "train_config.yaml").read_text()
    meta = json.loads((final / "llmret.json").read_text())
    assert meta["retriever"] == "sparse" and meta["model_info"]["bidirectional"] is True
    encoder = SparseEncoder.load(EncoderSettings(model=str(final)), "cpu")
    assert encoder.info.bidirectional and encoder.info.pooling == "max"
    assert encoder.encode_queries(["alpha beta"]).shape == (1, encoder.vocab_size)


def test_mntp_masks_predicts_from_the_previous_position_and_loads_bidirectional(tiny_llama: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from llmret.training.mntp import MNTPSettings, mask_tokens, masked_lm_collator, mntp_loss, pack_blocks, run_mntp

    assert pack_blocks([[1, 5, 6], [1, 7], [1, 8, 9, 10]], 3) == [[1, 5, 6], [1, 7, 1], [8, 9, 10]]
    tok = AutoTokenizer.from_pretrained(tiny_llama)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        masked_lm_collator(tok, 0.2)  # the tiny word-level vocabulary has no "_"
    mask_word = WORDS[-1]
    mask_id = tok.convert_tokens_to_ids(mask_word)
    collator = masked_lm_collator(tok, 0.5, mask_word)
    assert tok.mask_token is None  # the encoder's tokenizer is left as it was

    # 80/10/10 over many positions; never padding, special tokens or a row's first real token
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, len(tok), (200, 64), generator=gen)
    ids[ids == mask_id] = 5  # so that "kept" and "masked" are told apart
    ids[:, 10] = tok.bos_token_id
    mask = torch.ones_like(ids)
    mask[:100, :5] = 0  # left padding in half the rows
    masked, chosen = mask_tokens(collator, ids, mask, tok.all_special_ids, torch.Generator().manual_seed(1))
    assert not chosen[:100, :6].any() and not chosen[:, 10].any() and not chosen[100:, 0].any()
    n = int(chosen.sum())
    assert abs(n / (200 * 64 - 100 * 6 - 100 * 1 - 200) - 0.5) < 0.02
    share = lambda m: float(m[chosen].float().mean())  # noqa: E731
    assert abs(share(masked == mask_id) - 0.8) < 0.02 and abs(share(masked == ids) - 0.1) < 0.02
    assert (masked[~chosen] == ids[~chosen]).all()
    again, _ = mask_tokens(collator, ids, mask, tok.all_special_ids, torch.Generator().manual_seed(1))
    assert torch.equal(again, masked)  # the step's generator decides: resumable

    ids, mask = ids[98:100, :12], mask[98:100, :12]
    masked, chosen = mask_tokens(collator, ids, mask, tok.all_special_ids, torch.Generator().manual_seed(2))
    encoder = SparseEncoder(load_backbone(str(tiny_llama), lm_head=True),
                            EncoderSettings(model=str(tiny_llama), bidirectional=True), "cpu")
    loss = mntp_loss(encoder.model, encoder, ids, mask, masked, chosen)
    logits = encoder.model(**encoder.model_inputs(masked, mask)).logits  # full logits, the textbook way
    rows, cols = chosen.nonzero(as_tuple=True)
    expected = torch.nn.functional.cross_entropy(logits[rows, cols - 1], ids[rows, cols])
    torch.testing.assert_close(loss, expected)

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(random_texts(32, seed=6))))
    final = run_mntp(MNTPSettings(model=str(tiny_llama), data=str(corpus), output_dir=str(tmp_path / "mntp"),
                                  max_steps=12, batch_size=8, max_length=16, learning_rate=1e-2, mask_token=mask_word))
    losses = [json.loads(line)["loss"] for line in (tmp_path / "mntp" / "log.jsonl").read_text().splitlines()]
    assert len(losses) == 12 and np.mean(losses[-3:]) < np.mean(losses[:3])
    adapted = SparseEncoder.load(EncoderSettings(model=str(final)), "cpu")
    assert adapted.info.bidirectional and adapted.info.pooling == "max"
    assert DenseEncoder.load(EncoderSettings(model=str(final)), "cpu").info.bidirectional

    # MNTP runs on the shared loop: killed after a checkpoint and resumed, it ends where one run does.
    def kill(step: int, loss: float) -> None:
        if step == 7:
            raise KeyboardInterrupt("killed")

    again = MNTPSettings(model=str(tiny_llama), data=str(corpus), output_dir=str(tmp_path / "again"),
                         max_steps=12, batch_size=8, max_length=16, learning_rate=1e-2, mask_token=mask_word, save_steps=4)
    with pytest.raises(KeyboardInterrupt):
        run_mntp(again, on_step=kill)
    resumed = run_mntp(again, resume=True)
    assert [json.loads(line)["step"] for line in (tmp_path / "again" / "log.jsonl").read_text().splitlines()] == list(range(1, 13))
    from safetensors.torch import load_file

    a, b = load_file(final / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_sparse_run_whose_vectors_all_died_stops_with_the_fix(tiny_llama: Path, tmp_path: Path) -> None:
    from llmret.data.training import Passage, TrainExample, write_training
    from llmret.training.steps import COLLAPSE_STEPS, Criterion
    from llmret.util.errors import InputError

    criterion = Criterion(objective=None)  # type: ignore[arg-type]  # check_alive reads only the counts
    for step in range(COLLAPSE_STEPS - 1):
        criterion.check_alive(0.0, 0.0, step)
    criterion.check_alive(0.0, 3.0, 9)  # one passage term left: alive, the count starts again
    for step in range(COLLAPSE_STEPS - 1):
        criterion.check_alive(0.0, 0.0, step)
    with pytest.raises(InputError, match="collapsed at step 7"):
        criterion.check_alive(0.0, 0.0, 7)
    # A real run driven to zero by an overwhelming FLOPS weight stops instead of saving a dead model. Adam
    # moves each weight ~lr a step whatever the loss's scale, so the run dies at a pace set by lr and its
    # steps: at lr 0.1 some terms flickered back on an AVX-512 CPU (not on an AVX2 one); at 0.01 every
    # vector is empty from about step 30 of 60 there, half the run left as margin as the lr decays.
    docs = random_texts(24, seed=9, min_words=6)
    examples = [TrainExample(f"q{i}", " ".join(docs[i].split()[:3]), [Passage(f"d{i}", docs[i])],
                             [Passage(f"d{(i + 5) % 24}", docs[(i + 5) % 24])]) for i in range(24)]
    write_training(tmp_path / "train.jsonl", examples)
    settings = TrainSettings(retriever="sparse", train_data=str(tmp_path / "train.jsonl"), output_dir=str(tmp_path / "run"),
                             encoder=EncoderSettings(model=str(tiny_llama), query_max_length=16, passage_max_length=32),
                             batch_size=4, group_size=2, max_steps=60, logging_steps=1, lora_r=4, learning_rate=0.01,
                             query_reg_weight=1e4, passage_reg_weight=1e4, reg_warmup_steps=0)
    with pytest.raises(InputError, match="sparse training collapsed"):
        train(settings)
    assert not (tmp_path / "run" / "final").exists()
