"""Readers and writers for every format, and a clear error for each kind of malformed input."""

import gzip
import json
import re
from pathlib import Path

import pytest

from llmret.data import Corpus, Document, load_dataset, load_queries, read_qrels, read_run, write_qrels, write_run
from llmret.data.training import Passage, TrainExample, read_training, write_training
from llmret.util.errors import DataError
from llmret.util.fileio import atomic_write

from helpers import MSMARCO_EVAL, SCIFACT, write_beir_folder


def lines(path: Path, *rows: str) -> Path:
    path.write_text("".join(r + "\n" for r in rows), encoding="utf-8")
    return path


# ---- corpora ---------------------------------------------------------------------------------------
def test_scifact_corpus_streams_whole(tmp_path: Path) -> None:
    corpus = Corpus.from_beir(SCIFACT / "corpus.jsonl.gz")
    assert len(corpus) == 5183
    first = next(iter(corpus))
    assert first.id and first.text
    # Write and read back through gzip: same documents.
    corpus.write_beir(tmp_path / "c.jsonl.gz")
    again = Corpus.from_beir(tmp_path / "c.jsonl.gz")
    assert again.ids() == corpus.ids()
    assert next(iter(again)) == first


@pytest.mark.parametrize(
    "rows, problem",
    [
        (['{"_id": "a", "text": "x"}', '{"_id": "a", "text": "y"}'], "duplicate document id 'a'"),
        (['{"_id": "a", "text": "x"}', '{"_id": "b", "text": '], "invalid JSON"),
        (['{"text": "x"}'], "missing field '_id'"),
        (['{"_id": "a", "title": "", "text": "  "}'], "empty title and text"),
        (['["a", "x"]'], "expected a JSON object"),
        (['{"_id": "a", "text": 3}'], "must be strings"),
    ],
)
def test_corpus_errors_name_file_and_line(tmp_path: Path, rows: list[str], problem: str) -> None:
    path = lines(tmp_path / "corpus.jsonl", *rows)
    with pytest.raises(DataError) as err:
        list(Corpus.from_beir(path))
    assert problem in str(err.value)
    assert str(err.value).startswith(f"{path}:{len(rows)}:")


