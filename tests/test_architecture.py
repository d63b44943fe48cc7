"""The architecture as tests: the layers contract (import-linter), imports at the top of modules but
where a module says why not, functions short but where they say why, and a repository that speaks of
the product only."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "llmret"
LONG = 60  # lines of a function, docstring included, beyond which it says why it is one function


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def says_why(tree: ast.Module) -> bool:
    """Whether a module (or package ``__init__``) sets ``LAZY_IMPORTS``, the reason its functions import."""
    return any(isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "LAZY_IMPORTS" for t in node.targets)
               for node in tree.body)


def test_each_layer_imports_only_the_layers_below_it() -> None:
    # import-linter's own command, as a user would run it: the contract lives in pyproject.toml
    check = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"
    done = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 kept, 0 broken" in done.stdout


def test_llmret_imports_inside_functions_only_where_the_module_says_why() -> None:
    offenders = []
    for path in modules():
        tree = ast.parse(path.read_text())
        package = path.parent / "__init__.py"
        allowed = says_why(tree) or says_why(ast.parse(package.read_text()))
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("llmret") and not allowed:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}")
    assert not offenders, "in-function llmret imports in a module without LAZY_IMPORTS: " + "; ".join(sorted(set(offenders)))


def test_long_functions_say_why_they_are_one() -> None:
    offenders = []
    for path in modules():
        source = path.read_text().splitlines()
        for func in ast.walk(ast.parse("\n".join(source))):
            if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)) and func.end_lineno - func.lineno + 1 > LONG:
                body = source[func.lineno - 1:func.end_lineno]
                if not any(line.strip().startswith("# long:") for line in body):
                    offenders.append(f"{path.relative_to(ROOT)}:{func.lineno} {func.name} "
                                     f"({func.end_lineno - func.lineno + 1} lines)")
    assert not offenders, "functions over 60 lines without a '# long:' reason: " + "; ".join(offenders)


# How a repository speaks of its own making, which users have no use for (pytest's fixture scope is fine)
PROCESS_TALK = re.compile(r"\b(work item|this session|in this session|the ticket|issue #?\d+|TODO|FIXME|XXX)\b",
                          re.IGNORECASE)


def test_the_repository_speaks_of_the_product_only() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=False).stdout.split()
    if not tracked:  # not a git checkout (an sdist): its files are the package's
        tracked = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file()]
    hits = []
    for name in tracked:
        path = ROOT / name
        if path.suffix not in {".py", ".md", ".yaml", ".yml", ".toml", ".txt", ".cfg"} or not path.is_file():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if PROCESS_TALK.search(line) and "PROCESS_TALK" not in line:
                hits.append(f"{name}:{number}: {line.strip()[:100]}")
    assert not hits, "\n".join(hits)


def test_lint_is_clean() -> None:
    # ruff with the rules pyproject.toml selects: unused names, unsorted imports, likely bugs
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "src", "tests", "benchmarks", "examples"], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-4000:]
