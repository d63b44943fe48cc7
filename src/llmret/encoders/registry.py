"""The one registry of learned retrievers' encoders: a retriever's name (``dense``, ``sparse``) to the
encoder class that makes its vectors. Every place that turns the name into an encoder goes through it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llmret.encoders.settings import EncoderSettings
from llmret.util.errors import InputError

LAZY_IMPORTS = "a name's encoder class is imported when asked for: the registry's names load no torch (the CLI's parser reads them)"

if TYPE_CHECKING:
    from llmret.encoders.base import TextEncoder

ENCODED = ("dense", "sparse")  # retrievers whose vectors an encoder makes (BM25 reads the text itself)


def encoder_class(retriever: str) -> type[TextEncoder]:
    """The encoder class of ``retriever``; its module is imported here, on first use (torch)."""
    if retriever == "dense":
        from llmret.encoders.dense import DenseEncoder

        return DenseEncoder
    if retriever == "sparse":
        from llmret.encoders.sparse import SparseEncoder

        return SparseEncoder
    raise InputError(f"an encoder is {' or '.join(ENCODED)}, not '{retriever}'")


def load_encoder(retriever: str, settings: EncoderSettings, *, dataset: dict[str, Any] | None = None,
                 device: str | None = None) -> TextEncoder:
    """The ``retriever``'s encoder over ``settings`` (``dataset``: an evaluation convention's layer)."""
    return encoder_class(retriever).load(settings, device, dataset=dataset)
