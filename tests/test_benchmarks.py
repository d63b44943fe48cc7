"""Every benchmark runs at its --smoke size (tiny random models, seconds), so none can silently break."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # several processes: the CI tier

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("script, expect", [("encode.py", "speed ratio"), ("train.py", "sentence-transformers GradCache"),
                                            ("sparse.py", "sparse-full-logits"), ("serve.py", "throughput ratio"),
                                            ("search.py", "IVF16,PQ8 nprobe=64"), ("startup.py", "help / (torch"),
                                            ("sparse_head.py", "own-terms head speed-up"),
                                            ("gguf_convert.py", "llmret's conversion speed-up"),
                                            ("handover.py", "hand-over speed-up")])
def test_benchmark_smoke_run(script: str, expect: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, script, "--smoke"], cwd=BENCHMARKS, capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert expect in done.stdout
