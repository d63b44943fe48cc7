"""Teacher-score files in the layouts the field already shares, attached to training examples for KD.

The community's MS MARCO distillation scores come as one mapping per file, query id -> passage id ->
score: sentence-transformers' training examples distribute cross-encoder scores that way as a gzipped
pickle (``cross-encoder-ms-marco-MiniLM-L-6-v2-scores.pkl.gz``, integer ids), and JSON copies of the
same mapping are common. Both are read as they are; ids are compared as strings. Every passage a
training query can draw must be scored, or the loss would silently see a hole: a missing score is an
error naming the score file, the query and the passage.

Why a restricted unpickler: a pickle can run code when loaded. These files need only dicts, numbers
and strings (and numpy scalars, which some copies hold), so any other class is refused.
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
from pathlib import Path
from typing import Any

from llmret.data.training import TrainExample
from llmret.util.errors import DataError

Scores = dict[str, dict[str, float]]

_ALLOWED = {("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"), ("numpy", "dtype")}


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a score file holds only dicts and numbers")


def read_teacher_scores(path: str | Path) -> Scores:
    """{query id: {passage id: score}} from a ``.pkl``/``.json`` file, gzipped or not."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, "teacher score file not found")
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataError(path, None, f"not a complete gzip file ({exc})") from None
    kind = path.suffixes[-2] if path.suffix == ".gz" and len(path.suffixes) > 1 else path.suffix
    try:
        if kind == ".pkl":
            data = _PlainUnpickler(io.BytesIO(raw)).load()
        elif kind == ".json":
            data = json.loads(raw.decode("utf-8"))
        else:
            raise DataError(path, None, "a teacher score file is .pkl or .json (optionally .gz): "
                                        "{query id: {passage id: score}}")
    except (pickle.UnpicklingError, EOFError, json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(path, None, f"cannot read teacher scores: {exc}") from None
    return _checked(data, path)


def _checked(data: Any, path: Path) -> Scores:
    if not isinstance(data, dict):
        raise DataError(path, None, f"expected a mapping of query id -> passage id -> score, found {type(data).__name__}")
    out: Scores = {}
    for qid, scores in data.items():
        if not isinstance(scores, dict):
            raise DataError(path, None, f"query '{qid}': expected a mapping of passage id -> score")
        row = {}
        for pid, score in scores.items():
            try:
                row[str(pid)] = float(score)
            except (TypeError, ValueError):
                raise DataError(path, None, f"query '{qid}', passage '{pid}': score {score!r} is not a number") from None
        out[str(qid)] = row
    return out


def attach_teacher_scores(examples: list[TrainExample], scores: Scores, path: str | Path) -> list[TrainExample]:
    """Set every passage's ``score`` from ``scores`` (in place; returned for chaining)."""
    for example in examples:
        row = scores.get(example.query_id)
        if row is None:
            raise DataError(path, None, f"no scores for query '{example.query_id}' ({example.source or 'training data'})")
        for passage in example.positives + example.negatives:
            if passage.docid not in row:
                raise DataError(path, None, f"query '{example.query_id}': no score for passage '{passage.docid}' "
                                            f"({example.source or 'training data'})")
            passage.score = row[passage.docid]
    return examples
