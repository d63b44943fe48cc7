"""``llmret train``, ``mntp``, ``annotate``, ``mine``, ``export``, ``curves`` and ``launch-config``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from llmret.cli.flags import encoder_flags, flag_values, settings_flags
from llmret.encoders.settings import EncoderSettings
from llmret.training.settings import MiningSettings, MNTPSettings, TeacherSettings, TrainSettings

TEACHERS = "cross-encoder:MODEL, judge:MODEL (a causal LM), dense:MODEL or sparse:MODEL"


def register(sub: Any) -> None:
    parser = sub.add_parser("mntp", help="adapt a decoder to bidirectional attention (masked next-token prediction, "
                                         "LoRA)")
    settings_flags(parser, MNTPSettings)
    resume_flags(parser)
    parser.set_defaults(func=mntp)

    parser = sub.add_parser("train", help="fine-tune a dense or sparse retriever (LoRA + InfoNCE by default)")
    parser.add_argument("--config", help="YAML/JSON training config (keys of TrainSettings; encoder: a mapping)")
    settings_flags(parser, TrainSettings)
    resume_flags(parser)
    encoder_flags(parser, training=True)
    parser.set_defaults(func=train)

    parser = sub.add_parser("annotate", help="add a teacher's score to every passage of a training file (resumable)")
    parser.add_argument("--input", required=True, help="Tevatron JSONL training file")
    parser.add_argument("--corpus", help="corpus resolving passages given by id")
    parser.add_argument("--teacher", required=True, help=TEACHERS)
    parser.add_argument("--out", required=True, help="scored JSONL (OUT.partial while running; rerun to continue)")
    teacher_flags(parser)
    parser.set_defaults(func=annotate)

    parser = sub.add_parser("mine", help="hard negatives from a run, without likely false negatives")
    parser.add_argument("--run", required=True, help="TREC run over the training queries (BM25 or a trained retriever)")
    parser.add_argument("--data", required=True, help="BEIR folder (or builtin:TASK, irds:ID) with the queries and "
                                                      "judgments")
    parser.add_argument("--split", default="train")
    parser.add_argument("--out", required=True, help="Tevatron JSONL training file to write")
    parser.add_argument("--depth", nargs=2, type=int, metavar=("FROM", "TO"),
                        help="candidates are ranks FROM..TO-1 (0-based; default 0 100)")
    settings_flags(parser, MiningSettings, skip=("depth_from", "depth_to"))
    parser.add_argument("--teacher", help=f"scores candidates and positives: {TEACHERS}")
    teacher_flags(parser)
    parser.set_defaults(func=mine)

    parser = sub.add_parser("export", help="merge LoRA and save a plain transformers folder with a model card")
    parser.add_argument("--model", required=True, help="trained model folder (e.g. runs/train/final)")
    parser.add_argument("--out", required=True)
    parser.set_defaults(func=export)

    parser = sub.add_parser("curves", help="training curves: log.jsonl values against steps, runs side by side, as a "
                                           "PNG")
    parser.add_argument("runs", nargs="+", help="training output folders (or their log.jsonl)")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--keys", nargs="+", help="log keys, one panel each (default: the loss, each part of it the "
                                                  "runs logged and, for sparse runs, q_nonzero and p_nonzero)")
    parser.add_argument("--labels", nargs="+", help="a name per run (default: the folder names)")
    parser.add_argument("--linear", action="store_true", help="linear value axes (default: log where all values > 0)")
    parser.set_defaults(func=curves)

    parser = sub.add_parser("launch-config", help="the path of a packaged accelerate config: ddp (LoRA), fsdp or "
                                                  "deepspeed-zero3 (full fine-tuning), for accelerate launch "
                                                  "--config_file")
    parser.add_argument("name", help="ddp, fsdp or deepspeed-zero3")
    parser.set_defaults(func=launch_config)


def resume_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output-dir")
    parser.add_argument("--force", action="store_true", help="with --resume: accept settings that differ from the run's")


def teacher_flags(parser: argparse.ArgumentParser) -> None:
    settings_flags(parser, TeacherSettings)
    parser.add_argument("--by-id", action="store_true", help="passages as ids (and scores) only; train with --corpus")


def scoring(args: argparse.Namespace) -> TeacherSettings:
    return TeacherSettings(**{k: v for k, v in flag_values(args, TeacherSettings).items() if v is not None})


def mntp(args: argparse.Namespace) -> int:
    from llmret.training.mntp import run_mntp

    settings = MNTPSettings(**{k: v for k, v in flag_values(args, MNTPSettings).items() if v is not None})
    print(f"adapted model in {run_mntp(settings, resume=args.resume, force=args.force)}")
    return 0


def train(args: argparse.Namespace) -> int:
    from llmret.training.train import train as run_training
    from llmret.util.settings import load_config

    flags = flag_values(args, TrainSettings, skip=("encoder",))
    flags["encoder"] = flag_values(args, EncoderSettings, skip=("batch_size",))
    config = load_config(args.config) if args.config else {}
    settings = TrainSettings.from_layers([("config", config), ("flags", flags)], args.config)
    print(f"trained model in {run_training(settings, resume=args.resume, force=args.force)}")
    return 0


def annotate(args: argparse.Namespace) -> int:
    from llmret.training.annotate import annotate_file

    name, out = annotate_file(args.input, args.out, args.teacher, corpus=args.corpus, scoring=scoring(args),
                              by_id=args.by_id)
    print(f"scored by {name}: {out}")
    return 0


def mine(args: argparse.Namespace) -> int:
    from llmret.training.mining import mine_file

    given = {k: v for k, v in flag_values(args, MiningSettings).items() if v is not None}
    if args.depth is not None:
        given["depth_from"], given["depth_to"] = args.depth
    count, stats = mine_file(args.data, args.split, args.run, args.out, MiningSettings(**given), teacher=args.teacher,
                             scoring=scoring(args), by_id=args.by_id)
    for what, n in sorted(stats.items()):
        print(f"  {what}: {n}")
    print(f"{count} training queries written to {args.out}")
    return 0


def export(args: argparse.Namespace) -> int:
    from llmret.encoders.export import export_model

    print(f"exported to {export_model(args.model, args.out)}")
    return 0


def curves(args: argparse.Namespace) -> int:
    from llmret.training.curves import plot_curves

    drawn = plot_curves([Path(r) for r in args.runs], Path(args.out), args.keys, args.labels, not args.linear)
    for label, lines in drawn.items():
        last = {key: points[-1] for key, points in lines.items() if points}
        print(f"{label}: " + ", ".join(f"{key} {value:.4g} at step {step}" for key, (step, value) in last.items()))
    print(f"curves in {args.out}")
    return 0


def launch_config(args: argparse.Namespace) -> int:
    from llmret.training.launch import launch_config as packaged

    print(packaged(args.name))
    return 0
