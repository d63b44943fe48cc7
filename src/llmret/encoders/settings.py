"""The encoder's settings: how queries and passages become vectors, the one declaration of each setting.

Every field is a flag of the commands that encode (``query_max_length`` -> ``--query-max-length``), a key
of config, study and service files, and a key of the ``llmret.json`` a trained model is saved with.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any


@dataclass
class EncoderSettings:
    """How to turn queries and passages into vectors.

    ``None`` means "not set here": the value then comes from the next layer that sets it (see
    :meth:`resolve`): the dataset's evaluation rules, the settings a trained model was saved with, the
    model's own defaults (sentence-transformers prompts), and finally :data:`DEFAULTS`. A value set
    here, even one equal to a default, always wins: that is how a user says "this, not the saved one".
    """

    model: str = "minilm-l6"
    pooling: str | None = None
    normalize: bool | None = None
    append_eos: bool | None = None
    add_bos: bool | None = None
    bidirectional: bool | None = None
    query_prefix: str | None = None
    passage_prefix: str | None = None
    # Put after the text, and kept when the text is cut: a prompt's end (PromptReps: '". The word is: "'),
    # which last-token pooling reads, so it must never be truncated away.
    query_suffix: str | None = None
    passage_suffix: str | None = None
    # A task instruction put before each query (instruction-based retrieval); the same template must
    # be used at training and evaluation time, so it is part of the settings saved with a model.
    instruction: str | None = None
    instruction_template: str | None = None
    query_max_length: int | None = None
    passage_max_length: int | None = None  # resolved to the model's maximum when no layer sets it
    batch_size: int | None = None
    dtype: str | None = None
    # Sparse encoders only (pooling there is "max", "sum", or "last": the next-word logits after the text):
    logit_scale: float | None = None  # vocabulary logits are multiplied by this before log(1 + ReLU)
    query_top_k: int | None = None  # keep a query's k largest weights (0 or unset: all non-zero)
    passage_top_k: int | None = None
    quantize: int | None = None  # store weights rounded to multiples of 1/quantize (e.g. 100; 0: no rounding)
    # Vocabulary rows projected at once, bounding memory at batch x length x chunk; None: the MLP width,
    # so the chunk's logits are no larger than activations the forward already holds.
    vocab_chunk: int | None = None
    # Ways to be sparse from the first step (a decoder's head makes nearly every term positive):
    zero_special_terms: bool | None = None  # special tokens' dimensions (BOS, EOS, pad ...) are always 0
    input_terms_only: bool | None = None  # only the text's own tokens get weight ...
    expansion_terms: int | None = None  # ... plus this many of the strongest other terms (with input_terms_only)

    def explicit(self) -> dict[str, Any]:
        """The settings given here (not None), the model name excluded."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model" and getattr(self, f.name) is not None}

    def resolve(self, *layers: dict[str, Any]) -> EncoderSettings:
        """A copy with every unset field taken from the first layer that sets it, then :data:`DEFAULTS`."""
        out = dataclasses.replace(self)
        for f in fields(self):
            if getattr(out, f.name) is not None:
                continue
            for layer in (*layers, DEFAULTS):
                if layer.get(f.name) is not None:
                    setattr(out, f.name, layer[f.name])
                    break
        return out


DEFAULTS: dict[str, Any] = {
    "query_prefix": "", "passage_prefix": "", "query_suffix": "", "passage_suffix": "", "instruction": "",
    "instruction_template": "Instruct: {instruction}\nQuery: {query}",
    "query_max_length": 64, "batch_size": 32, "dtype": "float32", "logit_scale": 1.0,
}
SPARSE_ONLY = ("logit_scale", "query_top_k", "passage_top_k", "quantize", "vocab_chunk", "zero_special_terms",
               "input_terms_only", "expansion_terms")
