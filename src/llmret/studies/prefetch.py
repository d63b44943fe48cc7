"""Preparing a study's zoo backbones in another process while its first cells run.

A zoo model's first use installs its packages and, for a GGUF model, converts it: most of a minute
for ``gemma3-270m`` on a laptop CPU, mostly one core's work, while the cells before it (BM25, a small
encoder) leave the other core idle. The local runner therefore starts this module in a child process
for the zoo models of the unfinished cells after the first one. Installs and conversions take file
locks and are each done by one process at a time, so the main process finds a model ready or waits
for the child to finish it; nothing is done twice. The child says nothing: the main process meets
any error again, with its own message, when it reaches the model.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from llmret.models import zoo
from llmret.models.backbone import resolve
from llmret.studies.spec import StudySpec, status


def models_to_prepare(spec: StudySpec) -> list[str]:
    """The zoo models of the study's unfinished cells, in the order they load (a training's teacher
    before its student), but the first one (the main process loads that at once, so a child would only
    race it)."""
    models = []
    for cell, _, done in status(spec):
        if not done:
            teacher = (cell.system.train or {}).get("teacher")
            models += [str(teacher).partition(":")[2] if teacher else None, cell.system.encoder.get("model")]
    ordered = list(dict.fromkeys(m for m in models if m))
    return [m for m in ordered[1:] if m in zoo.ZOO]


@contextmanager
def prefetching(spec: StudySpec) -> Iterator[None]:
    """While open, a child process installs and converts :func:`models_to_prepare`; stopped on an error."""
    models = models_to_prepare(spec)
    child = (subprocess.Popen([sys.executable, "-m", "llmret.studies.prefetch", *models], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) if models else None)
    try:
        yield
    except BaseException:
        if child is not None:
            child.terminate()
        raise
    finally:
        if child is not None:
            child.wait()


def main(models: list[str]) -> None:
    """Install and convert each model (the child's work)."""
    for model in models:
        try:
            resolve(model)
        except Exception:  # noqa: BLE001 - the main process reports it when it loads the model
            continue


if __name__ == "__main__":
    main(sys.argv[1:])
