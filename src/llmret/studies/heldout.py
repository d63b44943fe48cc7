"""The contrastive loss of a trained model on held-out data: the Lion models' scaling laws fit it.

Quality measures saturate and jump on small test sets; the InfoNCE loss on queries the model never
saw falls smoothly with size and compute, which is why scaling studies fit it as well. The held-out
examples are a dataset split's judged queries with BM25-mined hard negatives, batched as training
batches them (``batch_size`` queries, ``group_size`` passages each, in-batch negatives, the training
temperature), so the loss is the training loss measured on unseen queries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from llmret.data.dataset import load_dataset
from llmret.data.sampling import sample_group
from llmret.data.spec import resolve_folder
from llmret.data.training import resolve_passages
from llmret.encoders.registry import load_encoder
from llmret.encoders.settings import EncoderSettings
from llmret.losses.infonce import InfoNCELoss
from llmret.training.mining import mine_bm25_negatives
from llmret.training.settings import TrainSettings, resolve_temperatures
from llmret.training.steps import forward_sorted
from llmret.util.errors import InputError


def heldout_loss(model: str | Path, data: str, split: str, settings: TrainSettings,
                 max_queries: int | None = None) -> dict[str, Any]:
    """Mean InfoNCE over the full batches of ``data``'s ``split`` (its first ``max_queries`` judged
    queries), batched and scored as ``settings`` trained (batch and group size, temperature, similarity,
    seed: a run's own, :meth:`TrainSettings.saved`), under the trained ``model``'s own encoder settings."""
    batch_size, group_size, seed = settings.batch_size, settings.group_size, settings.seed
    temperature = resolve_temperatures(settings).temperature
    folder = resolve_folder(data, split)
    dataset = load_dataset(folder, split)
    examples = resolve_passages(mine_bm25_negatives(dataset), dataset.corpus)[:max_queries]
    batches = len(examples) // batch_size
    if batches == 0:
        raise InputError(f"{data} ({split}) has {len(examples)} judged queries, fewer than one batch of {batch_size}")
    encoder = load_encoder(settings.retriever, EncoderSettings(model=str(model)))
    encoder.model.eval()
    loss = InfoNCELoss(temperature, settings.similarity)
    total = 0.0
    with torch.inference_mode():
        for b in range(batches):
            chosen = range(b * batch_size, (b + 1) * batch_size)
            groups = [sample_group(examples, i, 0, seed, group_size) for i in chosen]
            queries = forward_sorted(encoder, encoder.token_ids([examples[i].query for i in chosen], query=True),
                                     batch_size)
            passages = forward_sorted(encoder, encoder.token_ids([p.full_text() for g in groups for p in g],
                                                                 query=False), batch_size * group_size)
            total += float(loss(queries, passages))
    return {"loss": total / batches, "data": data, "split": split, "queries": batches * batch_size,
            "batch_size": batch_size, "group_size": group_size, "temperature": temperature}
