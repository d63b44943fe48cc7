"""The documentation site builds with ``mkdocs build --strict`` (a broken link, a missing page or an
API reference that no longer resolves fails it), its home page is the README, and its command-line
reference lists every command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_site_builds_strictly_with_the_readme_and_every_command(tmp_path: Path) -> None:
    from llmret.cli import make_parser

    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    home = (tmp_path / "site" / "index.html").read_text()
    assert "Set up on a fresh machine" in home and 'href="demo/"' in home  # README, its docs/ links made relative
    cli = (tmp_path / "site" / "cli" / "index.html").read_text()
    commands = re.search(r"\{([a-z,-]+)\}", make_parser().format_usage()).group(1).split(",")
    assert len(commands) > 10
    for command in commands:
        assert f"llmret {command}</h2>" in cli or f"llmret {command}\n" in cli, command
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in ("load_encoder", "retriever", "build_index", "open_index", "evaluate", "train", "run_study"):
        assert f'id="llmret.api.{name}"' in api, name


def test_readme_stays_short_with_its_two_set_up_commands() -> None:
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    commands = re.findall(r"```bash\n(python3 -m venv .venv[^\n]*)\n```", text)
    assert len(commands) == 2 and commands[0].endswith("llmret demo") and commands[1].endswith("python -m pytest")
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1].replace("pip install", "pip install -q") in ci  # CI runs the README's test command
