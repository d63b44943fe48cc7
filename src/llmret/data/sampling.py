"""Which passages each query trains with, and in what order, reproducible from (seed, epoch) alone.

Every draw is seeded by the seed, the epoch and the example's index, never by a shared generator's
history, so a run resumed at step N draws exactly what an uninterrupted run draws at step N.
"""

from __future__ import annotations

import random

from llmret.data.training import Passage, TrainExample


def epoch_order(n: int, epoch: int, seed: int) -> list[int]:
    """A permutation of the example indexes for this epoch."""
    order = list(range(n))
    random.Random(f"order:{seed}:{epoch}").shuffle(order)
    return order


def sample_group(examples: list[TrainExample], index: int, epoch: int, seed: int, group_size: int) -> list[Passage]:
    """One positive then ``group_size - 1`` hard negatives for example ``index``, fresh each epoch.

    With too few hard negatives the rest is drawn with repetition; with none, other queries'
    positives serve as (random) negatives, as in-batch negatives would.
    """
    rng = random.Random(f"group:{seed}:{epoch}:{index}")
    example = examples[index]
    group = [rng.choice(example.positives)]
    wanted = group_size - 1
    pool = example.negatives
    if len(pool) >= wanted:
        group += rng.sample(pool, wanted)
    elif pool:
        group += pool + [rng.choice(pool) for _ in range(wanted - len(pool))]
    else:
        positives = {p.docid for p in example.positives}
        while len(group) < group_size:
            other = examples[rng.randrange(len(examples))].positives[0]
            if other.docid not in positives or len(examples) == 1:
                group.append(other)
    return group
