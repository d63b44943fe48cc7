"""Test helpers: deterministic synthetic runs over real judgments, tiny random models, small datasets."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from llmret.data.qrels import Qrels
from llmret.data.trec import Run

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MSMARCO_EVAL = SHARED / "msmarco-eval"
SCIFACT = SHARED / "beir" / "scifact"


def synthetic_run(qrels: Qrels, name: str, max_queries: int | None = None) -> Run:
    """A run over the judged documents plus unjudged ones, with deliberately tied scores.

    Seeded by dataset and query id so that the same run is built on every machine; some judged
    documents are left out so that recall is below 1.
    """
    run: Run = {}
    for qid in sorted(qrels)[:max_queries]:
        rng = random.Random(f"{name}:{qid}")
        judged = [d for d in sorted(qrels[qid]) if rng.random() < 0.8]
        docs = judged + [f"unjudged-{qid}-{i}" for i in range(rng.randint(5, 40))]
        run[qid] = {d: round(rng.random(), 2) for d in docs}  # two decimals: ties happen
    return run


def write_beir_folder(folder: Path, docs: dict[str, str], queries: dict[str, str], qrels: Qrels,
                      split: str = "test") -> Path:
    """A small BEIR folder on disk."""
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w") as f:
        for did, text in docs.items():
            f.write(json.dumps({"_id": did, "title": "", "text": text}) + "\n")
    with open(folder / "queries.jsonl", "w") as f:
        for qid, text in queries.items():
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    with open(folder / "qrels" / f"{split}.tsv", "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for qid, judged in qrels.items():
            for did, rel in judged.items():
                f.write(f"{qid}\t{did}\t{rel}\n")
    return folder


WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau "
         "upsilon phi chi psi omega red green blue cyan magenta yellow black white river mountain ocean desert "
         "forest city village road bridge tower castle garden").split()


def tiny_tokenizer(kind: str):
    """A word-level fast tokenizer over WORDS: Llama-like (BOS, no EOS) or BERT-like ([CLS] .. [SEP])."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"] if kind == "llama" else ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    vocab = {tok: i for i, tok in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=specials[3]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if kind == "llama":
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                       unk_token="<unk>")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
                                   unk_token="[UNK]", mask_token="[MASK]")


def make_tiny_model(folder: Path, kind: str = "llama", seed: int = 0) -> Path:
    """Save a random-initialised tiny Llama (causal LM) or BERT (masked LM) with its tokenizer."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer(kind)
    n = len(tokenizer)
    if kind == "llama":
        config = LlamaConfig(vocab_size=n, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                             bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=True)
        model = LlamaForCausalLM(config)
    else:
        config = BertConfig(vocab_size=n, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=128, pad_token_id=0)
        model = BertForMaskedLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def random_texts(n: int, seed: int, min_words: int = 3, max_words: int = 30) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words))) for _ in range(n)]


def write_training_file(path: Path, n: int, shifts: tuple[int, ...] = (5,), scored: bool = False) -> Path:
    """A Tevatron JSONL of ``n`` queries (each its document's first words), one positive and a negative
    ``shift`` documents further on for each of ``shifts``; ``scored``: with made-up teacher scores."""
    from llmret.data.training import Passage, TrainExample, write_training

    docs = random_texts(n, seed=11, min_words=6)
    rng = random.Random(5)

    def score() -> float | None:
        return round(rng.uniform(-3, 3), 3) if scored else None

    examples = [TrainExample(f"q{i}", " ".join(docs[i].split()[:3]), [Passage(f"d{i}", docs[i], score=score())],
                             [Passage(f"d{(i + k) % n}", docs[(i + k) % n], score=score()) for k in shifts])
                for i in range(n)]
    write_training(path, examples)
    return path


# Corpus embeddings of the real-model SciFact checks, kept between runs (outside the venv, so a fresh
# install reuses them). Every use re-encodes a sample of passages and requires the stored vectors to
# equal them, so a cache made by other code or weights is thrown away and rebuilt, never trusted.
TEST_CACHE = Path(os.environ.get("LLMRET_TEST_CACHE") or Path.home() / ".cache" / "llmret" / "test-embeddings")


def verified_embeddings(encoder, corpus, name: str, sample: int = 64) -> Path:  # noqa: ANN001 - TextEncoder, Corpus
    """A retriever ``work_dir`` holding ``corpus`` encoded by ``encoder``: reused when a seeded sample of
    ``sample`` passages, encoded afresh, equals the stored rows (to 1e-5), else encoded again."""
    import hashlib
    import shutil

    import numpy as np
    import scipy.sparse as sp

    from llmret.index.shards import encode_corpus

    key = hashlib.sha256(json.dumps(encoder.signature(), sort_keys=True, default=str).encode()).hexdigest()[:16]
    work = TEST_CACHE / f"{name}-{key}"
    for _ in range(2):
        shards = encode_corpus(encoder, corpus, work / "embeddings", signature=encoder.signature(), progress=False,
                               replace_stale=True)
        parts = list(shards)
        ids = [i for part_ids, _ in parts for i in part_ids]
        vectors = sp.vstack([v for _, v in parts]).tocsr() if sp.issparse(parts[0][1]) else np.concatenate([v for _, v in parts])
        pick = sorted(random.Random(0).sample(range(len(ids)), min(sample, len(ids))))
        found = corpus.lookup({ids[i] for i in pick})
        fresh = encoder.encode_passages([found[ids[i]].full_text() for i in pick], progress=False)
        stored = vectors[pick]
        fresh, stored = (fresh.toarray(), stored.toarray()) if sp.issparse(fresh) else (fresh, np.asarray(stored))
        if fresh.shape == stored.shape and np.allclose(fresh, stored, rtol=1e-5, atol=1e-5):
            return work
        shutil.rmtree(work / "embeddings")  # stale: made by other code than this; encode again
    raise AssertionError(f"{work}: freshly encoded passages differ from the ones just encoded")
