"""Flags made from settings declarations, and the flags several commands share.

A settings dataclass declares each setting once (type, default, help, choices); :func:`settings_flags`
makes one flag per field from it, every default None, so a flag not given leaves the setting to the
layers below (a recipe, a config file, the saved model, the model's defaults). :func:`layered` turns
the flags into the top layer of those settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from dataclasses import fields
from typing import Any

from llmret.encoders.settings import EncoderSettings
from llmret.util.layers import merge
from llmret.util.settings import from_dict, load_config


def settings_flags(parser: argparse.ArgumentParser | Any, cls: type, skip: tuple[str, ...] = (),
                   only: typing.Callable[[dataclasses.Field], bool] | None = None) -> None:
    """One flag per field of settings dataclass ``cls`` (``a_b`` -> ``--a-b``), typed and helped from the
    field's declaration; ``skip`` names fields left out, ``only`` picks fields by their declaration."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if f.name in skip or dataclasses.is_dataclass(hints[f.name]) or (only is not None and not only(f)):
            continue
        kind = hints[f.name]
        union = typing.get_origin(kind) in (typing.Union, types.UnionType)  # X | None, list[str] | str
        args = [a for a in typing.get_args(kind) if a is not type(None)] if union else [kind]
        flag, extra = f"--{f.name.replace('_', '-')}", {"dest": f.name, "default": None, "help": f.metadata.get("help")}
        if "choices" in f.metadata:
            extra["choices"] = list(f.metadata["choices"])
        if args[0] is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **extra)
        elif typing.get_origin(args[0]) is list:
            parser.add_argument(flag, nargs="+", type=typing.get_args(args[0])[0], **extra)
        else:
            parser.add_argument(flag, type=args[0], **extra)


def flag_values(args: argparse.Namespace, cls: type, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The flags given for the fields of ``cls`` (None for those not given)."""
    return {f.name: getattr(args, f.name, None) for f in fields(cls) if f.name not in skip}


def encoder_flags(parser: argparse.ArgumentParser, *, training: bool = False) -> None:
    """The encoder's flags, from :class:`EncoderSettings`; under ``train`` without those a training
    setting of the same name owns (``--batch-size``), ``--config`` and ``--recipe`` (training's own)."""
    group = parser.add_argument_group("encoder (defaults come from the model; --config FILE may set them too)")
    if not training:
        from llmret.encoders.recipes import ENCODER_RECIPES

        group.add_argument("--config", help="YAML/JSON file with encoder settings (keys as the flags, with _)")
        group.add_argument("--recipe", choices=ENCODER_RECIPES, help="a published encoder's settings under yours "
                                                                     "(promptreps: zero-shot sparse from a decoder)")
    skip = ("batch_size",) if training else ()
    settings_flags(group, EncoderSettings, skip, only=lambda f: not f.metadata.get("sparse"))
    sparse = parser.add_argument_group("sparse encoder (with --retriever sparse)")
    settings_flags(sparse, EncoderSettings, skip, only=lambda f: bool(f.metadata.get("sparse")))


def encoder_settings(args: argparse.Namespace) -> EncoderSettings:
    """The encoder settings the flags ask for: the recipe's, the config file's over them, the flags on top."""
    from llmret.encoders.recipes import encoder_recipe

    recipe = encoder_recipe(args.recipe, args.retriever) if getattr(args, "recipe", None) else {}
    config = load_config(args.config) if getattr(args, "config", None) else {}
    layers = merge([(f"recipe {getattr(args, 'recipe', None)}", recipe), ("config", config),
                    ("flags", flag_values(args, EncoderSettings))])
    settings = from_dict(EncoderSettings, layers.values, getattr(args, "config", None))
    settings.origins = layers.origins
    return settings


def data_flags(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument("--data", required=required,
                        help="BEIR folder, builtin:code | builtin:docs | builtin:long, or irds:ID (an ir_datasets id)")
    parser.add_argument("--split", default="test")
    rules_flag(parser)


def rules_flag(parser: argparse.ArgumentParser) -> None:
    from llmret.evaluation.conventions import CONVENTIONS

    parser.add_argument("--rules", choices=list(CONVENTIONS),
                        help="evaluation convention (default: from the data folder's name)")


def positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be above 0, not {value}")
    return number


def non_negative_float(value: str) -> float:
    number = float(value)
    if not number >= 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, not {value}")
    return number
