"""``llmret study`` (run, plan, status, report, list) and ``llmret demo``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from llmret.util.errors import InputError


def register(sub: Any) -> None:
    parser = sub.add_parser("study", help="run, plan, follow and report a study: a grid of systems x datasets from a "
                                          "YAML file")
    parser.add_argument("action", choices=["run", "plan", "status", "report", "list"],
                        help="plan: every cell's resolved settings and where each came from, running nothing; "
                             "list: the presets")
    parser.add_argument("target", nargs="?", help="study file (YAML), suite folder, or preset name")
    parser.add_argument("--out", help="output folder (default: the study's out, or results/NAME)")
    parser.add_argument("--json", action="store_true", help="plan: as JSON")
    parser.add_argument("--executor", choices=["local", "ray"], default="local",
                        help="run: cells one after another here, or as Ray tasks (pip install 'llmret[ray]')")
    parser.add_argument("--ray-address", help="run --executor ray: an existing cluster ('auto', 'ray://host:10001'); "
                                              "default: start a local one")
    parser.add_argument("--cpus-per-cell", type=float, default=1.0, help="run --executor ray: CPUs a cell's task "
                                                                         "asks for")
    parser.add_argument("--gpus-per-cell", type=float, default=0.0, help="run --executor ray: GPUs a cell's task "
                                                                         "asks for")
    parser.set_defaults(func=study)

    parser = sub.add_parser("demo", help="the main job (the demo study preset): BM25, a zero-shot retriever and an "
                                         "LLM fine-tuned dense and sparse")
    parser.add_argument("--out", default="results/demo")
    parser.add_argument("--models", nargs="+", help="models evaluated zero-shot (preset: minilm-l6)")
    parser.add_argument("--tasks", nargs="+", help="built-in tasks evaluated (preset: code docs long)")
    parser.add_argument("--data", help="a BEIR folder of your own instead of the built-in tasks: trained on its train "
                                       "split (else its dev split's judged queries, else pseudo-queries), evaluated "
                                       "on its test split (else dev)")
    parser.add_argument("--finetune", help="model to fine-tune (preset: gemma3-270m; '' to skip training)")
    parser.add_argument("--finetune-as", nargs="+", choices=["dense", "sparse"],
                        help="train the fine-tuned model as these retrievers, each on the same budget (preset: both)")
    parser.add_argument("--train-steps", type=int, help="training steps of every fine-tuned system (preset: 30)")
    parser.add_argument("--teacher", help="the dense model's distillation teacher, KIND:MODEL as llmret train takes "
                                          "it (preset: dense:mpnet-base), or none: InfoNCE alone")
    parser.set_defaults(func=demo)


def study(args: argparse.Namespace) -> int:
    from llmret.studies import presets

    if args.action == "list":
        for name, description in presets.available().items():
            print(f"{name:14s} {description}")
        return 0
    if args.target is None:
        raise InputError(f"study {args.action} needs a study file, suite folder or preset name "
                         "(llmret study list)")
    suite = presets.load(args.target, args.out)
    if args.action == "plan":
        print_plan(suite, args.json)
    elif args.action == "status":
        print_status(suite)
    else:
        if args.action == "run":
            from llmret.studies.runner import run_suite

            run_suite(suite, executor=args.executor, ray_address=args.ray_address, cpus_per_cell=args.cpus_per_cell,
                        gpus_per_cell=args.gpus_per_cell)
        print(f"report in {presets.report(suite)}")
    return 0


def print_status(suite: Any) -> None:
    from llmret.studies.spec import status

    total = finished = 0
    for spec in suite.studies:
        for cell, dataset, done in status(spec):
            prefix = "" if suite.single else f"{spec.name}: "
            print(f"{'done   ' if done else 'pending'}  {prefix}{cell.label}  on {dataset.label}")
            total, finished = total + 1, finished + done
    print(f"{finished} of {total} finished; results in {suite.folder}")


def print_plan(suite: Any, as_json: bool) -> None:
    """Every cell's resolved settings and where each came from, as JSON or as text."""
    from llmret.studies.planning import plan

    plans = {spec.name: plan(spec) for spec in suite.studies}
    if as_json:
        print(json.dumps(plans if not suite.single else next(iter(plans.values())), indent=1, default=str))
        return
    for name, cells in plans.items():
        for cell in cells:
            print(f"{'' if suite.single else name + ': '}{cell['cell']} ({cell['retriever']})")
            for section in ("train", "evaluation"):
                for key, entry in cell.get(section, {}).items():
                    print(f"  {section}.{key} = {entry['value']!r}  [{entry['from']}]")
            for override in cell.get("recipe_overrides", []):
                print(f"  ! {override['key']}: {override['value']!r} from {override['layer']} replaces "
                      f"{override['recipe']}'s {override['replaced']!r}")
            print(f"  datasets: {', '.join(cell['datasets'])}; measures: {cell['measures'] or 'each convention'}")


def demo(args: argparse.Namespace) -> int:
    from llmret.studies.demo import run_demo

    run_demo(args.out, models=args.models, tasks=args.tasks, finetune=args.finetune, train_steps=args.train_steps,
             finetune_as=args.finetune_as, data=args.data, teacher=args.teacher)
    return 0
