"""Teachers: models that score (query, passage) pairs for distillation and for filtering mined negatives.

Three kinds, named by a spec ``KIND:MODEL``:

- ``cross-encoder:MODEL``: any sequence-classification checkpoint reading the pair jointly (the MS
  MARCO MiniLM cross-encoders the Lion models distilled from); one logit is the score, two labels
  give log P(relevant).
- ``judge:MODEL``: a causal LM as a pointwise judge: the log-probability of the answer token
  (" yes") after a relevance prompt; the prompt is a setting.
- ``dense:MODEL`` / ``sparse:MODEL``: an llmret retriever; the score is its query-passage similarity.

Scores of different teachers live on different scales; the distillation temperatures absorb that.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from llmret.data.training import Passage
from llmret.encoders.registry import load_encoder
from llmret.encoders.settings import EncoderSettings
from llmret.training.settings import DEFAULT_PROMPT
from llmret.util.errors import InputError

LAZY_IMPORTS = "a teacher's model loads when it scores: reading teacher settings loads no torch"

if TYPE_CHECKING:
    import torch

KINDS = ("cross-encoder", "judge", "dense", "sparse")


class Teacher(Protocol):
    name: str  # written into annotated files, so a score says where it came from

    def score(self, queries: Sequence[str], passages: Sequence[str]) -> list[float]:
        """One score per (query, passage) pair; higher is more relevant."""


def _device(device: str | None) -> torch.device:
    import torch  # here: a teacher module that loads torch on import would load it for every import of a spec

    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


class CrossEncoderTeacher:
    """A sequence-classification model over the pair ``[query, passage]``."""

    def __init__(self, model: str, max_length: int = 512, device: str | None = None) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from llmret.models.backbone import resolve

        source, _ = resolve(model)
        self.name, self.max_length, self.device = f"cross-encoder:{model}", max_length, _device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.model = AutoModelForSequenceClassification.from_pretrained(source).to(self.device).eval()
        if self.model.config.num_labels not in (1, 2):
            raise InputError(f"{model}: a cross-encoder has 1 or 2 labels, not {self.model.config.num_labels}")

    def score(self, queries: Sequence[str], passages: Sequence[str]) -> list[float]:
        import torch

        inputs = self.tokenizer(list(queries), list(passages), padding=True, truncation="only_second",
                                max_length=self.max_length, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            logits = self.model(**inputs).logits.float()
        scores = logits[:, 0] if logits.shape[1] == 1 else torch.log_softmax(logits, -1)[:, 1]
        return scores.tolist()


class JudgeTeacher:
    """A causal LM's log P(answer | prompt) for the next token, the prompt filled with query and passage."""

    def __init__(self, model: str, prompt: str = DEFAULT_PROMPT, answer: str = " yes", max_length: int = 512,
                 device: str | None = None) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from llmret.models.backbone import resolve

        if "{query}" not in prompt or "{passage}" not in prompt:
            raise InputError("a judge prompt must contain {query} and {passage}")
        source, _ = resolve(model)
        self.name, self.prompt, self.max_length, self.device = f"judge:{model}", prompt, max_length, _device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.model = AutoModelForCausalLM.from_pretrained(source).to(self.device).eval()
        ids = self.tokenizer.encode(answer, add_special_tokens=False)
        if not ids:
            raise InputError(f"{model}: the answer {answer!r} is no token")
        self.answer_id = ids[0]  # the first token of the answer is what the judge must produce next

    def score(self, queries: Sequence[str], passages: Sequence[str]) -> list[float]:
        import torch

        # The passage is cut (not the prompt's end, which holds the question): tokenize the passage
        # alone to its share of the length, then fill the prompt.
        budget = max(16, self.max_length - len(self.tokenizer.encode(self.prompt.format(query="", passage=""))))
        texts = []
        for query, passage in zip(queries, passages):
            query_ids = self.tokenizer.encode(query, add_special_tokens=False)[: budget // 4]
            passage_ids = self.tokenizer.encode(passage, add_special_tokens=False)[: budget - len(query_ids)]
            texts.append(self.prompt.format(query=self.tokenizer.decode(query_ids),
                                            passage=self.tokenizer.decode(passage_ids)))
        self.tokenizer.padding_side = "left"  # the next token's logits sit at the last position of every row
        inputs = self.tokenizer(texts, padding=True, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            logits = self.model(**inputs).logits[:, -1].float()
        return torch.log_softmax(logits, -1)[:, self.answer_id].tolist()


class RetrieverTeacher:
    """An llmret dense or sparse encoder: the score is the similarity its index would compute."""

    def __init__(self, kind: str, model: str, max_length: int | None = None, device: str | None = None) -> None:
        self.name = f"{kind}:{model}"
        settings = EncoderSettings(model=model, passage_max_length=max_length)  # None: the model's own maximum
        self.encoder = load_encoder(kind, settings, device=device)

    def score(self, queries: Sequence[str], passages: Sequence[str]) -> list[float]:
        import numpy as np
        import scipy.sparse as sp

        # A query is paired with all its passages: encode each distinct text once.
        unique_q, unique_p = list(dict.fromkeys(queries)), list(dict.fromkeys(passages))
        q_rows, p_rows = {t: i for i, t in enumerate(unique_q)}, {t: i for i, t in enumerate(unique_p)}
        q = self.encoder.encode_queries(unique_q)[[q_rows[t] for t in queries]]
        p = self.encoder.encode_passages(unique_p)[[p_rows[t] for t in passages]]
        if sp.issparse(q):
            return np.asarray(q.multiply(p).sum(axis=1)).ravel().tolist()
        return (q * p).sum(axis=1).tolist()


def score_pairs(teacher: Teacher, pairs: Sequence[tuple[str, Passage]], batch_size: int,
                progress: Callable[[int], object] | None = None) -> None:
    """Set ``passage.score`` for each (query, passage) pair, scored ``batch_size`` pairs at a time."""
    for begin in range(0, len(pairs), batch_size):
        chunk = pairs[begin:begin + batch_size]
        for (_, passage), score in zip(chunk, teacher.score([q for q, _ in chunk], [p.full_text() for _, p in chunk])):
            passage.score = float(score)
        if progress is not None:
            progress(len(chunk))


def load_teacher(spec: str, *, prompt: str = DEFAULT_PROMPT, max_length: int | None = None,
                 device: str | None = None) -> Teacher:
    """A teacher from ``KIND:MODEL`` (see the module's text). ``max_length``: tokens of a pair
    (cross-encoder, judge: default 512) or of a passage (retrievers: default the model's own)."""
    kind, _, model = spec.partition(":")
    if kind not in KINDS or not model:
        raise InputError(f"teacher '{spec}': expected KIND:MODEL with KIND one of {', '.join(KINDS)}")
    if kind == "cross-encoder":
        return CrossEncoderTeacher(model, max_length or 512, device)
    if kind == "judge":
        return JudgeTeacher(model, prompt, max_length=max_length or 512, device=device)
    return RetrieverTeacher(kind, model, max_length, device)
