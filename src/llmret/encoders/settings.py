"""The encoder's settings: how queries and passages become vectors, the one declaration of each setting.

Every field is a flag of the commands that encode (``query_max_length`` -> ``--query-max-length``), a key
of config, study and service files, and a key of the ``llmret.json`` a trained model is saved with.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

from llmret.util.layers import merge
from llmret.util.settings import option


@dataclass
class EncoderSettings:
    """How to turn queries and passages into vectors.

    ``None`` means "not set here": the value then comes from the next layer that sets it (see
    :meth:`resolve`): the dataset's evaluation rules, the settings a trained model was saved with, the
    model's own defaults (sentence-transformers prompts), and finally llmret's own (a field's ``fallback``).
    A value set here, even one equal to a default, always wins: that is how a user says "this, not the
    saved one".
    """

    model: str = option("minilm-l6", "zoo name, model folder, .gguf file or hub id")
    pooling: str | None = option(None, "dense: cls, mean, last, max, weightedmean, mean_sqrt_len, mean_normalized, "
                                       "or several joined by +; sparse: max, sum, last (next-word logits)")
    normalize: bool | None = option(None, "L2-normalise dense vectors")
    append_eos: bool | None = option(None, "append the EOS token (decoders pool the last token: it must have read "
                                           "the whole text; GGUF and Llama tokenizers add none)")
    add_bos: bool | None = option(None, "keep the tokenizer's BOS token")
    bidirectional: bool | None = option(None, "decoders: full attention instead of causal (Llama, Mistral, Qwen, "
                                              "Gemma, Phi-3 ...)")
    query_prefix: str | None = option(None, "put before each query", fallback="")
    passage_prefix: str | None = option(None, "put before each passage", fallback="")
    # Put after the text, and kept when the text is cut: a prompt's end (PromptReps: '". The word is: "'),
    # which last-token pooling reads, so it must never be truncated away.
    query_suffix: str | None = option(None, "put after each query, never cut (a prompt's end)", fallback="")
    passage_suffix: str | None = option(None, "put after each passage, never cut (a prompt's end)", fallback="")
    # A task instruction put before each query (instruction-based retrieval); the same template must
    # be used at training and evaluation time, so it is part of the settings saved with a model.
    instruction: str | None = option(None, "task instruction put before each query", fallback="")
    instruction_template: str | None = option(None, "how the instruction and the query are joined",
                                              fallback="Instruct: {instruction}\nQuery: {query}")
    query_max_length: int | None = option(None, "tokens a query is cut at", fallback=64)
    # resolved to the model's maximum when no layer sets it
    passage_max_length: int | None = option(None, "tokens a passage is cut at (default: the model's maximum)")
    batch_size: int | None = option(None, "texts encoded at once", fallback=32, training=False)
    dtype: str | None = option(None, "weights' precision", choices=("float32", "bfloat16", "float16"),
                               fallback="float32")
    # Sparse encoders only (pooling there is "max", "sum", or "last": the next-word logits after the text):
    logit_scale: float | None = option(None, "multiply vocabulary logits before log(1 + ReLU)", fallback=1.0,
                                       sparse=True)
    query_top_k: int | None = option(None, "keep a query's k largest term weights (0: all non-zero)", sparse=True)
    passage_top_k: int | None = option(None, "keep a passage's k largest term weights (0: all non-zero)", sparse=True)
    quantize: int | None = option(None, "round term weights to multiples of 1/N (e.g. 100; 0: no rounding)",
                                  sparse=True)
    # Bounding memory at batch x length x chunk; None: the MLP width, so the chunk's logits are no larger
    # than activations the forward already holds.
    vocab_chunk: int | None = option(None, "vocabulary rows projected at once (default: the MLP width)", sparse=True)
    # Ways to be sparse from the first step (a decoder's head makes nearly every term positive):
    zero_special_terms: bool | None = option(None, "special tokens' dimensions (BOS, EOS, pad ...) always 0",
                                             sparse=True)
    input_terms_only: bool | None = option(None, "only the text's own tokens get weight (plus --expansion-terms)",
                                           sparse=True)
    expansion_terms: int | None = option(None, "with --input-terms-only: keep this many strongest other terms",
                                         sparse=True)
    full_vocab_head: bool | None = option(None, "with --input-terms-only: project the whole vocabulary anyway (the "
                                                "same vectors, slower; for checking the default, which projects "
                                                "only the batch's own tokens)", sparse=True)

    def explicit(self) -> dict[str, Any]:
        """The settings given here (not None), the model name excluded."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model" and getattr(self, f.name) is not None}

    def resolve(self, *layers: tuple[str, dict[str, Any]]) -> EncoderSettings:
        """A copy with every unset field taken from the first of ``layers`` (name, values; highest first)
        that sets it, then llmret's own fallback; ``origins`` on the copy names the layer of each value
        (``given`` for the values set here)."""
        stack = [("llmret default", DEFAULTS), *reversed(layers), ("given", self.explicit())]
        layered = merge(stack)
        out = dataclasses.replace(self, **{k: v for k, v in layered.values.items() if k in _NAMES})
        out.origins = {k: v for k, v in layered.origins.items() if k in _NAMES}
        return out


_NAMES = {f.name for f in fields(EncoderSettings)}
DEFAULTS: dict[str, Any] = {f.name: f.metadata["fallback"] for f in fields(EncoderSettings) if "fallback" in f.metadata}
SPARSE_ONLY = tuple(f.name for f in fields(EncoderSettings) if f.metadata.get("sparse"))
