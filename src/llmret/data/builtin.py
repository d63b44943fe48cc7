"""A retrieval dataset built at first use from this Python's standard library, so none ships with llmret.

Three tasks, each a BEIR folder per split (train, dev, test):

* ``code``: query = the first sentence of a function's or method's docstring; document = that
  function's source without its docstring;
* ``docs``: query = the same kind of summary; document = the rest of the docstring;
* ``long``: query = a module docstring's summary; document = the module's whole source (thousands of
  tokens), with undocumented modules as distractors.

Splits go by top-level package (``email.mime.text`` goes with ``email``) so that no module, nor its
siblings, is on both sides. Each split's corpus holds only that split's documents; training on a split
mines its BM25 hard negatives (:func:`llmret.training.mining.mined_examples`, cached), as for any BEIR
folder. The build is deterministic for a Python version (files and nodes are visited in sorted order,
nothing is sampled at random) and writes a manifest with counts and a checksum.
"""

from __future__ import annotations

import ast
import hashlib
import logging
import re
import sys
import sysconfig
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from llmret.data.corpus import Corpus, Document
from llmret.data.dataset import RetrievalData, write_queries
from llmret.data.qrels import write_qrels
from llmret.util.cache import cache_dir
from llmret.util.errors import InputError
from llmret.util.fileio import build_once, read_json, write_json

log = logging.getLogger(__name__)

BUILD_VERSION = 2  # bump when what a build writes changes, so caches rebuild (2: no train.jsonl)
SPLITS = ("train", "dev", "test")
INSTRUCTIONS = {
    "code": "Given a one-sentence description of a Python function, retrieve the function's source code.",
    "docs": "Given a one-sentence summary of a Python function, retrieve the rest of its documentation.",
    "long": "Given the summary of a Python module, retrieve the module's complete source code.",
}
TASKS = tuple(INSTRUCTIONS)
_SKIP_PARTS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__", "_bundled",
               "__phello__", "turtledemo"}
_LONG_MIN_CHARS = 6000


@dataclass
class _Item:
    task: str
    module: str
    doc_id: str
    document: str
    query: str | None  # None: a distractor document with no query


def _summary(docstring: str) -> str | None:
    """First sentence of the first paragraph, whitespace-normalised; None if too short or too long."""
    paragraph = docstring.strip().split("\n\n")[0]
    text = " ".join(paragraph.split())
    match = re.match(r"(.+?[.!?])(\s|$)", text)
    sentence = match.group(1) if match else text
    words = sentence.split()
    if not 4 <= len(words) <= 40 or sentence.startswith((">>>", ":")):
        return None
    return sentence


def split_of(module: str) -> str:
    """train / dev / test by a hash of the top-level package: stable across runs and machines."""
    bucket = int(hashlib.sha1(module.split(".")[0].encode()).hexdigest(), 16) % 10
    return "test" if bucket == 0 else "dev" if bucket == 1 else "train"


