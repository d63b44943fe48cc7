"""The main job: the ``demo`` study preset, with a table for the terminal.

``llmret demo`` runs ``llmret/presets/demo.yaml`` like any study (one way to run a grid): BM25, a
zero-shot retriever, and ``gemma3-270m`` trained briefly on the built-in code task's train split,
once dense and once sparse on the same batches, each also fused with BM25, each evaluated on every
task's test split, with each system's mean over the tasks. It runs
on a laptop CPU in about ten minutes and 4 GB; the zoo models install and convert on first use, and
the built-in dataset builds from this Python's standard library. The options replace parts of the
preset (which models run zero-shot, which is fine-tuned, as what, for how many steps, on which
tasks); ``data`` puts a user's BEIR folder in place of the built-in tasks (:func:`user_data`).
Finished cells are skipped and a killed training resumes, as in every study; the table goes to
``results.md`` and ``results.json``, the study's report beside them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from llmret.data.corpus import Corpus
from llmret.data.training import write_training
from llmret.studies.presets import PRESETS
from llmret.studies.reporting import report
from llmret.studies.runner import run
from llmret.studies.spec import DatasetSpec, StudySpec
from llmret.studies.systems import FUSION, SystemSpec
from llmret.training.mining import mined_examples
from llmret.training.pseudo_queries import pseudo_query_examples
from llmret.training.teachers import teacher_spec
from llmret.util.errors import DataError, InputError
from llmret.util.fileio import atomic_write, write_json
from llmret.util.tables import format_table

PSEUDO_QUERIES = 1000  # ICT pairs drawn when a folder has no judged queries to train on: several demo runs' worth
COLUMNS = ["task", "system", "nDCG@10", "RR@10", "R@100", "terms/q", "terms/p", "seconds"]
METRICS = ["nDCG@10", "RR@10", "R@100"]
FINETUNE_AS = ("dense", "sparse")


@dataclass(frozen=True)
class UserData:
    """Where the demo trains and evaluates on a user's BEIR folder, and what it says about it."""

    folder: Path
    eval_split: str  # test, else dev
    train_source: str  # train: the folder itself (its judged train queries); dev or pseudo: a file the demo writes
    train_file: Path | None  # the training file to write first (dev or pseudo sources), None for the train split

    def describe(self) -> str:
        if self.train_source == "train":
            return f"trained on the judged queries of {self.folder.name}'s train split, BM25-mined negatives"
        if self.train_source == "dev":
            return (f"trained on the judged queries of {self.folder.name}'s dev split (it has no train split), "
                    f"BM25-mined negatives; evaluated on its test split")
        return (f"trained on pseudo-queries (Inverse Cloze Task: a sentence of a passage as the query, the passage "
                f"without it as the positive, BM25-mined negatives): {self.folder.name} has no judged queries "
                f"besides its {self.eval_split} split's")

    @property
    def train_data(self) -> str:
        return str(self.folder) if self.train_file is None else str(self.train_file)


def user_data(folder: str | Path, out: Path) -> UserData:
    """How the demo uses a BEIR folder: it evaluates on the test split (else dev) and trains on the train
    split; with none, on the dev split's judged queries when the test split is evaluated; else on
    pseudo-queries drawn from the corpus. Never on the queries it evaluates."""
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise DataError(folder, None, "demo --data: not a folder (a BEIR folder: corpus.jsonl, queries.jsonl, "
                                      "qrels/SPLIT.tsv)")
    splits = {p.stem for p in (folder / "qrels").glob("*.tsv")}
    if not splits & {"test", "dev"}:
        raise DataError(folder / "qrels", None, f"demo --data evaluates the test or dev split; judgments found: "
                                                f"{', '.join(sorted(splits)) or 'none'}")
    eval_split = "test" if "test" in splits else "dev"
    if "train" in splits:
        return UserData(folder, eval_split, "train", None)
    source = "dev" if eval_split == "test" and "dev" in splits else "pseudo"
    return UserData(folder, eval_split, source, out / "train-data" / f"{source}.jsonl")


def prepare_training(data: UserData, seed: int = 42) -> None:
    """Write the training file a dev or pseudo-query source needs (once: a resumed demo reuses it)."""
    if data.train_file is None or data.train_file.is_file():
        return
    if data.train_source == "dev":
        examples = mined_examples(data.folder, "dev")
    else:
        corpus = Corpus.from_file(next(p for p in (data.folder / "corpus.jsonl", data.folder / "corpus.jsonl.gz")
                                       if p.is_file()))
        examples = pseudo_query_examples(corpus, PSEUDO_QUERIES, seed)
        if not examples:
            raise DataError(data.folder, None, "demo --data: no passage of two or more sentences to draw "
                                               "pseudo-queries from, and no train or dev judgments")
    data.train_file.parent.mkdir(parents=True, exist_ok=True)
    write_training(data.train_file, examples)


