"""Named recipes: the settings a published system was trained with, as defaults under the user's own.

``lion-sparse`` is the Lion-SP recipe (HansiZeng/scaling-retriever): a decoder's LM head as the
sparse head with its logits scaled by hidden_size ** -0.25 (0.204 for SmolLM2) before max, ReLU and
log1p; BOS kept; lr 1e-4 with 4% warm-up; 16 hard negatives; lengths 64 / 128 (the paper evaluates
passages at 192); FLOPS 0.05 (queries) / 0.04 (passages) rising quadratically over a third of the
steps; LoRA on every attention and MLP projection, the LM head frozen. Its MNTP stage is ``llmret mntp``.
"""

from __future__ import annotations

import copy
from typing import Any

RECIPES: dict[str, dict[str, Any]] = {
    "lion-sparse": {
        "retriever": "sparse", "learning_rate": 1e-4, "warmup_ratio": 0.04, "group_size": 17, "temperature": 1.0,
        "regularizer": "flops", "query_reg_weight": 0.05, "passage_reg_weight": 0.04, "reg_warmup_ratio": 0.33,
        "lora_target_modules": "all-linear",
        "encoder": {"query_max_length": 64, "passage_max_length": 128, "add_bos": True},
    },
}


def with_recipe(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` (settings as a config file gives them) over its ``recipe``'s values; nested encoder
    settings are merged key by key, so a config's own encoder keys win one by one."""
    name = data.get("recipe")
    if name is None:
        return data
    if name not in RECIPES:
        raise ValueError(f"unknown recipe '{name}'; known: {', '.join(RECIPES)}")
    merged = copy.deepcopy(RECIPES[name])
    encoder = {**merged.pop("encoder", {}), **(data.get("encoder") or {})}
    return {**merged, **data, "encoder": encoder}


def lion_logit_scale(hidden_size: int) -> float:
    """Lion-SP's logit scale: hidden_size ** -0.25."""
    return float(hidden_size) ** -0.25
