"""The description llmret saves next to a model it trained, adapted or exported: ``llmret.json``.

One schema, written here and read here, so that what a run saved is exactly what a later load
restores (the settings a model was trained with change its vectors if they are lost: a sparse
model's logit scale, a decoder's EOS, the lengths, the prefixes and the instruction).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from llmret.models.model_info import ModelInfo
from llmret.util.errors import DataError
from llmret.util.fileio import read_json, write_json

FILE = "llmret.json"
RETRIEVERS = ("dense", "sparse")


@dataclass
class SavedModel:
    """What a saved model is: its base, retriever (dense or sparse), encoding defaults and the encoder
    settings it was made with."""

    base_model: str
    retriever: str = "dense"
    lora: bool = False  # the folder is a peft adapter over ``base_model``
    model_info: ModelInfo = field(default_factory=ModelInfo)
    encoder: dict[str, Any] = field(default_factory=dict)  # resolved EncoderSettings values, model excluded
    adaptation: dict[str, Any] = field(default_factory=dict)  # e.g. {"mntp": {...settings}}
    task_instructions: dict[str, str] = field(default_factory=dict)  # training source -> its instruction

    @property
    def trained_with_instruction(self) -> bool:
        return bool(self.encoder.get("instruction")) or bool(self.task_instructions)

    def write(self, folder: str | Path) -> None:
        data = asdict(self)
        write_json(Path(folder) / FILE, data)

    @classmethod
    def read(cls, folder: str | Path) -> SavedModel | None:
        """The description in ``folder``, or None if it has none."""
        path = Path(folder) / FILE
        if not path.is_file():
            return None
        data = read_json(path)
        if not isinstance(data, dict) or "base_model" not in data:
            raise DataError(path, None, "not an llmret model description (no 'base_model')")
        if data.get("adaptation") == "mntp":  # the layout llmret 0.1 wrote for MNTP folders
            data["adaptation"] = {"mntp": data.pop("mntp", {})}
        if "paradigm" in data:  # what llmret 0.1 called the retriever
            data["retriever"] = data.pop("paradigm")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise DataError(path, None, f"unknown key(s) {', '.join(unknown)}")
        if data.get("retriever", "dense") not in RETRIEVERS:
            raise DataError(path, None, f"retriever must be one of {', '.join(RETRIEVERS)}, not '{data['retriever']}'")
        data["model_info"] = ModelInfo.from_dict(data.get("model_info") or {})
        return cls(**data)
