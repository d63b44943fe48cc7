"""Teachers against transformers' own forward on each pair alone; annotate resumes without scoring twice;
mined negatives skip positives and drop likely false negatives; annotated files train with KD."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llmret.cli import main
from llmret.data.training import read_training
from llmret.training.annotate import annotate
from llmret.training.teachers import CrossEncoderTeacher, JudgeTeacher, RetrieverTeacher, load_teacher, score_pairs
from llmret.util.errors import DataError

from helpers import random_texts, tiny_tokenizer, write_beir_folder, write_training_file


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random BERT sequence classifier with one label: the cross-encoder shape (ms-marco-MiniLM)."""
    from transformers import BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("cross-encoder")
    torch.manual_seed(0)
    tokenizer = tiny_tokenizer("bert")
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=128, pad_token_id=0, num_labels=1)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_cross_encoder_scores_are_the_models_logit_on_each_pair_alone(tiny_cross_encoder: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    queries, passages = random_texts(5, seed=1, max_words=4), random_texts(5, seed=2)
    scores = CrossEncoderTeacher(str(tiny_cross_encoder)).score(queries, passages)  # padded together
    tokenizer = AutoTokenizer.from_pretrained(tiny_cross_encoder)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_cross_encoder).eval()
    for q, p, s in zip(queries, passages, scores):
        with torch.no_grad():
            alone = model(**tokenizer(q, p, return_tensors="pt")).logits[0, 0].item()
        assert s == pytest.approx(alone, abs=1e-5)
    assert len(set(scores)) == 5


