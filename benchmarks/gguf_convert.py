"""Converting a zoo GGUF checkpoint on first use: transformers' own loads (the tokenizer, the config and
the weights each parse the file's metadata anew, element by element) against llmret's conversion, which
reads the metadata arrays in bulk and shares one parse between them (``llmret.models.gguf``). Both are
timed once each, after the file is read into the page cache, and the dequantised weights and the
tokenizer's ids are checked equal. sentence-transformers cannot read a GGUF file, so it has no figure.

    python benchmarks/gguf_convert.py [--models gemma3-270m smollm2-135m]
    python benchmarks/gguf_convert.py --smoke      # smollm2-135m only (its vocabulary is 49k tokens)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from llmret.models import zoo
from llmret.models.gguf import one_parse_per_file
from llmret.util.tables import format_table

TEXTS = ["def add(a, b): return a + b", "Return the sum of two numbers, or raise ValueError."]


def load(folder: Path, gguf_file: str) -> tuple[float, dict[str, torch.Tensor], list[list[int]]]:
    """Seconds to load the tokenizer and the dequantised model, the weights, and the tokenizer's ids."""
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    return time.perf_counter() - start, model.state_dict(), tokenizer(TEXTS)["input_ids"]


def bench(name: str) -> dict[str, object]:
    files = zoo.get(name).locate()
    path = files.folder / files.gguf_file
    with path.open("rb") as handle:  # into the page cache, so neither path pays the disk read
        while handle.read(1 << 24):
            pass
    shared_s, shared, shared_ids = None, None, None
    with one_parse_per_file():
        shared_s, shared, shared_ids = load(files.folder, files.gguf_file)
    plain_s, plain, plain_ids = load(files.folder, files.gguf_file)
    equal = plain.keys() == shared.keys() and all(torch.equal(plain[k], shared[k]) for k in plain)
    return {"model": name, "MB": round(path.stat().st_size / 2**20), "transformers s": plain_s,
            "llmret s": shared_s, "speed-up": plain_s / shared_s, "weights equal": equal,
            "ids equal": plain_ids == shared_ids}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["gemma3-270m", "smollm2-135m"])
    parser.add_argument("--smoke", action="store_true", help="smollm2-135m only")
    args = parser.parse_args()
    rows = [bench(name) for name in (["smollm2-135m"] if args.smoke else args.models)]
    print(f"{torch.get_num_threads()} threads; each path timed once")
    print(format_table(rows, ["model", "MB", "transformers s", "llmret s", "speed-up", "weights equal",
                              "ids equal"]))
    for row in rows:
        if not (row["weights equal"] and row["ids equal"]):
            raise SystemExit(f"{row['model']}: llmret's conversion differs from transformers' own load")
        print(f"{row['model']}: llmret's conversion speed-up {row['speed-up']:.2f}x")


if __name__ == "__main__":
    main()
