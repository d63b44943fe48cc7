"""What dense and sparse encoders share: a backbone, prefixes and lengths; text to token ids to batches.

Speed matters here (corpora have millions of passages), so texts are tokenized in one fast batch
call, sorted by token length so that batches carry little padding, padded by hand into one tensor,
and run under ``torch.inference_mode``. Subclasses say what a batch becomes (:meth:`forward`) and how
batch outputs are stored (:meth:`to_output`, :meth:`stack`).
"""

from __future__ import annotations

import inspect
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from llmret.backbone import Backbone, ModelInfo, load_backbone
from llmret.config import DEFAULTS, EncoderSettings
from llmret.saved import SavedModel

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
OVERRIDABLE = ("pooling", "normalize", "append_eos", "add_bos", "bidirectional")


def _config(model: torch.nn.Module) -> Any:
    """The model's config, through a DDP (or other) wrapper that has a ``module``."""
    return getattr(model, "config", None) or model.module.config


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


def position_offset(model: torch.nn.Module) -> int:
    """Where a model's absolute positions start: ``padding_idx + 1`` for RoBERTa, XLM-R, MPNet,
    CamemBERT and Longformer (their position table reserves the rows up to the padding index), else 0.

    Read from the position embedding itself, so any architecture built that way is covered.
    """
    for name, module in model.named_modules():
        if name.endswith("position_embeddings") and isinstance(module, torch.nn.Embedding) \
                and module.padding_idx is not None:
            return int(module.padding_idx) + 1
    return 0


