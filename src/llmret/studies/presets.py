"""Ready-made studies, and suites of studies that run and report as one.

``llmret study run TARGET`` takes a study file, a folder of study files (a suite), or the name of a
preset shipped in ``llmret/presets`` (``llmret study list`` shows them). A suite runs its files in
name order; each writes into ``OUT/<file name>`` and every training goes to ``OUT/train``, keyed by
its settings alone, so the studies of a suite that train the same system (Luo et al.'s in-domain,
zero-shot and long-passage studies all start from one fine-tuned model) train it once. The suite's
``report.md`` gathers each study's main table under its description and links its full report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llmret.studies.reporting import main_table
from llmret.studies.reporting import report as study_report
from llmret.studies.spec import PRESETS, StudySpec, status
from llmret.util.errors import DataError
from llmret.util.fileio import atomic_write
from llmret.util.settings import load_config


@dataclass
class Suite:
    """One or more studies run and reported together; ``folder`` holds them all."""

    name: str
    folder: Path
    studies: list[StudySpec]

    @property
    def single(self) -> bool:
        return len(self.studies) == 1 and self.studies[0].folder == self.folder


def available() -> dict[str, str]:
    """Preset name -> its one-line description (a suite's: its first study's ``suite`` line, or its name)."""
    out = {}
    for path in sorted(PRESETS.iterdir(), key=lambda p: p.name.removesuffix(".yaml")):
        if path.suffix == ".yaml":
            out[path.stem] = str(load_config(path).get("description", "")).split("\n")[0]
        elif path.is_dir():
            files = _files(path)
            out[path.name] = f"suite of {len(files)}: " + ", ".join(f.stem.split("-", 1)[-1] for f in files)
    return out


def _files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.yaml")) if folder.is_dir() else []


def load(target: str, out: str | None = None) -> Suite:
    """The studies ``target`` names: a study file, a suite folder, or a preset's name; ``out`` replaces
    the output folder (a single study's ``out``, or the suite's)."""
    path = Path(target).expanduser()
    if not (path.is_file() or _files(path)):  # a results folder named like a preset is not a suite
        preset = PRESETS / target
        if preset.is_dir() or preset.with_suffix(".yaml").is_file():
            path = preset if preset.is_dir() else preset.with_suffix(".yaml")
        else:
            raise DataError(target, None, "no such study file, suite folder or preset; presets: "
                                          + ", ".join(available()))
    if path.is_file():
        spec = StudySpec.read(path)
        if out is not None:
            spec = spec.changed(out=out)
        return Suite(spec.name, spec.folder, [spec])
    files = _files(path)
    if not files:
        raise DataError(path, None, "a suite folder needs study files (*.yaml)")
    folder = Path(out) if out else Path("results") / path.name
    studies = []
    for file in files:
        spec = StudySpec.read(file)
        if spec.out is not None or spec.train_dir is not None:
            raise DataError(file, None, "a suite's study sets no out or train_dir: the suite places them")
        studies.append(spec.changed(out=str(folder / file.stem), train_dir=str(folder / "train")))
    return Suite(path.name, folder, studies)


def report(suite: Suite) -> Path:
    """Each study's report; for a suite also ``report.md`` with each study's main table (its first
    measure) under its description, linking the full report."""
    if suite.single:
        return study_report(suite.studies[0])
    lines = [f"# Suite: {suite.name}", ""]
    for spec in suite.studies:
        if not any(done for _, _, done in status(spec)):
            lines += [f"## {spec.name}", "", spec.description.strip(), "", "No finished cells yet.", ""]
            continue
        path = study_report(spec)
        relative = path.relative_to(suite.folder)
        lines += [f"## {spec.name}", "", spec.description.strip(), "",
                  *("#" + line if line.startswith("## ") else line for line in main_table(spec)),
                  f"Full report, figures and significance marks: [{relative}]({relative})", ""]
    with atomic_write(suite.folder / "report.md") as handle:
        handle.write("\n".join(lines) + "\n")
    return suite.folder / "report.md"
