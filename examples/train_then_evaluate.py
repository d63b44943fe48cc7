"""Fine-tune a decoder into a dense retriever with LoRA and InfoNCE, then evaluate it: the mission in
two calls.

    python examples/train_then_evaluate.py                     # SmolLM2-135M on builtin:code, 30 steps
    python examples/train_then_evaluate.py MODEL DATA STEPS OUT

A CPU takes minutes for the default; on a GPU raise the steps and the batch size (Luo et al. 2024 train
with batch 128 and 7 hard negatives per query, the defaults here but for the smaller batch).
"""

import sys
from pathlib import Path

import llmret


def main(model: str = "smollm2-135m", data: str = "builtin:code", steps: str = "30",
         out: str = "runs/example") -> dict[str, float]:
    final = llmret.train(model, data, output_dir=str(Path(out) / "train"), max_steps=int(steps), batch_size=16,
                         group_size=4, encoder={"query_max_length": 32, "passage_max_length": 128})
    scores = llmret.evaluate("dense", data, split="dev", model=str(final), out=Path(out) / "eval")
    print(f"{model} trained {steps} steps into {final}: " +
          ", ".join(f"{m} {v:.4f}" for m, v in scores.evaluation.aggregate.items()))
    return scores.evaluation.aggregate


if __name__ == "__main__":
    main(*sys.argv[1:5])
