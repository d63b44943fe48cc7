"""What dense and sparse encoders share: a backbone, prefixes and lengths; text to token ids to batches.

Speed matters here (corpora have millions of passages), so texts are tokenized in one fast batch
call, sorted by token length so that batches carry little padding, padded by hand into one tensor,
and run under ``torch.inference_mode``. Subclasses say what a batch becomes (:meth:`forward`) and how
batch outputs are stored (:meth:`to_output`, :meth:`stack`).
"""

from __future__ import annotations

import functools
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

from llmret.encoders.settings import DEFAULTS, EncoderSettings
from llmret.models.backbone import Backbone, ModelInfo, load_backbone
from llmret.models.saved import SavedModel
from llmret.util.errors import InputError

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


class TokenIds(list):
    """One text's token ids; ``own`` (when asked for) flags the ids that come from the text itself
    rather than from a prompt, instruction or special token around it, so that restricting sparse
    terms to the input's own tokens (PromptReps) never counts the prompt's words as the text's."""

    def __init__(self, ids: Sequence[int], own: Sequence[bool] | None = None) -> None:
        super().__init__(ids)
        self.own = list(own) if own is not None else None


def closing_specials(tokenizer: Any) -> int:
    """How many special tokens the tokenizer puts after a text (BERT's [SEP]: 1; Llama's: 0)."""
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for start in range(len(full) - len(bare) + 1):
        if full[start:start + len(bare)] == bare:
            return len(full) - start - len(bare)
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

    retriever: ClassVar[str]
    needs_lm_head: ClassVar[bool] = False
    wants_own_terms: bool = False  # token ids carry which are the text's own (TokenIds.own)

    def __init__(self, backbone: Backbone, settings: EncoderSettings, device: str | torch.device | None = None,
                 dataset: dict[str, Any] | None = None) -> None:
        saved = backbone.saved
        if saved is not None and not saved.adaptation and saved.retriever != self.retriever:
            raise InputError(f"{backbone.source} was trained as a {saved.retriever} retriever; "
                             f"load it with --retriever {saved.retriever}")
        layers: list[tuple[str, dict[str, Any]]] = []  # highest first, under the settings given
        if dataset is not None:
            trained_with_instruction = saved is not None and saved.trained_with_instruction
            layers.append(("dataset rules", {**dataset, "instruction": dataset.get("instruction", "")
                                             if trained_with_instruction else ""}))
        if saved is not None:
            layers.append(("saved model", saved.encoder))
        layers.append(("model defaults", backbone.model_defaults))
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
        self._closing_specials = closing_specials(self.tokenizer)
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
        """The backbone's defaults as this kind of encoder wants them (settings override them afterwards)."""
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
        return {"retriever": self.retriever, "weights": self.backbone.fingerprint, **settings, **asdict(self.info)}

    def format_query(self, text: str, instruction: str | None = None) -> str:
        """The query as the model sees it: with the task instruction (``instruction``, else the settings',
        if any) and the query prefix."""
        s = self.settings
        instruction = s.instruction if instruction is None else instruction
        if instruction:
            text = s.instruction_template.format(instruction=instruction, query=text)
        text = s.query_prefix + text
        return text.lower() if self.info.lowercase else text

    def format_passage(self, text: str) -> str:
        text = self.settings.passage_prefix + text
        return text.lower() if self.info.lowercase else text

    # ---- text -> token ids -----------------------------------------------------------------------
    def token_ids(self, texts: Sequence[str], *, query: bool, count: bool = False,
                  instruction: str | None = None) -> list[TokenIds]:
        """Queries or passages as the model reads them: formatted (instruction, prefix), cut at the
        maximum length, with the suffix after the text; ``count`` adds cut texts to ``self.truncated``;
        ``instruction`` replaces the settings' for these queries (a training task's, a request's)."""
        fmt = functools.partial(self.format_query, instruction=instruction) if query else self.format_passage
        s = self.settings
        return self.tokenize([fmt(t) for t in texts], s.query_max_length if query else self.passage_max_length,
                             count=("queries" if query else "passages") if count else None,
                             suffix=s.query_suffix if query else s.passage_suffix,
                             own=self._own_span(fmt) if self.wants_own_terms else None)

    def query_fit(self, texts: Sequence[str], instruction: str | None = None) -> tuple[int, list[int]]:
        """How the queries fit ``query_max_length`` under ``instruction``: the tokens the formatting
        (instruction, prefix, suffix, special tokens) leaves for a query, and each query's own tokens.
        A query longer than that room is cut; a service says so rather than answer for half a query."""
        s = self.settings
        fmt = functools.partial(self.format_query, instruction=instruction)
        whole = 1 << 30  # no cut: the full lengths
        frame = len(self.tokenize([fmt("")], whole, suffix=s.query_suffix)[0])
        lengths = [len(ids) - frame for ids in self.tokenize([fmt(t) for t in texts], whole, suffix=s.query_suffix)]
        return s.query_max_length - frame, lengths

    def _own_span(self, fmt: Any) -> tuple[int, int]:
        """Characters the formatting puts before and after a text (instruction template, prefix)."""
        sentinel = "\x00"
        formatted = fmt(sentinel)
        start = formatted.index(sentinel)
        return start, len(formatted) - start - len(sentinel)

    def tokenize(self, texts: Sequence[str], max_length: int, count: str | None = None, suffix: str | None = None,
                 own: tuple[int, int] | None = None) -> list[TokenIds]:
        """Token ids with the backbone's special tokens, BOS as configured, ``suffix``, and EOS if asked.

        EOS is appended by hand because many tokenizers (all GGUF ones, Llama's) do not add it, and
        last-token pooling needs a final token that has attended to the whole text. Texts longer than
        ``max_length`` are cut (keeping the special tokens and the suffix) and counted in
        ``self.truncated[count]``. ``own`` (characters of formatting before and after each text) marks
        each id that belongs to the text itself, not to a prompt around it (:class:`TokenIds`).
        """
        # long: the cut that keeps special tokens, the suffix and the text-ownership marks is one pass
        tok = self.tokenizer
        reserve = 1 if self.info.append_eos and not self._tokenizer_adds_eos else 0
        tail = tok(suffix, add_special_tokens=False)["input_ids"] if suffix else []
        limit = max_length - reserve - len(tail)
        if limit < 1:
            raise InputError(f"a maximum length of {max_length} leaves no room for text after the suffix "
                             f"({len(tail)} tokens) and special tokens")
        texts = list(texts)
        offsets = own is not None

        def run(batch: list[str], most: int) -> tuple[list[list[int]], list[list[bool]] | None]:
            out = tok(batch, add_special_tokens=True, truncation=True, max_length=most, return_offsets_mapping=offsets)
            if not offsets:
                return out["input_ids"], None
            flags = []
            for text, spans in zip(batch, out["offset_mapping"]):
                lo, hi = own[0], len(text) - own[1]
                row = []
                for a, b in spans:
                    while a < b and text[a].isspace():  # byte-level BPE spans carry the space before a word
                        a += 1
                    row.append(b > a and a >= lo and b <= hi)
                flags.append(row)
            return out["input_ids"], flags

        # One token more than the limit shows which texts are too long without tokenizing them whole.
        ids, flags = run(texts, limit + 1)
        long = [i for i, seq in enumerate(ids) if len(seq) > limit]
        if long:
            cut, cut_flags = run([texts[i] for i in long], limit)
            for j, i in enumerate(long):
                ids[i] = cut[j]
                if flags is not None:
                    flags[i] = cut_flags[j]
        flags = flags if flags is not None else [None] * len(ids)
        bos, eos = tok.bos_token_id, tok.eos_token_id
        out: list[TokenIds] = []
        for i, (seq, mine) in enumerate(zip(ids, flags)):
            mine = list(mine) if mine is not None else None
            if self.info.add_bos is False and bos is not None and seq and seq[0] == bos:
                seq, mine = seq[1:], mine[1:] if mine is not None else None
            elif self.info.add_bos and bos is not None and (not seq or seq[0] != bos):
                if len(seq) == limit and i not in long:
                    long.append(i)
                seq, mine = [bos, *seq][:limit], [False, *mine][:limit] if mine is not None else None
            if tail:  # before the special tokens the tokenizer closes a text with (BERT's [SEP])
                at = len(seq) - self._closing_specials
                seq = [*seq[:at], *tail, *seq[at:]]
                mine = [*mine[:at], *[False] * len(tail), *mine[at:]] if mine is not None else None
            if self.info.append_eos and not (seq and seq[-1] == eos):
                seq, mine = [*seq, eos], [*mine, False] if mine is not None else None
            out.append(TokenIds(seq, mine))
        if count is not None:
            self.truncated[count] += len(long)
        return out

    def collate(self, batch: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        """Pad token id lists into ``input_ids`` and ``attention_mask`` (and ``own_mask``, 1 on a text's
        own tokens, when the encoder restricts terms to them and the ids carry it).

        Left padding (the tokenizer's side) is kept only for models that take position ids, which
        llmret numbers from the first real token; a model that numbers positions itself from the
        left edge (DistilBERT) or not at all (T5) is padded right, where its own numbering is right.
        """
        width = max(max(len(seq) for seq in batch), 1)
        input_ids = torch.full((len(batch), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        marked = self.wants_own_terms and all(getattr(seq, "own", None) is not None for seq in batch)
        own = torch.zeros((len(batch), width), dtype=torch.long) if marked else None
        left = self.tokenizer.padding_side == "left" and self._takes_position_ids
        for row, seq in enumerate(batch):
            n = len(seq)
            span = slice(width - n, width) if left else slice(0, n)
            input_ids[row, span] = torch.tensor(list(seq), dtype=torch.long)
            mask[row, span] = 1
            if own is not None:
                own[row, span] = torch.tensor(seq.own, dtype=torch.long)
        out = {"input_ids": input_ids.to(self.device), "attention_mask": mask.to(self.device)}
        if own is not None:
            out["own_mask"] = own.to(self.device)
        return out

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
    def encode(self, texts: Sequence[str], *, query: bool, batch_size: int | None = None, progress: bool = False,
               instruction: str | None = None) -> Any:
        """Encode texts as queries or passages; row i belongs to ``texts[i]`` (``instruction``: for queries,
        instead of the settings' own)."""
        ids = self.token_ids(texts, query=query, count=True, instruction=instruction)
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