def test_bad_encoding_is_reported_with_line(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b'{"_id": "a", "text": "ok"}\n{"_id": "b", "text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"corpus.jsonl:2: not valid UTF-8"):
        list(Corpus.from_beir(path))


def test_msmarco_tsv_collection_and_queries(tmp_path: Path) -> None:
    corpus = Corpus.from_file(lines(tmp_path / "collection.tsv", "0\tfirst passage", "1\tA title\tsecond"))
    docs = list(corpus)
    assert docs == [Document("0", "first passage"), Document("1", "second", "A title")]
    assert docs[1].full_text() == "A title second"
    assert load_queries(lines(tmp_path / "queries.tsv", "7\twhat is x", "8\twhy")) == {"7": "what is x", "8": "why"}
    with pytest.raises(DataError, match=r"collection.tsv:1: expected 2 or 3"):
        list(Corpus.from_file(lines(tmp_path / "collection.tsv", "0\ta\tb\tc")))
    with pytest.raises(DataError, match=r"queries.tsv:2: query '8' has empty text"):
        load_queries(lines(tmp_path / "queries.tsv", "7\tx", "8\t "))


# ---- queries and qrels -------------------------------------------------------------------------------
def test_real_qrels_beir_and_trec_forms(tmp_path: Path) -> None:
    dl19 = read_qrels(MSMARCO_EVAL / "dl19" / "qrels" / "test.tsv")
    assert len(dl19) == 43 and sum(len(v) for v in dl19.values()) == 9260
    assert {r for v in dl19.values() for r in v.values()} == {0, 1, 2, 3}
    trec = lines(tmp_path / "qrels.txt", *(f"{q} 0 {d} {r}" for q, v in dl19.items() for d, r in v.items()))
    assert read_qrels(trec) == dl19
    write_qrels(tmp_path / "again.tsv", dl19)
    assert read_qrels(tmp_path / "again.tsv") == dl19


@pytest.mark.parametrize(
    "rows, problem, line",
    [
        (["query-id\tcorpus-id\tscore", "q1\td1"], "expected 3 (BEIR) or 4 (TREC) fields", 2),
        (["q1\td1\tyes"], "relevance 'yes' is not a number", 1),
        (["q1\td1\t1", "q1\td1\t0"], "conflicting judgments", 2),
    ],
)
def test_qrels_errors(tmp_path: Path, rows: list[str], problem: str, line: int) -> None:
    path = lines(tmp_path / "qrels.tsv", *rows)
    with pytest.raises(DataError, match=re.escape(f"qrels.tsv:{line}: {problem}")):
        read_qrels(path)


def test_dataset_checks_qrels_against_queries_and_corpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    docs, queries = {"d1": "one", "d2": "two"}, {"q1": "first?", "q2": "second?", "q3": "unjudged"}
    folder = write_beir_folder(tmp_path / "ok", docs, queries, {"q1": {"d1": 1}, "q2": {"d2": 1}})
    data = load_dataset(folder, "test")
    assert set(data.queries) == {"q1", "q2"}
    assert "1 queries have no judgments" in capsys.readouterr().err  # said once, not an error
    bad_doc = write_beir_folder(tmp_path / "bad_doc", docs, queries, {"q1": {"d9": 1}})
    with pytest.raises(DataError, match="judged documents are not in the corpus, e.g. 'd9'"):
        load_dataset(bad_doc)
    bad_query = write_beir_folder(tmp_path / "bad_query", docs, queries, {"q9": {"d1": 1}})
    with pytest.raises(DataError, match="judged queries are not in queries.jsonl, e.g. 'q9'"):
        load_dataset(bad_query)
    with pytest.raises(DataError, match="no judgments for split 'dev' \\(available: test\\)"):
        load_dataset(folder, "dev")


def test_real_scifact_dataset() -> None:
    data = load_dataset(SCIFACT, "test")
    assert len(data.queries) == 300 and sum(len(v) for v in data.qrels.values()) == 339


# ---- runs ----------------------------------------------------------------------------------------------
def test_run_roundtrip_ranks_like_trec_eval(tmp_path: Path) -> None:
    run = {"q1": {"a": 0.5, "b": 0.9, "c": 0.5}}
    write_run(tmp_path / "run.trec", run, tag="t")
    text = (tmp_path / "run.trec").read_text().splitlines()
    assert [r.split()[2] for r in text] == ["b", "c", "a"]  # ties: descending id, as trec_eval orders them
    assert [r.split()[3] for r in text] == ["1", "2", "3"]
    assert read_run(tmp_path / "run.trec") == run


def test_a_run_tag_with_spaces_is_still_one_field(tmp_path: Path) -> None:
    write_run(tmp_path / "run.trec", {"q1": {"a": 1.0}}, tag="minilm-l6 (zero-shot) [seed=1]")
    assert (tmp_path / "run.trec").read_text().split() == ["q1", "Q0", "a", "1", "1.000000", "minilm-l6_(zero-shot)_[seed=1]"]
    assert read_run(tmp_path / "run.trec") == {"q1": {"a": 1.0}}


@pytest.mark.parametrize(
    "row, problem",
    [("q1 Q0 d1 1 0.5", "expected 6 fields"), ("q1 Q0 d1 1 high t", "score 'high' is not a number"),
     ("q1 Q0 d1 1 nan t", "score is NaN")],
)
def test_run_errors(tmp_path: Path, row: str, problem: str) -> None:
    with pytest.raises(DataError, match=rf"run.trec:2: {problem}"):
        read_run(lines(tmp_path / "run.trec", "q1 Q0 d0 1 1.0 t", row))


def test_run_duplicate_document(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"run.trec:2: document 'd0' appears twice for query 'q1'"):
        read_run(lines(tmp_path / "run.trec", "q1 Q0 d0 1 1.0 t", "q1 Q0 d0 2 0.5 t"))


# ---- training data ----------------------------------------------------------------------------------------
def test_training_inline_and_by_id(tmp_path: Path) -> None:
    corpus = Corpus.from_documents([Document("d1", "one", "T1"), Document("d2", "two"), Document("d3", "three")])
    examples = [TrainExample("q1", "query one", [Passage("d1", "one", "T1", 3.5)], [Passage("d2", "two", "", -1.0)])]
    write_training(tmp_path / "inline.jsonl", examples)
    assert read_training(tmp_path / "inline.jsonl") == examples
    write_training(tmp_path / "ids.jsonl", examples, by_id=True)
    row = json.loads((tmp_path / "ids.jsonl").read_text())
    assert row["positive_passages"] == [{"docid": "d1", "score": 3.5}]
    assert read_training(tmp_path / "ids.jsonl", corpus) == examples
    ids_only = lines(tmp_path / "lists.jsonl", json.dumps(
        {"query_id": "q", "query": "x", "positive_document_ids": ["d3"], "negative_document_ids": ["d1"]}))
    (ex,) = read_training(ids_only, corpus)
    assert ex.positives[0].text == "three" and ex.negatives[0].full_text() == "T1 one"


@pytest.mark.parametrize(
    "row, problem",
    [({"query_id": "q", "query": "x", "positive_passages": []}, "query 'q' has no positive passage"),
     ({"query_id": "q", "positive_passages": [{"docid": "d1", "text": "a"}]}, "missing field 'query'"),
     ({"query_id": "q", "query": "x", "positive_passages": [{"text": "a"}]}, "missing field 'docid'"),
     ({"query_id": "q", "query": "x", "positive_passages": [{"docid": "zz"}]}, "passage 'zz' is not in corpus"),
     ({"query_id": "q", "query": "x", "positive_passages": [{"docid": "d1", "text": "a", "score": "hi"}]},
      "passage 'd1': 'score' must be a number")],
)
def test_training_errors(tmp_path: Path, row: dict, problem: str) -> None:
    path = lines(tmp_path / "train.jsonl", json.dumps({"query_id": "q0", "query": "ok", "positive_document_ids": ["d1"]}),
                 json.dumps(row))
    corpus = Corpus.from_documents([Document("d1", "one")])
    with pytest.raises(DataError, match=rf"train.jsonl:2: {problem}"):
        read_training(path, corpus)


# ---- atomic writes --------------------------------------------------------------------------------------------
def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as handle:
            handle.write("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]
    with atomic_write(tmp_path / "z.txt.gz") as handle:
        handle.write("compressed\n")
    assert gzip.decompress((tmp_path / "z.txt.gz").read_bytes()) == b"compressed\n"


def test_atomic_dir_keeps_the_old_folder_until_the_new_one_is_whole(tmp_path: Path) -> None:
    from llmret.util.fileio import atomic_dir

    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text("half")
            raise RuntimeError("killed")
    assert (target / "a.txt").read_text() == "first" and [p.name for p in tmp_path.iterdir()] == ["model"]
    with atomic_dir(target) as tmp:
        (tmp / "b.txt").write_text("second")
    assert [p.name for p in target.iterdir()] == ["b.txt"] and [p.name for p in tmp_path.iterdir()] == ["model"]


def test_corpus_passes_after_the_first_stream_the_same_documents() -> None:
    corpus = Corpus.from_beir(SCIFACT / "corpus.jsonl.gz")
    first = [d.id for d in corpus]
    assert [d.id for d in corpus] == first == corpus.ids()
