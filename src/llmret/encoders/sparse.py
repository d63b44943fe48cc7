"""Learned-sparse encoder (SPLADE, Lion-SP): term weights w = log(1 + ReLU(logit)) over the vocabulary.

Logits come from the backbone's own MLM or LM head; they are pooled over real tokens by max (SPLADE v2
onwards) or sum, or read at the last token only (``last``: a decoder's next-word distribution after a
prompt, PromptReps' zero-shot sparse vector). Memory stays where the dense model's is: the vocabulary is projected in chunks
(:mod:`llmret.encoders.vocab_head`), and for max pooling the max over tokens is taken on the logits,
before the activation, which is monotone, so the result is the same and the activation runs on
[batch, vocab] instead of [batch, length, vocab].
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import scipy.sparse as sp
import torch
from torch.utils.checkpoint import checkpoint

from llmret.encoders import term_bias
from llmret.encoders.base import TextEncoder
from llmret.encoders.vocab_head import VocabHead, head_detached
from llmret.models.backbone import Backbone, ModelInfo
from llmret.util.errors import DataError, InputError

SPARSE_POOLINGS = ("max", "sum", "last")


def keep_top_k(reps: torch.Tensor, k: int | None) -> torch.Tensor:
    """Each row's ``k`` largest weights, the rest 0; the kept weights keep their gradient (training with
    the sparsity encoding will have, so that the model learns what survives the cut)."""
    if not k or k >= reps.shape[1]:
        return reps
    mask = torch.zeros_like(reps, dtype=torch.bool).scatter_(1, reps.detach().topk(k, dim=1).indices, True)
    return reps * mask


def sparsify(reps: torch.Tensor, top_k: int | None = None, quantize: int | None = None) -> sp.csr_matrix:
    """Weights [n, vocab] as a CSR matrix, keeping each row's ``top_k`` largest and rounding to 1/``quantize``."""
    reps = reps.detach().float()
    if top_k is not None and top_k < reps.shape[1]:
        values, index = reps.topk(top_k, dim=1)
        reps = torch.zeros_like(reps).scatter_(1, index, values)
    if quantize:
        reps = torch.round(reps * quantize) / quantize
    matrix = sp.csr_matrix(reps.cpu().numpy())
    matrix.eliminate_zeros()
    return matrix


