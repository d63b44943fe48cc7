"""Export a trained retriever as a plain transformers folder that needs neither peft nor llmret.

LoRA is merged into the weights. The folder gets ``llmret.json`` (pooling and the rest, so llmret
loads it back with the same behaviour), a model card, and sentence-transformers module files so that
``SentenceTransformer(folder)`` works where its pooling can express ours (mean and CLS always; last
token only when the tokenizer itself ends texts with EOS, which llmret's decoders do by hand).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from llmret.backbone import Backbone, load_backbone
from llmret.fileio import atomic_dir, atomic_write, write_json


def export_model(model: str, out: str | Path) -> Path:
    """Merge and save ``model`` (an adapter folder, a trained folder, or any spec) into ``out``."""
    backbone = load_backbone(model)
    out = Path(out)
    meta_file = backbone.folder / "llmret.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    settings = meta.get("encoder", backbone.saved_settings)
    with atomic_dir(out) as tmp:
        _write_export(tmp, backbone, meta, settings, model, out.name)
    return out


def _write_export(tmp: Path, backbone: Backbone, meta: dict, settings: dict, model: str, name: str) -> None:
    info = backbone.info
    backbone.model.save_pretrained(tmp)
    backbone.tokenizer.save_pretrained(tmp)
    write_json(tmp / "llmret.json", {"base_model": meta.get("base_model", model), "model_info": asdict(info),
                                     "encoder": settings})
    _sentence_transformers_files(tmp, info.pooling, info.normalize, info.max_length)
    card = (f"# Dense retriever exported by llmret\n\n- base model: `{meta.get('base_model', model)}`\n"
            f"- pooling: `{info.pooling}` (EOS appended: {info.append_eos}), L2-normalised: {info.normalize}\n"
            f"- query prefix: `{settings.get('query_prefix', '')!r}`, passage prefix: `{settings.get('passage_prefix', '')!r}`\n"
            f"- instruction: `{settings.get('instruction', '')!r}`\n"
            f"- trained with LoRA merged into the weights: {meta.get('lora', False)}\n\n"
            f"Load with `llmret evaluate --retriever dense --model {name}` or `DenseEncoder.load`.\n")
    with atomic_write(tmp / "README.md") as handle:
        handle.write(card)


def _sentence_transformers_files(folder: Path, pooling: str, normalize: bool, max_length: int) -> None:
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
        (folder / "2_Normalize").mkdir(exist_ok=True)
    write_json(folder / "modules.json", modules)
    write_json(folder / "sentence_bert_config.json", {"max_seq_length": max_length, "do_lower_case": False})
    dim = json.loads((folder / "config.json").read_text()).get("hidden_size")
    write_json(folder / "1_Pooling" / "config.json", {
        "word_embedding_dimension": dim, "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_lasttoken": pooling == "last"})
