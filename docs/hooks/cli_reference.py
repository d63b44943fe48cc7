"""MkDocs hooks: the home page is the README (its links to ``docs/`` made relative), and the command-line
reference is generated from llmret's own parser at build time; neither can drift from its source (the
flags themselves are generated from the settings' declarations)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


MARKER = "<!-- cli-reference -->"
README = "<!-- readme -->"
ROOT = Path(__file__).resolve().parents[2]


def reference() -> str:
    """Each subcommand's ``--help`` text, in the order ``llmret --help`` lists them."""
    from llmret.cli import make_parser

    parser = make_parser()
    parts = ["```text", parser.format_help().rstrip(), "```", ""]
    for action in parser._actions:  # argparse keeps subparsers here only: it has no public accessor
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                parts += [f"## llmret {name}", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(parts)


def readme() -> str:
    """README.md as the site's home page: ``docs/x.md`` links become ``x.md``."""
    return (ROOT / "README.md").read_text(encoding="utf-8").replace("](docs/", "](")


def on_page_markdown(markdown: str, **_: Any) -> str:
    if README in markdown:
        markdown = markdown.replace(README, readme())
    return markdown.replace(MARKER, reference()) if MARKER in markdown else markdown
