"""Named evaluation data and the rules each is evaluated by: a new benchmark is one entry here.

``--data`` takes a BEIR folder or a name: ``builtin:code`` (``docs``, ``long``) for the built-in
dataset, ``irds:ID`` for an ir_datasets id (converted once to a BEIR folder, :mod:`llmret.data.irds`). Published numbers follow conventions that change the scores, so each dataset is scored by
the rules of its convention on every path (one-shot evaluation, staged encode/search/evaluate, the
demo), and ``settings.json`` records which rules were applied:

- ``beir``: every BEIR dataset. A query's own id is dropped from its results (BEIR's evaluator does
  this for every dataset, not only ArguAna and Quora); queries and passages up to 512 tokens (ArguAna's
  queries are whole arguments; capped at the model's maximum, as MTEB encodes).
- ``msmarco-dev``: MS MARCO passage dev (small). Query and passage ids overlap as numbers, so nothing
  is dropped; RR@10 and R@1000 are the reported measures.
- ``trec-dl``: TREC DL 2019/2020 over MS MARCO. Graded nDCG@10; binary measures (RR, R, AP) count
  grade >= 2 as relevant (trec_eval ``-l 2``, as Pyserini reports them).
- ``plain``: trec_eval's defaults (grade >= 1, nothing dropped), for judgments with no known dataset.

Conventions are found by the data folder's name (``dl19``, ``trec-dl-2020``, ``dev-small``,
``msmarco`` ...; any other BEIR-layout folder is ``beir``) or an ir_datasets id's prefix (``beir/``,
``msmarco-passage/dev``, ``msmarco-passage/trec-dl-20..``), or named with ``--rules``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from llmret.data import irds
from llmret.data.dataset import RetrievalData, load_dataset
from llmret.data.qrels import Qrels
from llmret.data.spec import resolve_folder
from llmret.data.trec import Run
from llmret.evaluation.measures import DEFAULT_MEASURES, Evaluation, evaluate
from llmret.util.errors import InputError
from llmret.util.fileio import read_json


@dataclass(frozen=True)
class DatasetRules:
    """How a dataset must be evaluated to match its published numbers."""

    convention: str = "plain"
    exclude_self: bool = False  # drop a query's own id from its results
    relevance_level: int = 1  # binary measures count grades >= this (trec_eval -l)
    measures: tuple[str, ...] = DEFAULT_MEASURES  # reported when --measures is not given
    query_max_length: int | None = None  # None: the encoder's own
    passage_max_length: int | None = None
    instruction: str = ""  # the dataset's one-line task, for models trained with instructions

    def encoder_layer(self) -> dict[str, Any]:
        """What these rules set in the encoder settings (see :class:`~llmret.encoders.base.TextEncoder`)."""
        return {"query_max_length": self.query_max_length, "passage_max_length": self.passage_max_length,
                "instruction": self.instruction}

    def describe(self) -> dict[str, Any]:
        return asdict(self)

    def apply(self, run: Run) -> Run:
        """The run as these rules score it: without each query's own id if they drop it."""
        if not self.exclude_self:
            return run
        return {qid: {d: s for d, s in docs.items() if d != qid} for qid, docs in run.items()}

    def evaluate(self, qrels: Qrels, run: Run, measures: Sequence[str] | None = None) -> Evaluation:
        """Score ``run`` by these rules: own ids dropped if they say so, binary measures at their
        relevance level, their measures unless ``measures`` names others."""
        return evaluate(qrels, self.apply(run), measures or self.measures, self.relevance_level)


CONVENTIONS: dict[str, DatasetRules] = {
    "beir": DatasetRules("beir", exclude_self=True, query_max_length=512, passage_max_length=512),
    "msmarco-dev": DatasetRules("msmarco-dev", measures=("RR@10", "R@1000", "nDCG@10", "AP")),
    "trec-dl": DatasetRules("trec-dl", relevance_level=2, measures=("nDCG@10", "RR@10", "R@1000", "AP")),
    "builtin": DatasetRules("builtin", exclude_self=True),
    "plain": DatasetRules("plain"),
}

# Folder names (lowercase) that name their convention; any other BEIR-layout folder is "beir".
DATASETS: dict[str, str] = {
    **dict.fromkeys(("dl19", "dl20", "trec-dl-2019", "trec-dl-2020", "dl-2019", "dl-2020", "trec-dl-hard",
                     "msmarco-passage-trec-dl-2019", "msmarco-passage-trec-dl-2020"), "trec-dl"),
    **dict.fromkeys(("dev-small", "msmarco-dev", "msmarco-dev-small", "msmarco", "msmarco-passage",
                     "msmarco-passage-dev-small"), "msmarco-dev"),
}


def convention_of(folder: Path) -> str:
    """The convention a data folder is evaluated by, from its name."""
    if folder.name.lower() in DATASETS:
        return DATASETS[folder.name.lower()]
    if (folder / "qrels").is_dir():
        return "beir"
    return "plain"


def rules_for(folder: Path, convention: str | None = None, *, spec: str = "") -> DatasetRules:
    """The rules of ``folder`` (or of the named ``convention``), with the instruction of a ``task.json`` beside the data."""
    if convention:
        name = convention
    elif spec.startswith(irds.PREFIX):
        name = irds.convention(spec.removeprefix(irds.PREFIX))
    else:
        name = "builtin" if spec.startswith("builtin:") else convention_of(folder)
    if name not in CONVENTIONS:
        raise InputError(f"unknown evaluation rules '{name}'; known: {', '.join(CONVENTIONS)}")
    rules = CONVENTIONS[name]
    task_file = folder / "task.json"
    if task_file.is_file():
        rules = replace(rules, instruction=str(read_json(task_file).get("instruction", "")))
    return rules


def rules_for_qrels(qrels: str | Path, convention: str | None = None) -> DatasetRules:
    """Rules for a judgments file: those of the dataset folder it sits in (``DIR/qrels/SPLIT.tsv``), if any."""
    path = Path(qrels)
    folder = path.parent.parent if path.parent.name == "qrels" else path.parent
    if convention is None and path.parent.name != "qrels":
        convention = "plain"
    return rules_for(folder, convention)


def load(spec: str, split: str = "test", convention: str | None = None) -> tuple[RetrievalData, DatasetRules]:
    """Load evaluation data and its rules from a spec."""
    folder = resolve_folder(spec, split)
    data = load_dataset(folder, split)
    if spec.startswith("builtin:"):
        data.name = f"{spec.split(':', 1)[1]}-{split}"
    elif spec.startswith(irds.PREFIX):
        data.name = spec.removeprefix(irds.PREFIX)
    return data, rules_for(folder, convention, spec=spec)
