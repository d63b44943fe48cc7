"""A study cell's trained LoRA model handed from its training to its evaluations
(``llmret.models.backbone.hand_over``), against loading the saved adapter folder again, as every
evaluation did before: the base model and its tokenizer loaded, the adapter merged into it.

One LoRA step is trained (``llmret train``, the demo's LoRA settings) into a temporary folder. Then, best
of ``--repeats``, alternately: the dense encoder built from the saved folder as an evaluation builds it,
and the same encoder built from the hand-over of the adapter merged into a loaded copy of the base (what
a training holds when it ends), timed from the merge. Both encoders encode the same texts, and their
vectors must be equal (cosine and largest difference). sentence-transformers has no figure: its trainer
hands its model on in memory, as the hand-over does, and has no step of this kind to compare.

    python benchmarks/handover.py [--models gemma3-270m smollm2-135m] [--repeats 3]
    python benchmarks/handover.py --smoke      # a tiny random model, seconds: checks that it runs
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from llmret.cli import main as cli
from llmret.data.training import Passage, TrainExample, write_training
from llmret.encoders.registry import load_encoder
from llmret.encoders.settings import EncoderSettings
from llmret.models.backbone import hand_over, handing_over, load_backbone, shared_loads
from llmret.util.tables import format_table

TEXTS = ["def add(a, b): return a + b", "Return the sum of two numbers, or raise ValueError.",
         "Open the file and read its lines.", "class Stack: a last-in, first-out list"]


def training_file(path: Path, texts: list[str]) -> Path:
    """Queries (each passage's first words) with their passage and the next one as a negative."""
    write_training(path, [TrainExample(f"q{i}", " ".join(t.split()[:3]), [Passage(f"d{i}", t)],
                                       [Passage(f"d{(i + 1) % len(texts)}", texts[(i + 1) % len(texts)])])
                          for i, t in enumerate(texts)])
    return path


def handed_encoder(model: str, final: Path) -> tuple[float, object]:
    """Seconds from the merge to a built encoder, and the encoder, with the base loaded beforehand."""
    from peft import PeftModel

    base = load_backbone(model, dtype=torch.float32)
    trained = PeftModel.from_pretrained(base.model, final)  # what a training holds when it ends
    loads: dict = {}
    start = time.perf_counter()
    with handing_over(loads):
        hand_over(final, trained.merge_and_unload, base, dtype=torch.float32, lm_head=False)
    with shared_loads(loads):
        encoder = load_encoder("dense", EncoderSettings(model=str(final)))
    return time.perf_counter() - start, encoder


def bench(model: str, repeats: int, texts: list[str]) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="llmret-handover-") as tmp:
        data = training_file(Path(tmp) / "train.jsonl", texts)
        out = Path(tmp) / "run"
        assert cli(["train", "--model", model, "--train-data", str(data), "--output-dir", str(out), "--max-steps", "1",
                    "--batch-size", "2", "--group-size", "2", "--lora-r", "16", "--lora-alpha", "32",
                    "--lora-dropout", "0", "--learning-rate", "1e-3", "--query-max-length", "32",
                    "--passage-max-length", "32"]) == 0
        final = out / "final"
        loaded, handed = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            fresh = load_encoder("dense", EncoderSettings(model=str(final)))
            loaded.append(time.perf_counter() - start)
            seconds, encoder = handed_encoder(model, final)
            handed.append(seconds)
        a, b = fresh.encode_passages(texts), encoder.encode_passages(texts)
        cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        return {"model": model, "load final/ (s)": round(min(loaded), 2), "hand-over (s)": round(min(handed), 2),
                "speed-up": f"{min(loaded) / max(min(handed), 1e-9):.1f}x", "min cosine": f"{cosine.min():.6f}",
                "max |diff|": f"{np.abs(a - b).max():.2e}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["gemma3-270m", "smollm2-135m"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        from smoke import texts, tiny_model

        models, repeats, sample = [tiny_model("llama")], 1, texts(8)
    else:
        models, repeats, sample = args.models, args.repeats, TEXTS
    rows = [bench(m, repeats, sample) for m in models]
    print(f"\nA trained LoRA model's evaluation encoder: loaded from final/ against handed over in memory "
          f"(best of {repeats}; {torch.get_num_threads()} threads)")
    print(format_table(rows, list(rows[0])))
    for row in rows:
        if float(str(row["min cosine"])) < 0.9999:
            raise SystemExit(f"{row['model']}: the handed-over model's vectors differ from the loaded one's")
        print(f"hand-over speed-up ({row['model']}): {row['speed-up']}")


if __name__ == "__main__":
    main()