def test_judge_scores_are_log_p_yes_after_the_prompt(tiny_llama: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    prompt = "query {query} passage {passage} relevant"
    judge = JudgeTeacher(str(tiny_llama), prompt=prompt, answer=" red")
    queries, passages = random_texts(4, seed=3, max_words=3), random_texts(4, seed=4, max_words=12)
    scores = judge.score(queries, passages)  # left-padded batch
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    red = tokenizer.convert_tokens_to_ids("red")
    for q, p, s in zip(queries, passages, scores):
        ids = tokenizer(prompt.format(query=q, passage=p), return_tensors="pt")
        with torch.no_grad():
            logits = model(**ids).logits[0, -1]
        assert s == pytest.approx(torch.log_softmax(logits, -1)[red].item(), abs=1e-4)
    with pytest.raises(ValueError, match="must contain"):
        JudgeTeacher(str(tiny_llama), prompt="no slots")


def test_retriever_teacher_scores_are_its_similarities(tiny_bert: Path) -> None:
    teacher = load_teacher(f"dense:{tiny_bert}")
    assert isinstance(teacher, RetrieverTeacher)
    queries, passages = random_texts(3, seed=5, max_words=4), random_texts(3, seed=6)
    q, p = teacher.encoder.encode_queries(queries), teacher.encoder.encode_passages(passages)
    assert teacher.score(queries, passages) == pytest.approx([float(q[i] @ p[i]) for i in range(3)], abs=1e-5)
    with pytest.raises(ValueError, match="KIND:MODEL"):
        load_teacher("reranker:x")


@pytest.mark.parametrize("kind", ["dense", "sparse"])
@pytest.mark.parametrize("cache_size", [100_000, 2])
def test_retriever_teacher_encodes_each_text_once_across_chunks(tiny_bert: Path, kind: str, cache_size: int) -> None:
    from llmret.data.training import Passage

    teacher = load_teacher(f"{kind}:{tiny_bert}")
    teacher.cache_size = cache_size
    queries, texts = random_texts(3, seed=7, max_words=4), random_texts(5, seed=8)
    pairs = [(queries[i % 3], Passage(f"p{(i * 2) % 5}", texts[(i * 2) % 5])) for i in range(15)]
    encoded: list[str] = []
    for name in ("encode_queries", "encode_passages"):  # the real encoder, its inputs recorded
        method = getattr(teacher.encoder, name)
        setattr(teacher.encoder, name, lambda batch, method=method: encoded.extend(batch) or method(batch))
    score_pairs(teacher, pairs, batch_size=4)
    if cache_size > len(texts):
        assert sorted(encoded) == sorted(queries + texts)  # each text once, though pairs repeat them across chunks
    for query, passage in pairs:  # each pair's score is its own texts' similarity, encoded alone
        q = teacher.encoder.encode_queries([query])
        d = teacher.encoder.encode_passages([passage.full_text()])
        alone = float(q.multiply(d).sum()) if kind == "sparse" else float(q[0] @ d[0])
        assert passage.score == pytest.approx(alone, abs=1e-5)


class Killed(Exception):
    pass


class Counting:
    """A real teacher that counts the pairs it scores, and can die after a number of calls."""

    def __init__(self, teacher: CrossEncoderTeacher, die_after: int | None = None) -> None:
        self.teacher, self.name, self.die_after, self.pairs, self.calls = teacher, teacher.name, die_after, [], 0

    def score(self, queries: list[str], passages: list[str]) -> list[float]:
        if self.die_after is not None and self.calls == self.die_after:
            raise Killed()
        self.calls += 1
        self.pairs += list(zip(queries, passages))
        return self.teacher.score(queries, passages)


def test_annotate_resumes_where_it_died_and_scores_nothing_twice(tiny_cross_encoder: Path, tmp_path: Path) -> None:
    source = write_training_file(tmp_path / "train.jsonl", 30, (1, 7))
    teacher = CrossEncoderTeacher(str(tiny_cross_encoder))
    whole = annotate(source, tmp_path / "whole.jsonl", Counting(teacher), batch_size=7, block_queries=4)

    out = tmp_path / "resumed.jsonl"
    dying = Counting(teacher, die_after=6)
    with pytest.raises(Killed):
        annotate(source, out, dying, batch_size=7, block_queries=4)
    partial = out.with_name(out.name + ".partial")
    assert not out.exists() and partial.is_file()
    with open(partial, "a") as handle:
        handle.write('{"query_id": "q8", "query"')  # died while writing a row
    rest = Counting(teacher)
    annotate(source, out, rest, batch_size=7, block_queries=4)
    assert not partial.exists()
    total = 30 * 3
    assert len(dying.pairs) + len(rest.pairs) < total + 7 * 2  # at most the unfinished block is redone
    done_rows = len(dying.pairs) // 12 * 4  # complete blocks of 4 queries x 3 passages were kept
    assert len(rest.pairs) == total - done_rows * 3
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [json.loads(line) for line in whole.read_text().splitlines()] == rows
    assert {r["teacher"] for r in rows} == {teacher.name}
    examples = read_training(out)
    assert all(p.score is not None for ex in examples for p in ex.positives + ex.negatives)

    partial.write_text(json.dumps({"query_id": "q0", "teacher": "judge:other"}) + "\n")
    with pytest.raises(DataError, match="resumed.jsonl.partial:1: scored by 'judge:other'"):
        annotate(source, out, teacher)


def test_mine_skips_positives_and_drops_likely_false_negatives(tmp_path: Path, tiny_cross_encoder: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    from llmret.data.dataset import load_dataset
    from llmret.data.trec import write_run
    from llmret.training.mining import mine
    from llmret.training.settings import MiningSettings

    texts = random_texts(12, seed=8, min_words=5)
    docs = {f"d{i}": t for i, t in enumerate(texts)}
    folder = write_beir_folder(tmp_path / "beir", docs, {"q1": texts[0][:20], "q2": texts[5][:20], "q3": "x y"},
                               {"q1": {"d0": 1, "d3": 0}, "q2": {"d5": 2}, "q3": {"d9": 0}}, split="train")
    run = {"q1": {f"d{i}": 10.0 - i for i in range(10)}, "q2": {"d1": 5.0, "d2": 4.5, "d3": 1.0, "d4": 0.5}}
    data = load_dataset(folder, "train")
    examples, stats = mine(data, run, MiningSettings(depth_from=0, depth_to=6, count=3, margin=2.0))
    by_q = {ex.query_id: ex for ex in examples}
    assert set(by_q) == {"q1", "q2"} and stats["queries without a judged positive"] == 1
    # q1: ranks 0-5 are d0..d5; d0 is the positive (score 10): margin 2 drops d1 (9); d2, at exactly 8, stays
    assert [p.docid for p in by_q["q1"].negatives] == ["d2", "d3", "d4"]  # judged-0 d3 is a real negative
    assert by_q["q1"].negatives[0].text == docs["d2"] and by_q["q1"].negatives[0].score is None
    # q2: its positive is not in the run: no margin filter, counted
    assert [p.docid for p in by_q["q2"].negatives] == ["d1", "d2", "d3"]
    assert stats["queries not margin-filtered (no positive in the run)"] == 1

    teacher = CrossEncoderTeacher(str(tiny_cross_encoder))
    scored, stats = mine(data, run, MiningSettings(0, 10, 9, max_teacher_score=0.0), teacher)
    q1 = {ex.query_id: ex for ex in scored}["q1"]
    candidates = [f"d{i}" for i in range(1, 10)]
    expected = teacher.score([data.queries["q1"]] * 9, [docs[d] for d in candidates])
    assert [p.docid for p in q1.negatives] == [d for d, s in zip(candidates, expected) if s <= 0.0]
    assert q1.positives[0].score == pytest.approx(teacher.score([data.queries["q1"]], [docs["d0"]])[0], abs=1e-6)

    write_run(tmp_path / "run.trec", run)
    assert main(["mine", "--run", str(tmp_path / "run.trec"), "--data", str(folder), "--out", str(tmp_path / "m.jsonl"),
                 "--depth", "0", "6", "--count", "3", "--margin", "2", "--by-id"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [p["docid"] for p in rows[0]["negative_passages"]] == ["d2", "d3", "d4"] and "text" not in rows[0]["positive_passages"][0]
    assert "dropped: within the margin of a positive: 1" in capsys.readouterr().out
    qrels = {"q1": {"d0": 1, "d3": 0}, "q2": {"d5": 2}}
    for row in rows:  # no judged positive among any query's negatives
        assert not {p["docid"] for p in row["negative_passages"]} & {d for d, r in qrels[row["query_id"]].items() if r > 0}
    assert main(["mine", "--run", str(tmp_path / "run.trec"), "--data", str(folder), "--out", str(tmp_path / "x.jsonl"),
                 "--max-teacher-score", "1"]) == 2  # needs a teacher: a clear error


def test_annotated_file_trains_with_kd_from_the_cli(tiny_cross_encoder: Path, tiny_llama: Path, tmp_path: Path) -> None:
    source = write_training_file(tmp_path / "train.jsonl", 12, (1, 4))
    scored = tmp_path / "scored.jsonl"
    assert main(["annotate", "--input", str(source), "--teacher", f"cross-encoder:{tiny_cross_encoder}",
                 "--out", str(scored)]) == 0
    out = tmp_path / "kd"
    assert main(["train", "--model", str(tiny_llama), "--train-data", str(scored), "--output-dir", str(out),
                 "--objective", "kd", "--batch-size", "4", "--group-size", "3", "--max-steps", "2",
                 "--logging-steps", "1", "--query-max-length", "12", "--passage-max-length", "24"]) == 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all("kd_loss" in r for r in log)
    assert main(["train", "--model", str(tiny_llama), "--train-data", str(source), "--output-dir", str(out),
                 "--objective", "kd"]) == 2  # unscored: a clear error, no model loaded


def test_train_teacher_scores_the_chosen_queries_once_and_distils_from_them(
        tiny_cross_encoder: Path, tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    monkeypatch.setenv("LLMRET_CACHE", str(tmp_path / "cache"))
    source = write_training_file(tmp_path / "train.jsonl", 16, (1, 4))
    common = ["--model", str(tiny_llama), "--train-data", str(source), "--teacher", f"cross-encoder:{tiny_cross_encoder}",
              "--max-train-queries", "8", "--batch-size", "4", "--group-size", "3", "--max-steps", "2",
              "--logging-steps", "1", "--query-max-length", "12", "--passage-max-length", "24"]
    assert main(["train", *common, "--objective", "cl", "--output-dir", str(tmp_path / "cl")]) == 0
    assert not (tmp_path / "cache" / "annotations").exists()  # contrastive training needs no teacher
    assert main(["train", *common, "--objective", "kd", "--output-dir", str(tmp_path / "kd")]) == 0
    (cached,) = (tmp_path / "cache" / "annotations").glob("*.jsonl")
    scored = read_training(cached)
    assert len(scored) == 8 and {e.query_id for e in scored} < {e.query_id for e in read_training(source)}
    tokenizer = AutoTokenizer.from_pretrained(tiny_cross_encoder)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_cross_encoder).eval()
    for example in scored[:3]:
        for passage in example.positives + example.negatives:
            with torch.no_grad():
                alone = model(**tokenizer(example.query, passage.full_text(), return_tensors="pt")).logits[0, 0].item()
            assert passage.score == pytest.approx(alone, abs=1e-5)
    log = [json.loads(line) for line in (tmp_path / "kd" / "log.jsonl").read_text().splitlines()]
    assert all("kd_loss" in r for r in log)
    stamp = cached.stat().st_mtime_ns
    assert main(["train", *common, "--objective", "cl+kd", "--output-dir", str(tmp_path / "clkd")]) == 0
    assert [p.name for p in (tmp_path / "cache" / "annotations").iterdir()] == [cached.name]
    assert cached.stat().st_mtime_ns == stamp  # the same queries under the same teacher: scored once


def test_teacher_scoring_as_read_scores_only_the_pairs_read_and_trains_as_scoring_first(
        tiny_cross_encoder: Path, tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from llmret.data.sampling import epoch_order, sample_group
    from llmret.training import train as train_module

    source = write_training_file(tmp_path / "train.jsonl", 16, (1, 4))
    common = ["--model", str(tiny_llama), "--train-data", str(source), "--teacher", f"cross-encoder:{tiny_cross_encoder}",
              "--objective", "cl+kd", "--batch-size", "4", "--group-size", "3", "--max-steps", "2",
              "--logging-steps", "1", "--query-max-length", "12", "--passage-max-length", "24"]
    scored: list[tuple[str, str]] = []
    real = CrossEncoderTeacher.score

    def counting(self: CrossEncoderTeacher, queries: list[str], passages: list[str]) -> list[float]:
        scored.extend(zip(queries, passages))
        return real(self, queries, passages)

    monkeypatch.setattr(CrossEncoderTeacher, "score", counting)
    targets: list[float] = []  # the teacher scores each training batch carries
    real_batch = train_module.make_batch

    def recording(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        batch = real_batch(*args, **kwargs)
        targets.extend(batch.teacher.flatten().tolist() if batch.teacher is not None else [])
        return batch

    monkeypatch.setattr(train_module, "make_batch", recording)
    monkeypatch.setenv("LLMRET_CACHE", str(tmp_path / "cache-as-read"))
    assert main(["train", *common, "--teacher-scoring", "as-read", "--output-dir", str(tmp_path / "as-read")]) == 0
    assert not (tmp_path / "cache-as-read" / "annotations").exists()  # nothing scored ahead
    examples = read_training(source)
    read = {(examples[i].query, p.full_text()) for i in epoch_order(16, 0, 42)[:8]
            for p in sample_group(examples, i, 0, 42, 3)}  # the two steps' 4 queries, 3 passages each
    assert len(scored) == len(set(scored)) and set(scored) == read  # each pair read, once; nothing else

    scored.clear()
    monkeypatch.setenv("LLMRET_CACHE", str(tmp_path / "cache-before"))
    assert main(["train", *common, "--output-dir", str(tmp_path / "before")]) == 0
    assert len(scored) == sum(len(e.positives) + len(e.negatives) for e in examples) > len(read)  # all, first
    logs = [[json.loads(line) for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]
            for run in ("as-read", "before")]
    assert len(targets) == 48 and targets[:24] == pytest.approx(targets[24:], abs=1e-6)  # each run's 2 x 4 groups of 3
    for key in ("kd_loss", "ranking_loss", "loss"):  # the same scores, so the same training
        assert [r[key] for r in logs[0]] == pytest.approx([r[key] for r in logs[1]], rel=1e-4)
    assert main(["train", "--model", str(tiny_llama), "--train-data", str(source), "--objective", "kd",
                 "--teacher-scoring", "as-read", "--output-dir", str(tmp_path / "none")]) == 2  # no teacher named

    group_targets = [targets[i:i + 3] for i in range(0, 24, 3)]  # the as-read run's 8 groups
    scored.clear()
    targets.clear()
    assert main(["train", *common, "--teacher-scoring", "as-read", "--kd-in-batch",
                 "--output-dir", str(tmp_path / "in-batch")]) == 0
    order = epoch_order(16, 0, 42)
    in_batch = set()
    for step in range(2):
        queries = order[4 * step:4 * step + 4]
        texts = [p.full_text() for i in queries for p in sample_group(examples, i, 0, 42, 3)]
        in_batch |= {(examples[i].query, text) for i in queries for text in texts}
    assert len(scored) == len(in_batch) and set(scored) == in_batch  # each query x its batch's passages, once
    rows = [targets[i:i + 12] for i in range(0, len(targets), 12)]
    assert len(rows) == 8 and all(row[3 * (k % 4):3 * (k % 4) + 3] == pytest.approx(group_targets[k], abs=1e-6)
                                  for k, row in enumerate(rows))  # its own group's scores where its group sits
    assert main(["train", *common, "--kd-in-batch", "--output-dir", str(tmp_path / "refused")]) == 2  # scored before


def test_scores_as_read_keeps_the_last_pairs_read_and_scores_an_evicted_one_again(tiny_cross_encoder: Path) -> None:
    from llmret.data.training import Passage
    from llmret.training.teachers import ScoresAsRead

    counting = Counting(CrossEncoderTeacher(str(tiny_cross_encoder)))
    scores = ScoresAsRead(counting, cache_size=2)
    a, b, c = Passage("a", "tower bridge"), Passage("b", "garden river"), Passage("c", "omega psi")
    first = scores(["q"], [[a, b]])
    assert len(counting.pairs) == 2 and scores(["q"], [[a, b]]) == first and len(counting.pairs) == 2  # kept
    scores(["q"], [[c]])  # the third pair evicts the oldest, (q, a)
    assert scores(["q"], [[a, b]])[0] == pytest.approx(first[0], abs=1e-6)
    assert counting.pairs[3:] == [("q", "tower bridge")]  # a scored again, b still kept


def test_distillation_leaves_out_queries_without_hard_negatives_and_says_so(
        tiny_llama: Path, tiny_cross_encoder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from llmret.data.training import Passage, TrainExample
    from llmret.training.train import with_negatives

    scored = write_training_file(tmp_path / "scored.jsonl", 9, (1, 4), scored=True)
    rows = [json.loads(line) for line in scored.read_text().splitlines()]
    rows[4]["negative_passages"] = []  # every BM25 hit of this query was judged relevant
    scored.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with caplog.at_level("WARNING"):
        assert main(["train", "--model", str(tiny_llama), "--train-data", str(scored), "--output-dir",
                     str(tmp_path / "kd"), "--objective", "cl+kd", "--batch-size", "4", "--group-size", "2",
                     "--max-steps", "2", "--query-max-length", "12", "--passage-max-length", "24"]) == 0
    assert "1 of 9 training queries have no hard negative (the first: 'q4')" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):  # scored as read, each pair is scored for the query reading it: q4 stays
        assert main(["train", "--model", str(tiny_llama), "--train-data", str(scored), "--output-dir",
                     str(tmp_path / "as-read"), "--objective", "cl+kd", "--teacher",
                     f"cross-encoder:{tiny_cross_encoder}", "--teacher-scoring", "as-read", "--batch-size", "9",
                     "--group-size", "2", "--max-steps", "1", "--query-max-length", "12",
                     "--passage-max-length", "24"]) == 0
    assert "no hard negative" not in caplog.text
    caplog.clear()

    examples = [TrainExample(f"q{i}", f"query {i}", [Passage(f"p{i}", "text", score=1.0)],
                             [Passage("n", "other", score=0.5)] if i != 1 else []) for i in range(3)]
    with caplog.at_level("WARNING"):
        kept = with_negatives(examples)
    assert [e.query_id for e in kept] == ["q0", "q2"]
    assert "1 of 3 training queries have no hard negative (the first: 'q1')" in caplog.text
    assert with_negatives(kept) == kept
