"""The accelerate launch configs llmret ships (ddp, fsdp, deepspeed-zero3): ``llmret launch-config NAME``
prints one's path for ``accelerate launch --config_file``."""

from __future__ import annotations

from pathlib import Path

from llmret.util.errors import InputError

LAUNCH_CONFIGS = Path(__file__).parent / "launch"


def launch_config(name: str) -> Path:
    """The packaged accelerate config called ``name``, or a ValueError listing them."""
    path = LAUNCH_CONFIGS / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in LAUNCH_CONFIGS.glob("*.yaml")))
        raise InputError(f"no launch config '{name}'; known: {known}")
    return path
