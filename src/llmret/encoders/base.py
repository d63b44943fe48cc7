"""What dense and sparse encoders share: a backbone, prefixes and lengths; text to token ids to batches.

Speed matters here (corpora have millions of passages), so texts are tokenized in one fast batch
call, sorted by token length so that batches carry little padding, padded by hand into one tensor,
and run under ``torch.inference_mode``. Subclasses say what a batch becomes (:meth:`forward`) and how
batch outputs are stored (:meth:`to_output`, :meth:`stack`).
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from llmret.backbone import Backbone, ModelInfo, load_backbone
from llmret.config import EncoderSettings

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
OVERRIDABLE = ("pooling", "normalize", "append_eos", "add_bos", "bidirectional")


def bidirectional_mask(attention_mask: torch.Tensor, config: object) -> torch.Tensor:
    """A 4D padding-only mask [batch, 1, length, length]: every token attends to every real token.

    Decoders built on transformers' masking utilities (Llama, Mistral, Qwen2/3, Gemma 2/3, Phi-3 ...)
    take a prepared 4D mask as it is instead of adding causality, so this turns them bidirectional
    without patching any architecture. SDPA and flex attention take booleans; eager takes additive.
    """
    length = attention_mask.shape[1]
    keep = attention_mask.bool()[:, None, None, :].expand(-1, 1, length, length)
    if getattr(config, "_attn_implementation", "sdpa") == "eager":
        return torch.zeros(keep.shape, dtype=torch.float32, device=keep.device).masked_fill(~keep, torch.finfo(torch.float32).min)
    return keep


class TextEncoder(ABC):
    """Encode queries and passages with one backbone; :class:`DenseEncoder` and :class:`SparseEncoder` mirror it."""

    paradigm: ClassVar[str]
    needs_lm_head: ClassVar[bool] = False

    def __init__(self, backbone: Backbone, settings: EncoderSettings, device: str | torch.device | None = None) -> None:
        overrides = {k: getattr(settings, k) for k in OVERRIDABLE if getattr(settings, k) is not None}
        self.info: ModelInfo = replace(self.default_info(backbone.info), **overrides)
        self.settings = settings
        self.backbone = backbone
        self.tokenizer = backbone.tokenizer
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = backbone.model.to(self.device)
        self.passage_max_length = settings.passage_max_length or self.info.max_length
        self._takes_position_ids = "position_ids" in inspect.signature(self.model.forward).parameters

    def default_info(self, info: ModelInfo) -> ModelInfo:
        """The backbone's defaults as this paradigm wants them (settings override them afterwards)."""
        return info

    @classmethod
    def load(cls, settings: EncoderSettings, device: str | None = None) -> TextEncoder:
        """Load the backbone named in ``settings`` and wrap it.

        A model trained by llmret brings the prefixes and instruction it was trained with; they apply
        unless ``settings`` sets its own, because a query formatted otherwise than in training loses
        accuracy silently.
        """
        backbone = load_backbone(settings.model, dtype=DTYPES[settings.dtype], lm_head=cls.needs_lm_head)
        defaults = EncoderSettings()
        for key in ("query_prefix", "passage_prefix", "instruction", "instruction_template"):
            if key in backbone.saved_settings and getattr(settings, key) == getattr(defaults, key):
                setattr(settings, key, backbone.saved_settings[key])
        return cls(backbone, settings, device)

    def signature(self) -> dict[str, object]:
        """Everything that determines the vectors: recorded with embeddings and runs."""
        return {"paradigm": self.paradigm, **asdict(self.settings), **asdict(self.info)}

    def format_query(self, text: str) -> str:
        """The query as the model sees it: with the task instruction (if any) and the query prefix."""
        s = self.settings
        if s.instruction:
            text = s.instruction_template.format(instruction=s.instruction, query=text)
        return s.query_prefix + text

    def format_passage(self, text: str) -> str:
        return self.settings.passage_prefix + text

    # ---- text -> token ids -----------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        """Token ids with the backbone's special tokens, BOS as configured, and EOS appended if asked.

        EOS is appended by hand because many tokenizers (all GGUF ones, Llama's) do not add it, and
        last-token pooling needs a final token that has attended to the whole text.
        """
        tok = self.tokenizer
        reserve = 1 if self.info.append_eos else 0
        ids = tok(list(texts), add_special_tokens=True, truncation=True, max_length=max_length - reserve)["input_ids"]
        bos, eos = tok.bos_token_id, tok.eos_token_id
        if self.info.add_bos is False and bos is not None:
            ids = [seq[1:] if seq and seq[0] == bos else seq for seq in ids]
        elif self.info.add_bos and bos is not None:
            ids = [seq if seq and seq[0] == bos else [bos, *seq][:max_length - reserve] for seq in ids]
        if self.info.append_eos:
            ids = [seq if seq and seq[-1] == eos else [*seq, eos] for seq in ids]
        return ids

    def collate(self, batch: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        """Pad token id lists into ``input_ids`` and ``attention_mask`` on the tokenizer's padding side."""
        width = max(max(len(seq) for seq in batch), 1)
        input_ids = torch.full((len(batch), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        left = self.tokenizer.padding_side == "left"
        for row, seq in enumerate(batch):
            n = len(seq)
            span = slice(width - n, width) if left else slice(0, n)
            input_ids[row, span] = torch.tensor(seq, dtype=torch.long)
            mask[row, span] = 1
        return {"input_ids": input_ids.to(self.device), "attention_mask": mask.to(self.device)}

    def model_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, Any]:
        """Arguments for the backbone: positions of real tokens, and a bidirectional mask if asked."""
        kwargs: dict[str, Any] = {"input_ids": input_ids}
        if self._takes_position_ids:
            # Positions count real tokens only, so that left padding does not shift absolute position
            # embeddings (BERT) and every row starts at position 0 (RoPE models, for exactness).
            kwargs["position_ids"] = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
        kwargs["attention_mask"] = (bidirectional_mask(attention_mask, self.model.config)
                                    if self.info.bidirectional else attention_mask)
        return kwargs

    # ---- token ids -> representations ------------------------------------------------------------
    @abstractmethod
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """One representation per row; differentiable, so training uses it too."""

    @abstractmethod
    def to_output(self, reps: torch.Tensor, query: bool) -> Any:
        """A batch of representations as stored (a numpy array, a sparse matrix)."""

    @abstractmethod
    def stack(self, parts: list[Any]) -> Any:
        """Batch outputs in order as one array or matrix (with zero rows when ``parts`` is empty)."""

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], *, query: bool, batch_size: int | None = None, progress: bool = False) -> Any:
        """Encode texts as queries or passages; row i belongs to ``texts[i]``."""
        fmt = self.format_query if query else self.format_passage
        max_length = self.settings.query_max_length if query else self.passage_max_length
        ids = self.tokenize([fmt(t) for t in texts], max_length)
        order = np.argsort([-len(seq) for seq in ids], kind="stable")
        batch_size = batch_size or self.settings.batch_size
        self.model.eval()
        parts = []
        bar = tqdm(total=len(texts), desc="queries" if query else "passages", unit="text", disable=not progress)
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            parts.append(self.to_output(self.forward(**self.collate([ids[i] for i in rows])), query))
            bar.update(len(rows))
        bar.close()
        inverse = np.empty(len(order), dtype=np.int64)
        inverse[order] = np.arange(len(order))
        return self.stack(parts)[inverse]

    def encode_queries(self, texts: Sequence[str], **kwargs: Any) -> Any:
        return self.encode(texts, query=True, **kwargs)

    def encode_passages(self, texts: Sequence[str], **kwargs: Any) -> Any:
        return self.encode(texts, query=False, **kwargs)
