"""Bad input as a hostile but fair user gives it: each case a one-line error before any work (or a
bounded, said failure), and nothing lost. Run through the real command line, in-process or as a
subprocess where a signal, a file-size limit or an exit status is what is tested."""

from __future__ import annotations

import gzip
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from llmret.cli import main
from llmret.util.fileio import atomic_dir, atomic_write, held_alone

from helpers import random_texts, write_beir_folder


@pytest.fixture
def data(tmp_path: Path) -> Path:
    docs = {f"d{i}": text for i, text in enumerate(random_texts(30, seed=5, min_words=6))}
    queries = {f"q{i}": " ".join(docs[f"d{i}"].split()[:3]) for i in range(8)}
    return write_beir_folder(tmp_path / "data", docs, queries, {f"q{i}": {f"d{i}": 1} for i in range(8)})


def error_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one error line a command prints, its exit status 2 (bad input)."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and err.count("\n") == 0 and err.startswith("llmret: error: "), err
    return err


def test_a_zero_cutoff_is_refused_before_any_retrieval(data: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    err = error_of(["evaluate", "--retriever", "bm25", "--data", str(data), "--measures", "nDCG@0",
                    "--out", str(tmp_path / "out")], capsys)
    assert "nDCG@0" in err and "at least 1" in err and not (tmp_path / "out" / "run.trec").exists()


def test_output_locations_are_checked_before_the_work(data: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    cases = [
        ["evaluate", "--retriever", "bm25", "--data", str(data), "--out", str(a_file)],
        ["evaluate", "--retriever", "bm25", "--data", str(data), "--out", str(a_file / "below")],
        ["index", "--embeddings", str(tmp_path / "nowhere"), "--out", str(a_file)],
        ["mine", "--run", str(tmp_path / "run.trec"), "--data", str(data), "--split", "test",
         "--out", str(a_file / "train.jsonl")],
    ]
    for argv in cases:
        err = error_of(argv, capsys)
        assert str(a_file) in err and ("is a file" in err), err


def test_a_disk_that_fills_during_the_work_is_one_line_naming_the_file(data: Path, tmp_path: Path) -> None:
    # a file-size limit stands in for a full disk: the run file cannot be written whole
    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (512, 512))

    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "llmret.cli", "evaluate", "--retriever", "bm25", "--data", str(data),
                           "--out", str(out)], capture_output=True, text=True, preexec_fn=limited, timeout=300,
                          check=False)
    assert done.returncode == 1, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert "Traceback" not in done.stderr and last.startswith(f"llmret: error: cannot write {out}/"), done.stderr[-2000:]
    assert not list(out.glob(".*.tmp"))  # nothing half-written left behind


def test_ctrl_c_exits_130_in_one_line_and_the_encode_resumes_with_its_shards(tiny_bert: Path, tmp_path: Path) -> None:
    docs = {f"d{i}": text for i, text in enumerate(random_texts(3000, seed=9, min_words=20, max_words=40))}
    data = write_beir_folder(tmp_path / "big", docs, {"q0": "x"}, {"q0": {"d0": 1}})
    out = tmp_path / "emb"
    argv = [sys.executable, "-m", "llmret.cli", "encode", "--retriever", "dense", "--model", str(tiny_bert),
            "--data", str(data), "--what", "corpus", "--shard-size", "100", "--out", str(out)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (out / "corpus" / "shard-00001.ids").is_file():
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()[-2000:]
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("llmret: interrupted")
    kept = sorted(p.name for p in (out / "corpus").glob("shard-*.ids"))
    assert len(kept) >= 2
    again = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stderr.count("already encoded, skipped") == len(kept)
    assert json.loads((out / "corpus" / "meta.json").read_text())["complete"] is True


def test_written_files_and_folders_follow_the_umask(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", f"""
import os
os.umask(0o002)
from pathlib import Path
from llmret.util.fileio import atomic_dir, atomic_write
with atomic_write(Path({str(tmp_path)!r}) / "shared.json") as h:
    h.write("{{}}")
with atomic_dir(Path({str(tmp_path)!r}) / "index") as d:
    (d / "x").write_text("1")
"""], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "shared.json").stat().st_mode & 0o777 == 0o664  # group-readable and writable
    assert (tmp_path / "index").stat().st_mode & 0o777 == 0o775
    with atomic_write(tmp_path / "mine.txt") as handle:  # this process's umask, whatever it is
        handle.write("x")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "mine.txt").stat().st_mode & 0o777 == 0o666 & ~mask
    with atomic_dir(tmp_path / "folder"):
        pass
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o777 & ~mask


def test_a_truncated_gzip_corpus_names_the_file_and_line(data: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    lines = "".join(json.dumps({"_id": f"d{i}", "text": "words " * 30}) + "\n" for i in range(3000))
    packed = gzip.compress(lines.encode())
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "corpus.jsonl.gz").write_bytes(packed[:len(packed) // 2])
    for name in ("queries.jsonl", "qrels"):
        os.symlink(data / name, broken / name)
    err = error_of(["evaluate", "--retriever", "bm25", "--data", str(broken), "--out", str(tmp_path / "o")], capsys)
    assert "corpus.jsonl.gz:" in err and "cut short or corrupt" in err


def test_small_bad_inputs_are_one_line_each(data: Path, tiny_bert: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run.trec"
    run.write_text("q0 Q0 d1 1 1.0 x\n")
    err = error_of(["mine", "--run", str(run), "--data", str(data), "--split", "test", "--count", "-3",
                    "--out", str(tmp_path / "t.jsonl")], capsys)
    assert "count must be at least 1" in err
    started = time.monotonic()
    err = error_of(["evaluate", "--retriever", "dense", "--model", str(tiny_bert), "--data", str(data),
                    "--index", "IVF,Nonsense", "--out", str(tmp_path / "o")], capsys)
    assert "FAISS cannot make an index 'IVF,Nonsense'" in err and time.monotonic() - started < 30
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"system": "a", "per_query": {"nDCG@10": {"q0": 1.0}}}))
    err = error_of(["compare", str(metrics)], capsys)
    assert "at least two metrics.json files" in err


def test_a_second_run_of_one_study_is_refused_and_its_out_must_be_a_folder(study_file: Path, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    spec = yaml.safe_load(study_file.read_text())
    with held_alone(Path(spec["out"]) / ".run.lock", "a first run"):  # as another process running it would
        err = error_of(["study", "run", str(study_file)], capsys)
    assert "is already running" in err
    a_file = tmp_path / "results-file"
    a_file.write_text("x")
    err = error_of(["study", "run", str(study_file), "--out", str(a_file)], capsys)
    assert "the output folder is a file" in err
