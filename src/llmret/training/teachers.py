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

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

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
    """An llmret dense or sparse encoder: the score is the similarity its index would compute.

    A training query comes with a dozen or more mined passages and a passage recurs under many queries
    (3,466 code queries' 72,697 pairs hold 3,818 distinct passages), while ``llmret annotate`` scores a
    few pairs at a time: the vectors of the last ``cache_size`` distinct texts of each side are kept, so
    each text is encoded once rather than once a pair.
    """

    def __init__(self, kind: str, model: str, max_length: int | None = None, device: str | None = None,
                 cache_size: int = 100_000) -> None:
        self.name, self.cache_size = f"{kind}:{model}", cache_size
        settings = EncoderSettings(model=model, passage_max_length=max_length)  # None: the model's own maximum
        self.encoder = load_encoder(kind, settings, device=device)
        self._cache: dict[bool, OrderedDict[str, Any]] = {True: OrderedDict(), False: OrderedDict()}

    def _vectors(self, texts: Sequence[str], query: bool) -> Any:
        """The rows of ``texts`` (encoding those not cached), as the encoder returns them."""
        import numpy as np
        import scipy.sparse as sp

        cache = self._cache[query]
        new = [t for t in dict.fromkeys(texts) if t not in cache]
        if new:
            encoded = (self.encoder.encode_queries if query else self.encoder.encode_passages)(new)
            for i, text in enumerate(new):
                cache[text] = encoded[i:i + 1] if sp.issparse(encoded) else encoded[i]
        rows = []
        for text in texts:
            cache.move_to_end(text)
            rows.append(cache[text])
        while len(cache) > self.cache_size:
            cache.popitem(last=False)
        return sp.vstack(rows, format="csr") if sp.issparse(rows[0]) else np.stack(rows)

    def score(self, queries: Sequence[str], passages: Sequence[str]) -> list[float]:
        import numpy as np
        import scipy.sparse as sp

        q, p = self._vectors(queries, True), self._vectors(passages, False)
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


class ScoresAsRead:
    """A teacher's scores of the (query, passage) pairs a run reads, computed when a batch first reads
    them (``teacher_scoring: as-read``).

    Why not score the training file first: a short run reads a sliver of it (the demo's 30 steps read
    480 pairs, of 240 queries; the built-in code task's 3,465 training queries have ~72,000), so scoring
    every pair would cost more than the training. Each batch's pairs are scored together, and a pair
    read again is not scored again while it is among the last ``cache_size`` pairs read (a bound, so a
    run of many epochs over a large file keeps its memory).
    """

    def __init__(self, teacher: Teacher, in_batch: bool = False, cache_size: int = 1_000_000) -> None:
        self.teacher, self.in_batch, self.cache_size = teacher, in_batch, cache_size
        self._scores: OrderedDict[tuple[str, str], float] = OrderedDict()

    def __call__(self, queries: Sequence[str], groups: Sequence[Sequence[Passage]]) -> list[list[float]]:
        """The teacher's score of each group's passages for its query, or (``in_batch``) of every
        passage of the batch for each query."""
        texts = [[p.full_text() for p in group] for group in groups]
        columns = [[t for row in texts for t in row]] * len(queries) if self.in_batch else texts
        pairs = [[(query, text) for text in row] for query, row in zip(queries, columns)]
        read = list(dict.fromkeys(pair for row in pairs for pair in row))
        new = [pair for pair in read if pair not in self._scores]
        if new:
            scores = self.teacher.score([q for q, _ in new], [p for _, p in new])
            self._scores.update(zip(new, map(float, scores)))
        rows = [[self._scores[pair] for pair in row] for row in pairs]
        for pair in read:
            self._scores.move_to_end(pair)
        while len(self._scores) > self.cache_size:
            self._scores.popitem(last=False)
        return rows


def teacher_spec(spec: str) -> tuple[str, str]:
    """``KIND:MODEL`` as (kind, model), refused with the kinds there are: checked where a teacher is
    named, so a study or demo stops before its first cell rather than when the teacher loads."""
    kind, _, model = spec.partition(":")
    if kind not in KINDS or not model:
        raise InputError(f"teacher '{spec}': expected KIND:MODEL with KIND one of {', '.join(KINDS)}")
    return kind, model


def load_teacher(spec: str, *, prompt: str = DEFAULT_PROMPT, max_length: int | None = None,
                 device: str | None = None) -> Teacher:
    """A teacher from ``KIND:MODEL`` (see the module's text). ``max_length``: tokens of a pair
    (cross-encoder, judge: default 512) or of a passage (retrievers: default the model's own)."""
    kind, model = teacher_spec(spec)
    if kind == "cross-encoder":
        return CrossEncoderTeacher(model, max_length or 512, device)
    if kind == "judge":
        return JudgeTeacher(model, prompt, max_length=max_length or 512, device=device)
    return RetrieverTeacher(kind, model, max_length, device)