def _stdlib_files() -> list[tuple[str, Path]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if _SKIP_PARTS & set(rel.parts) or any(p.startswith("test_") for p in rel.parts):
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            out.append((".".join(parts), path))
    return out


def _functions(tree: ast.Module) -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Module-level functions and methods of module-level classes, with qualified names."""
    found = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found.append((node.name, node))
        elif isinstance(node, ast.ClassDef):
            for sub in node.body:
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    found.append((f"{node.name}.{sub.name}", sub))
    return found


def _extract() -> list[_Item]:
    items: list[_Item] = []
    for module, path in _stdlib_files():
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue  # a few stdlib files are deliberately broken or not UTF-8 (test data, grammars)
        lines = source.splitlines()
        for qualname, node in _functions(tree):
            doc = ast.get_docstring(node, clean=True)
            summary = _summary(doc) if doc else None
            if summary is None:
                continue
            first = node.body[0]
            keep = [ln for i, ln in enumerate(lines[node.lineno - 1:node.end_lineno], start=node.lineno)
                    if not first.lineno <= i <= first.end_lineno]
            code = "\n".join(keep)
            if len(keep) >= 3:
                items.append(_Item("code", module, f"{module}.{qualname}", code, summary))
            rest = " ".join(doc.strip()[len(doc.strip().split("\n\n")[0]):].split())
            first_par_rest = " ".join(doc.strip().split("\n\n")[0].split())[len(summary):].strip()
            rest = f"{first_par_rest} {rest}".strip()
            if len(rest.split()) >= 15:
                items.append(_Item("docs", module, f"{module}.{qualname}", rest, summary))
        module_doc = ast.get_docstring(tree, clean=True)
        body = source
        if module_doc and tree.body and isinstance(tree.body[0], ast.Expr):
            first = tree.body[0]
            body = "\n".join(ln for i, ln in enumerate(lines, start=1) if not first.lineno <= i <= first.end_lineno)
        if len(body) >= _LONG_MIN_CHARS:
            summary = _summary(module_doc) if module_doc else None
            items.append(_Item("long", module, module, body, summary))
    return items


def _deduplicate(items: list[_Item]) -> list[_Item]:
    """Drop queries whose text repeats within a task: a summary shared by two functions has no single answer."""
    counts = Counter((it.task, it.query.lower()) for it in items if it.query)
    return [it if not it.query or counts[(it.task, it.query.lower())] == 1 else
            _Item(it.task, it.module, it.doc_id, it.document, None) for it in items]


def _checksum(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != "manifest.json"):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def build(root: Path) -> dict[str, object]:
    """Build every task and split under ``root`` and return the manifest."""
    items = _deduplicate(_extract())
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for task in TASKS:
        counts[task] = {}
        for split in SPLITS:
            chosen = [it for it in items if it.task == task and split_of(it.module) == split]
            folder = root / task / split
            docs = [Document(it.doc_id, it.document) for it in chosen]
            queries = {f"q-{it.doc_id}": it.query for it in chosen if it.query}
            qrels = {f"q-{it.doc_id}": {it.doc_id: 1} for it in chosen if it.query}
            data = RetrievalData(Corpus.from_documents(docs), queries, qrels, name=f"{task}-{split}")
            data.corpus.write_beir(folder / "corpus.jsonl")
            write_queries(folder / "queries.jsonl", queries)
            write_qrels(folder / "qrels" / f"{split}.tsv", qrels)
            write_json(folder / "task.json", {"task": task, "split": split, "instruction": INSTRUCTIONS[task]})
            counts[task][split] = {"documents": len(docs), "queries": len(queries)}
    manifest = {"python": sys.version.split()[0], "build_version": BUILD_VERSION, "counts": counts,
                "instructions": INSTRUCTIONS, "sha256": _checksum(root)}
    write_json(root / "manifest.json", manifest)
    return manifest


def builtin_root(build_if_missing: bool = True) -> Path:
    """The cached dataset folder for this Python version, built (atomically) the first time."""
    version = ".".join(map(str, sys.version_info[:3]))
    root = cache_dir("builtin") / f"stdlib-py{version}-v{BUILD_VERSION}"
    if (root / "manifest.json").is_file() or not build_if_missing:
        return root
    log.info("building the built-in dataset from this Python's standard library (once) into %s", root)
    return build_once(root, build, done="manifest.json")


def manifest() -> dict[str, object]:
    return read_json(builtin_root() / "manifest.json")


def task_folder(task: str, split: str = "test") -> Path:
    """The BEIR folder of one built-in task and split."""
    if task not in INSTRUCTIONS:
        raise InputError(f"unknown built-in task '{task}'; known: {', '.join(TASKS)}")
    if split not in SPLITS:
        raise InputError(f"unknown split '{split}'; known: {', '.join(SPLITS)}")
    return builtin_root() / task / split
