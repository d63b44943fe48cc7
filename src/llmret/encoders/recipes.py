"""Named recipes: the settings a published system was trained with, as defaults under the user's own.

``lion-sparse`` is the Lion-SP recipe (HansiZeng/scaling-retriever): a decoder's LM head as the
sparse head with its logits scaled by hidden_size ** -0.25 (0.204 for SmolLM2) before max, ReLU and
log1p; BOS kept; lr 1e-4 with 4% warm-up; 16 hard negatives; lengths 64 / 128 (the paper evaluates
passages at 192); FLOPS 0.05 (queries) / 0.04 (passages) rising quadratically over a third of the
steps; LoRA on every attention and MLP projection, the LM head frozen. Its MNTP stage is ``llmret mntp``.
Lion's MarginMSE ("KD") scripts train on triples, so with ``objective: marginmse`` the group is 2.
``lion-dense`` is its dense side: the mean of the L2-normalised token states (not normalised again),
InfoNCE at temperature 0.01, the same optimiser, negatives, lengths and LoRA targets.

``luo-dense`` is the fine-tuning of Luo et al. 2024 (Large Language Models as Foundations for
Next-Gen Dense Retrieval): LoRA, InfoNCE at temperature 0.02 over in-batch and 7 hard negatives, lr 3e-4,
batch 128; pooling is each backbone's default (EOS for decoders, CLS for BERT), as in the paper.

``promptreps`` (Zhuang et al., 2024) needs no training: a decoder is prompted to name the text in one
word, and the next-word logits after the prompt, through log(1 + ReLU), restricted to the text's own
tokens (never the prompt's) and cut to the 128 largest, rounded to hundredths, are the sparse vector.
The prompt here is plain text; an instruct model's chat markup can be added with the prefix and
suffix flags (the paper's prompts use each model's chat template).
"""

from __future__ import annotations

import copy
from typing import Any

from llmret.util.errors import InputError


def _one_word(kind: str) -> dict[str, str]:
    return {f"{kind}_prefix": f'{kind.capitalize()}: "',
            f"{kind}_suffix": f'". Use one most important word to represent the {kind} in a retrieval task. '
                              'Make sure your word is in lowercase.\nThe word is: "'}


RECIPES: dict[str, dict[str, Any]] = {
    "lion-sparse": {
        "retriever": "sparse", "learning_rate": 1e-4, "warmup_ratio": 0.04, "group_size": 17, "temperature": 1.0,
        "kd_student_temperature": 1.0, "margin_temperature": 1.0, "margin_negatives": "one",
        "regularizer": "flops", "query_reg_weight": 0.05, "passage_reg_weight": 0.04, "reg_warmup_ratio": 0.33,
        "reg_warmup_unit": "micro-batch", "objectives": {"marginmse": {"group_size": 2}},
        "lora_target_modules": "all-linear",
        "encoder": {"query_max_length": 64, "passage_max_length": 128, "add_bos": True, "append_eos": False,
                    "bidirectional": True},
    },
    "lion-dense": {
        "retriever": "dense", "learning_rate": 1e-4, "warmup_ratio": 0.04, "group_size": 17, "temperature": 0.01,
        "kd_student_temperature": 0.01, "margin_temperature": 0.01, "margin_negatives": "one",
        "objectives": {"marginmse": {"group_size": 2}},
        "lora_target_modules": "all-linear",
        "encoder": {"query_max_length": 64, "passage_max_length": 128, "add_bos": True, "append_eos": False,
                    "pooling": "mean_normalized", "normalize": False, "bidirectional": True},
    },
    "luo-dense": {
        "retriever": "dense", "learning_rate": 3e-4, "batch_size": 128, "group_size": 8, "temperature": 0.02,
        "lora": True,
    },
    "promptreps": {
        "retriever": "sparse",
        "encoder": {"pooling": "last", "add_bos": True, "append_eos": False, "input_terms_only": True,
                    "zero_special_terms": True, "query_top_k": 128, "passage_top_k": 128, "quantize": 100,
                    **_one_word("query"), **_one_word("passage")},
    },
}
ENCODER_RECIPES = tuple(name for name, r in RECIPES.items() if set(r) <= {"retriever", "encoder"})


def recipe_values(name: str, objective: str) -> dict[str, Any]:
    """Recipe ``name``'s settings for training with ``objective``: its ``objectives`` entry for that
    objective over the rest (Lion's MarginMSE scripts train triples: group size 2, not 17)."""
    recipe = copy.deepcopy(RECIPES[name])
    by_objective = recipe.pop("objectives", {})
    return {**recipe, **by_objective.get(objective, {})}


def encoder_recipe(name: str, retriever: str) -> dict[str, Any]:
    """The encoder settings of recipe ``name`` (for encoding and evaluating without training)."""
    if name not in ENCODER_RECIPES:
        raise InputError(f"'{name}' is not an encoder recipe; known: {', '.join(ENCODER_RECIPES)}")
    wanted = RECIPES[name].get("retriever", retriever)
    if wanted != retriever:
        raise InputError(f"recipe '{name}' makes a {wanted} encoder: add --retriever {wanted}")
    return copy.deepcopy(RECIPES[name]["encoder"])


def lion_logit_scale(hidden_size: int) -> float:
    """Lion-SP's logit scale: hidden_size ** -0.25."""
    return float(hidden_size) ** -0.25