def demo_study(out: Path, models: Sequence[str] | None = None, tasks: Sequence[str] | None = None,
               finetune: str | None = None, train_steps: int | None = None,
               finetune_as: Sequence[str] | None = None, data: str | Path | None = None,
               teacher: str | None = None) -> StudySpec:
    """The demo preset with the options applied (None keeps the preset's choice; ``finetune=""``
    trains nothing; ``data``: a BEIR folder instead of the built-in tasks, see :func:`user_data`;
    ``teacher``: the distilling systems' teacher, ``KIND:MODEL`` or ``none`` for InfoNCE alone)."""
    spec = StudySpec.read(PRESETS / "demo.yaml")
    if data is not None and tasks is not None:
        raise InputError("demo: --tasks picks built-in tasks, --data a folder of your own; give one")
    unknown = set(finetune_as or ()) - set(FINETUNE_AS)
    if unknown:
        raise InputError(f"finetune_as takes {', '.join(FINETUNE_AS)}, not {', '.join(sorted(unknown))}")
    zero_shot = [s for s in spec.systems if s.train is None and s.retriever not in ("bm25", FUSION)]
    trained = [s for s in spec.systems if s.train is not None]
    if models is not None:
        template = zero_shot[0]
        zero_shot = [replace(template, name=f"{m} (zero-shot)", encoder={**template.encoder, "model": m}) for m in models]
    if finetune == "":
        trained = []
    kept = [s for s in trained if finetune_as is None or s.retriever in finetune_as]
    trained = [_taught(_fine_tuned(s, finetune, train_steps), teacher) for s in kept]
    renamed = {"bm25": "bm25", **{old.name: new.name for old, new in zip(kept, trained)}}
    hybrids = [replace(h, name=" + ".join(renamed[n] for n in h.fuse), fuse=[renamed[n] for n in h.fuse])
               for h in spec.systems if h.retriever == FUSION and all(n in renamed for n in h.fuse)]
    if data is not None:
        mine = user_data(data, out)
        trained = [replace(s, train={**(s.train or {}), "train_data": mine.train_data}) for s in trained]
        spec = spec.changed(datasets=[DatasetSpec(str(mine.folder), mine.eval_split)])
    systems = [s for s in spec.systems if s.retriever == "bm25"] + zero_shot + trained + hybrids
    datasets = spec.datasets
    if tasks is not None:
        known = {d.data.removeprefix("builtin:"): d for d in spec.datasets}
        if not tasks or set(tasks) - set(known):
            raise InputError(f"tasks are among {', '.join(known)}, not {', '.join(tasks) or 'none'}")
        datasets = [known[t] for t in tasks]
    return spec.changed(systems=systems, datasets=datasets, out=str(out))


def _fine_tuned(system: SystemSpec, model: str | None, steps: int | None) -> SystemSpec:
    """A trained system of the preset with another backbone (named in its label) or step count."""
    if model is None and steps is None:
        return system
    train = copy.deepcopy(system.train or {})
    if steps is not None:
        train["max_steps"] = steps
    encoder = system.encoder if model is None else {**system.encoder, "model": model}
    return replace(system, name=_with_model(system.name, system.encoder["model"], model), encoder=encoder, train=train)


DISTILLATION = ("objective", "teacher", "teacher_max_length", "teacher_scoring", "kd_teacher_temperature",
                "kd_in_batch")  # a distilling system's keys; without a teacher it trains InfoNCE alone
KD_LABEL = "+KD"  # how a distilling system's label says so


def _taught(system: SystemSpec, teacher: str | None) -> SystemSpec:
    """A distilling system of the preset with another teacher, or (``none``) without one."""
    if teacher is None or not (system.train or {}).get("teacher"):
        return system
    if teacher.lower() != "none":
        teacher_spec(teacher)
        return replace(system, train={**(system.train or {}), "teacher": teacher})
    train = {k: v for k, v in (system.train or {}).items() if k not in DISTILLATION}
    return replace(system, name=system.name.replace(KD_LABEL, ""), train=train)


def _with_model(name: str, preset_model: str, model: str | None) -> str:
    """A label that named the preset's backbone, naming ``model`` instead (first, if the label lacks it)."""
    if model is None:
        return name
    return name.replace(preset_model, model) if preset_model in name else f"{model} ({name})"


def _means(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Each system's mean over the tasks (task "mean"; seconds: the sum), the line a claim is read from."""
    out = []
    for system in dict.fromkeys(str(r["system"]) for r in rows):
        mine = [r for r in rows if r["system"] == system]
        out.append({"task": "mean", "system": system,
                    **{m: sum(float(r[m]) for r in mine) / len(mine) for m in METRICS},
                    "seconds": sum(float(r["seconds"]) for r in mine)})
    return out


def run_demo(out: str | Path, **options: Any) -> list[dict[str, object]]:
    """Run the demo study (``options``: those of :func:`demo_study`), write its report and the table,
    print the table and return its rows."""
    out = Path(out)
    spec = demo_study(out, **options)
    mine = user_data(options["data"], out) if options.get("data") is not None else None  # a glob: cheap to redo
    if mine is not None:
        prepare_training(mine)
        print(f"{mine.folder}: {mine.describe()}")
    records = run(spec)
    report(spec)
    tasks = {d.label: d.data.removeprefix("builtin:") if mine is None else mine.folder.name for d in spec.datasets}
    rows: list[dict[str, object]] = []
    for r in sorted(records, key=lambda r: list(tasks).index(r["dataset"])):
        row: dict[str, object] = {"task": tasks[r["dataset"]], "system": r["cell"],
                                  **{m: r["metrics"][m] for m in METRICS}}
        if "terms_per_query" in r:
            row.update({"terms/q": r["terms_per_query"], "terms/p": r["terms_per_passage"]})
        row["seconds"] = r["seconds"]
        rows.append(row)
    rows += _means(rows) if len(tasks) > 1 else []
    table = format_table(rows, COLUMNS, percent=METRICS)
    write_json(out / "results.json", rows)
    with atomic_write(out / "results.md") as handle:
        where = ("Built-in test splits" if mine is None
                 else f"{mine.folder.name}, {mine.eval_split} split ({mine.describe()})")
        handle.write(f"{where} (metrics x100; terms/q, terms/p: a sparse row's average non-zero terms per "
                     "query and per passage; seconds include loading, and training on the first task; mean: "
                     "over the tasks)\n\n"
                     "```\n" + table + "\n```\n")
    print(table)
    print(f"\nruns, metrics, the trained models, the study report and this table are in {out}")
    return rows