class SparseEncoder(TextEncoder):
    """Encode queries and passages into sparse vectors over the backbone's vocabulary (CSR matrices)."""

    retriever = "sparse"
    needs_lm_head = True

    def __init__(self, backbone, settings, device=None, dataset=None) -> None:  # noqa: ANN001 - as TextEncoder
        super().__init__(backbone, settings, device, dataset)
        if self.info.pooling not in SPARSE_POOLINGS:
            raise InputError(f"sparse pooling must be one of {', '.join(SPARSE_POOLINGS)}, not '{self.info.pooling}'")
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])
        config = self.model.config.get_text_config() if hasattr(self.model.config, "get_text_config") else self.model.config
        width = getattr(config, "intermediate_size", None) or 4 * int(config.hidden_size)
        self.vocab_chunk = self.settings.vocab_chunk or int(width)
        if self.settings.expansion_terms and not self.settings.input_terms_only:
            raise InputError("expansion_terms adds terms to the input's own: it needs input_terms_only")
        self.wants_own_terms = bool(self.settings.input_terms_only)
        bias = term_bias.load(backbone.folder) if backbone.folder.is_dir() else None
        if bias is not None and bias.shape != (self.vocab_size,):
            raise DataError(backbone.folder / term_bias.FILE, None, f"a bias of shape {tuple(bias.shape)} for a "
                                                                    f"vocabulary of {self.vocab_size}")
        # A tensor when loaded; training replaces it with a trainable parameter (TermBias) it owns.
        self.term_bias: torch.Tensor | None = bias.to(self.device) if bias is not None else None

    def default_info(self, backbone: Backbone) -> ModelInfo:
        """Max pooling, no normalisation, no EOS, and no BOS: an attention sink would dominate every max.
        (``last`` pooling needs no EOS either: the prompt's end is the last token.)

        A model saved sparse by llmret already carries its sparse settings, and keeps them.
        """
        if backbone.saved is not None and backbone.saved.retriever == "sparse":
            return backbone.info
        return replace(backbone.info, pooling="max", normalize=False, append_eos=False, add_bos=False)

    @property
    def dim(self) -> int:
        return self.vocab_size

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                own_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Term weights [batch, vocab] (dense in the vocabulary; zero where ReLU cut). ``own_mask``
        marks the text's own tokens among prompts (without it every real token is the text's)."""
        reps = self._pooled(input_ids, attention_mask, activate=True)
        return self.restrict(reps, input_ids, attention_mask if own_mask is None else own_mask)

    @torch.no_grad()
    def pooled_logits(self, texts: list[str], batch_size: int = 16) -> torch.Tensor:
        """Passages' pooled, scaled logits before the term bias and the activation [texts, vocab]:
        what a calibrated zero point is set from (max or last pooling only)."""
        if self.info.pooling == "sum":
            raise InputError("zero points are calibrated on pooled logits: use max or last pooling, not sum")
        ids = self.token_ids(texts, query=False)
        parts = []
        for start in range(0, len(ids), batch_size):
            batch = self.collate(ids[start:start + batch_size])
            parts.append(self._pooled(batch["input_ids"], batch["attention_mask"], activate=False).cpu())
        return torch.cat(parts)

    def _pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, activate: bool) -> torch.Tensor:
        with head_detached(self.model) as head:
            hidden = self.model(**self.model_inputs(input_ids, attention_mask)).logits
        real = attention_mask
        if self.info.pooling == "last":  # the hidden state that predicts the word after the last real token
            last = (attention_mask * torch.arange(attention_mask.shape[1], device=attention_mask.device)).argmax(dim=1)
            hidden = hidden[torch.arange(hidden.shape[0], device=hidden.device), last].unsqueeze(1)
            real = attention_mask.new_ones(hidden.shape[:2])
        mask = real.bool().unsqueeze(-1)
        own = self._own_rows(input_ids, attention_mask) if activate else None  # calibration reads every term
        if own is not None:
            # Only the batch's own tokens can keep a weight (restrict zeroes the rest), so only their rows of
            # the head are projected: the same vectors for a fraction of the head's cost (a 262k vocabulary
            # against the few hundred distinct tokens of a batch), placed back into the vocabulary.
            pooled = torch.cat([self._rows(head, hidden, mask, own[i:i + self.vocab_chunk], activate)
                                for i in range(0, len(own), self.vocab_chunk)], dim=1)
            return pooled.new_zeros(pooled.shape[0], head.vocab_size).index_copy(1, own, pooled)
        return torch.cat([self._rows(head, hidden, mask, slice(start, min(start + self.vocab_chunk, head.vocab_size)),
                                     activate)
                          for start in range(0, head.vocab_size, self.vocab_chunk)], dim=1)

    def _own_rows(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor | None:
        """The vocabulary ids of the batch's real tokens, when only a text's own terms keep weight (and
        nothing is calibrated from the other terms); else None: the whole vocabulary."""
        s = self.settings
        if not s.input_terms_only or s.expansion_terms or s.full_vocab_head:
            return None
        return torch.unique(input_ids[attention_mask.bool()].clamp(max=self.vocab_size - 1))

    def _rows(self, head: VocabHead, hidden: torch.Tensor, mask: torch.Tensor, rows: slice | torch.Tensor,
              activate: bool) -> torch.Tensor:
        """Pooled term weights of vocabulary ``rows`` [batch, rows]."""
        if self.info.pooling in ("max", "last"):  # the max over one position is that position
            return self._max_chunk(head, hidden, mask, rows, activate)
        if torch.is_grad_enabled():  # sum keeps every token's activation for backward: recompute it
            return checkpoint(self._sum_chunk, head, hidden, mask, rows, use_reentrant=False)
        return self._sum_chunk(head, hidden, mask, rows)

    def restrict(self, reps: torch.Tensor, input_ids: torch.Tensor, own_mask: torch.Tensor) -> torch.Tensor:
        """Zero the terms the settings exclude: special tokens' dimensions, and (``input_terms_only``)
        every term that is not one of the text's own tokens (``own_mask``: 1 at the positions that are
        the text's) or its ``expansion_terms`` strongest others. A product with a 0/1 mask, so the kept
        weights keep their gradient."""
        s = self.settings
        keep = None
        if s.zero_special_terms:
            keep = torch.ones(reps.shape[1], dtype=torch.bool, device=reps.device)
            special = [i for i in self.tokenizer.all_special_ids if i < reps.shape[1]]
            keep[special] = False
            keep = keep.expand_as(reps)
        if s.input_terms_only:
            ids = input_ids.clamp(max=reps.shape[1] - 1)  # padded positions carry weight 0 below
            own = torch.zeros_like(reps).scatter_reduce(1, ids, own_mask.to(reps.dtype), reduce="amax") > 0
            if s.expansion_terms:
                others = reps.detach().masked_fill(own, float("-inf"))
                top = others.topk(min(s.expansion_terms, reps.shape[1]), dim=1).indices
                own = own.scatter(1, top, True)
            keep = own if keep is None else keep & own
        return reps if keep is None else reps * keep

    def _activation(self, logits: torch.Tensor, rows: slice | torch.Tensor) -> torch.Tensor:
        scaled = logits.float() * self.settings.logit_scale
        if self.term_bias is not None:
            scaled = scaled + self.term_bias[rows]
        return torch.log1p(torch.relu(scaled))

    def _max_chunk(self, head: VocabHead, hidden: torch.Tensor, mask: torch.Tensor, rows: slice | torch.Tensor,
                   activate: bool = True) -> torch.Tensor:
        # torch.max with a dim saves only indices for backward (amax would keep the whole chunk); the
        # fill is in place (nothing upstream needs the logits for backward), so one chunk exists at a time.
        # The bias is the same at every position, so it may follow the max as the activation does.
        logits = head.logits(hidden, rows).masked_fill_(~mask, float("-inf"))
        pooled = head.finish(logits.max(dim=1).values)
        return self._activation(pooled, rows) if activate else pooled.float() * self.settings.logit_scale

    def _sum_chunk(self, head: VocabHead, hidden: torch.Tensor, mask: torch.Tensor, rows: slice | torch.Tensor) -> torch.Tensor:
        return (self._activation(head.finish(head.logits(hidden, rows)), rows) * mask).sum(dim=1)

    def to_output(self, reps: torch.Tensor, query: bool) -> sp.csr_matrix:
        s = self.settings
        return sparsify(reps, (s.query_top_k if query else s.passage_top_k) or None, s.quantize or None)

    def stack(self, parts: list[sp.csr_matrix]) -> sp.csr_matrix:
        if not parts:
            return sp.csr_matrix((0, self.dim), dtype=np.float32)
        return sp.vstack(parts, format="csr")

    def top_terms(self, texts: list[str], *, query: bool = False, top: int = 20) -> list[tuple[str, int, list[tuple[str, float]]]]:
        """Each text with its number of non-zero terms and its ``top`` terms by weight (what ``llmret
        inspect`` shows); an empty text is an error."""
        empty = [i for i, text in enumerate(texts, start=1) if not text.strip()]
        if empty:
            raise InputError(f"text {empty[0]} is empty; inspect needs text to expand")
        out = []
        for text, row in zip(texts, self.encode(texts, query=query)):
            order = row.data.argsort()[::-1][:top]
            out.append((text, int(row.nnz), list(zip(self.terms(row.indices[order]), row.data[order].tolist()))))
        return out

    def terms(self, ids: np.ndarray) -> list[str]:
        """Vocabulary strings of term ids (for inspection); ids past the tokenizer's vocabulary show as [id]."""
        tokens = self.tokenizer.convert_ids_to_tokens([int(i) for i in ids])
        return [tok if tok is not None else f"[{i}]" for tok, i in zip(tokens, ids)]
