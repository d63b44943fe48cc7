"""Shared caches are built once however many processes ask at the same moment (pytest-xdist workers, Ray
tasks, two shells): the others wait for the build instead of writing into the same place."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import sys, time
from pathlib import Path
from llmret.util.fileio import build_once

def build(tmp):
    with open(sys.argv[2], "a") as log:
        log.write("built\n")
    time.sleep(0.5)  # long enough for the other process to arrive while this one builds
    (tmp / "done").write_text("x")

print(build_once(Path(sys.argv[1]), build, done="done"))
"""


def test_two_processes_build_a_cache_once(tmp_path: Path) -> None:
    target, log = tmp_path / "cache" / "thing", tmp_path / "builds.log"
    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, str(target), str(log)], stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    outputs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert log.read_text() == "built\n" and outputs == [str(target)] * 3 and (target / "done").is_file()