class TextEncoder(ABC):
    """Encode queries and passages with one backbone; :class:`DenseEncoder` and :class:`SparseEncoder` mirror it.

    Settings are resolved in layers, each filling what the ones before leave unset: the settings given
    (flags, config files), then ``dataset`` (the evaluation rules of the data being searched: lengths,
    and the dataset's instruction, used only for a model trained with instructions), then the settings
    a trained model was saved with, then the model folder's own defaults (sentence-transformers
    prompts), then llmret's defaults. ``self.settings`` holds the result; nothing is left unset but
    optional limits.
    """

    paradigm: ClassVar[str]
    needs_lm_head: ClassVar[bool] = False

    def __init__(self, backbone: Backbone, settings: EncoderSettings, device: str | torch.device | None = None,
                 dataset: dict[str, Any] | None = None) -> None:
        saved = backbone.saved
        if saved is not None and not saved.adaptation and saved.paradigm != self.paradigm:
            raise ValueError(f"{backbone.source} was trained as a {saved.paradigm} retriever; "
                             f"load it with --retriever {saved.paradigm}")
        layers: list[dict[str, Any]] = []
        if dataset is not None:
            trained_with_instruction = saved is not None and saved.trained_with_instruction
            layers.append({**dataset, "instruction": dataset.get("instruction", "") if trained_with_instruction else ""})
        if saved is not None:
            layers.append(saved.encoder)
        layers.append(backbone.model_defaults)
        self.settings = settings.resolve(*layers)
        overrides = {k: getattr(self.settings, k) for k in OVERRIDABLE if getattr(self.settings, k) is not None}
        self.info: ModelInfo = replace(self.default_info(backbone), **overrides)
        self.backbone = backbone
        self.tokenizer = backbone.tokenizer
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = backbone.model.to(self.device)
        self.head = backbone.head.to(self.device) if backbone.head is not None else None
        explicit = settings.explicit()
        for name in ("query_max_length", "passage_max_length"):
            setattr(self.settings, name, self._capped(name, getattr(self.settings, name), name in explicit))
        self.passage_max_length = self.settings.passage_max_length
        self._takes_position_ids = "position_ids" in inspect.signature(self.model.forward).parameters
        self._position_offset = position_offset(self.model)
        eos = self.tokenizer.eos_token_id  # an exported llmret tokenizer appends EOS itself
        self._tokenizer_adds_eos = eos is not None and self.tokenizer("a")["input_ids"][-1:] == [eos]
        self.truncated = {"queries": 0, "passages": 0}  # texts cut at their maximum length, since loading

    def _capped(self, name: str, value: int | None, explicit: bool) -> int:
        """A length within what the model can read (its own maximum when unset); a cap on a length the
        user asked for is logged (a dataset's lengths are capped quietly, as MTEB does)."""
        limit = self.info.max_length
        if value is None:
            return limit
        if value > limit:
            if explicit:
                log.warning("%s %d is above %s's maximum length %d; using %d", name, value, self.settings.model, limit, limit)
            return limit
        return int(value)

    def default_info(self, backbone: Backbone) -> ModelInfo:
        """The backbone's defaults as this paradigm wants them (settings override them afterwards)."""
        return backbone.info

    @classmethod
    def load(cls, settings: EncoderSettings, device: str | None = None,
             dataset: dict[str, Any] | None = None) -> TextEncoder:
        """Load the backbone named in ``settings`` and wrap it (see the class docstring for ``dataset``)."""
        folder = Path(settings.model).expanduser()
        saved = SavedModel.read(folder) if folder.is_dir() else None  # its dtype decides how the weights load
        dtype = settings.dtype or (saved.encoder.get("dtype") if saved else None) or DEFAULTS["dtype"]
        backbone = load_backbone(settings.model, dtype=DTYPES[dtype], lm_head=cls.needs_lm_head)
        return cls(backbone, settings, device, dataset)

    def signature(self) -> dict[str, object]:
        """Everything that determines the vectors, the weights' fingerprint included: recorded with
        embeddings and runs, and compared before corpus vectors are reused."""
        settings = {k: v for k, v in asdict(self.settings).items() if k != "batch_size"}
        return {"paradigm": self.paradigm, "weights": self.backbone.fingerprint, **settings, **asdict(self.info)}

    def format_query(self, text: str) -> str:
        """The query as the model sees it: with the task instruction (if any) and the query prefix."""
        s = self.settings
        if s.instruction:
            text = s.instruction_template.format(instruction=s.instruction, query=text)
        text = s.query_prefix + text
        return text.lower() if self.info.lowercase else text

    def format_passage(self, text: str) -> str:
        text = self.settings.passage_prefix + text
        return text.lower() if self.info.lowercase else text

    # ---- text -> token ids -----------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str], max_length: int, count: str | None = None) -> list[list[int]]:
        """Token ids with the backbone's special tokens, BOS as configured, and EOS appended if asked.

        EOS is appended by hand because many tokenizers (all GGUF ones, Llama's) do not add it, and
        last-token pooling needs a final token that has attended to the whole text. Texts longer than
        ``max_length`` are cut (keeping the special tokens) and counted in ``self.truncated[count]``.
        """
        tok = self.tokenizer
        reserve = 1 if self.info.append_eos and not self._tokenizer_adds_eos else 0
        limit = max_length - reserve
        texts = list(texts)
        # One token more than the limit shows which texts are too long without tokenizing them whole.
        ids = tok(texts, add_special_tokens=True, truncation=True, max_length=limit + 1)["input_ids"]
        long = [i for i, seq in enumerate(ids) if len(seq) > limit]
        if long:
            cut = tok([texts[i] for i in long], add_special_tokens=True, truncation=True, max_length=limit)["input_ids"]
            for i, seq in zip(long, cut):
                ids[i] = seq
        bos, eos = tok.bos_token_id, tok.eos_token_id
        if self.info.add_bos is False and bos is not None:
            ids = [seq[1:] if seq and seq[0] == bos else seq for seq in ids]
        elif self.info.add_bos and bos is not None:
            for i, seq in enumerate(ids):
                if not seq or seq[0] != bos:
                    ids[i] = [bos, *seq][:limit]
                    if len(seq) == limit and i not in long:
                        long.append(i)
        if self.info.append_eos:
            ids = [seq if seq and seq[-1] == eos else [*seq, eos] for seq in ids]
        if count is not None:
            self.truncated[count] += len(long)
        return ids

    def collate(self, batch: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        """Pad token id lists into ``input_ids`` and ``attention_mask``.

        Left padding (the tokenizer's side) is kept only for models that take position ids, which
        llmret numbers from the first real token; a model that numbers positions itself from the
        left edge (DistilBERT) or not at all (T5) is padded right, where its own numbering is right.
        """
        width = max(max(len(seq) for seq in batch), 1)
        input_ids = torch.full((len(batch), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        left = self.tokenizer.padding_side == "left" and self._takes_position_ids
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
            # embeddings (BERT) and every row starts at position 0 (RoPE models, for exactness); models
            # whose table starts after the padding index (RoBERTa family) are offset as they expect.
            kwargs["position_ids"] = (attention_mask.cumsum(dim=1) - 1).clamp(min=0) + self._position_offset
        kwargs["attention_mask"] = (bidirectional_mask(attention_mask, _config(self.model))
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
        ids = self.tokenize([fmt(t) for t in texts], max_length, count="queries" if query else "passages")
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
