"""sentence-transformers folders, read whole or refused, and written for exports.

A sentence-transformers folder is a pipeline of modules (``modules.json``): a Transformer, a Pooling,
optional Dense projections and a Normalize, plus ``config_sentence_transformers.json`` with the
similarity function and the prompts. Reading only part of it gives vectors that look fine and are
wrong (sentence-t5 and GTR without their Dense projection, a cosine model searched by raw inner
product), so every module is either reproduced here or named in an error.

Written by hand rather than by importing sentence-transformers: it is an optional dependency, and
the few modules a retriever folder uses are a handful of lines each.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from llmret.util.errors import DataError, InputError
from llmret.util.fileio import read_json, write_json

# sentence-transformers' pooling mode names -> llmret's
POOLING_MODES = {"cls": "cls", "mean": "mean", "max": "max", "mean_sqrt_len_tokens": "mean_sqrt_len",
                 "weightedmean": "weightedmean", "lasttoken": "last"}
_LEGACY_POOLING_KEYS = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
                        "pooling_mode_mean_tokens": "mean", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                        "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
PASSAGE_PROMPT_NAMES = ("document", "passage", "corpus")  # what encode_document tries, in order


@dataclass
class SentenceTransformersFolder:
    """What a sentence-transformers folder says about encoding, in llmret's terms."""

    transformer_path: str = ""  # the Transformer module's folder, relative ("" for the root)
    info: dict[str, Any] = field(default_factory=dict)  # ModelInfo fields: pooling, normalize, max_length, lowercase
    prompts: dict[str, str] = field(default_factory=dict)  # EncoderSettings fields: query_prefix, passage_prefix
    head: torch.nn.Sequential | None = None  # Dense projections after pooling


class Dense(torch.nn.Module):
    """sentence-transformers' Dense module: activation(linear(x)), optionally plus a residual."""

    def __init__(self, linear: torch.nn.Linear, activation: torch.nn.Module, residual: torch.nn.Module | None) -> None:
        super().__init__()
        self.linear, self.activation, self.residual = linear, activation, residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.activation(self.linear(x))
        if self.residual is not None:
            out = out + self.residual(x)
        return out


def _module_name(entry: dict[str, Any]) -> str:
    return str(entry.get("type", "")).rsplit(".", 1)[-1]


def _pooling(folder: Path, config: dict[str, Any]) -> str:
    where = folder / "config.json"
    if config.get("include_prompt") is False:
        raise DataError(where, None, "Pooling with include_prompt=false (prompt tokens left out of pooling) "
                                     "is not supported by llmret")
    modes = config.get("pooling_mode")
    if modes is None:
        modes = [mode for key, mode in _LEGACY_POOLING_KEYS.items() if config.get(key)] or ["mean"]
    modes = [modes] if isinstance(modes, str) else list(modes)
    unknown = [m for m in modes if m not in POOLING_MODES]
    if unknown:
        raise DataError(where, None, f"pooling mode(s) {', '.join(unknown)} are not supported by llmret")
    return "+".join(POOLING_MODES[m] for m in modes)


def _load_weights(folder: Path) -> dict[str, torch.Tensor]:
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(folder / "model.safetensors")
    if (folder / "pytorch_model.bin").is_file():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise DataError(folder, None, "Dense module without model.safetensors or pytorch_model.bin")


def _activation(name: str | None, where: Path) -> torch.nn.Module:
    if not name:
        return torch.nn.Identity()
    # Only torch's own modules: a config file must not make llmret import arbitrary code.
    module_name, _, cls_name = name.rpartition(".")
    if not module_name.startswith("torch."):
        raise DataError(where, None, f"Dense activation '{name}' is not a torch module; llmret loads only those")
    cls = getattr(importlib.import_module(module_name), cls_name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise DataError(where, None, f"Dense activation '{name}' is not a torch.nn.Module")
    return cls()


def _dense(folder: Path) -> Dense:
    config = read_json(folder / "config.json")
    where = folder / "config.json"
    if config.get("module_input_name", "sentence_embedding") != "sentence_embedding" or \
            config.get("module_output_name") not in (None, "sentence_embedding"):
        raise DataError(where, None, "Dense modules reading or writing other features than the sentence embedding "
                                     "are not supported by llmret")
    missing = [k for k in ("in_features", "out_features") if k not in config]
    if missing:
        raise DataError(where, None, f"Dense config lacks {', '.join(missing)}")
    linear = torch.nn.Linear(int(config["in_features"]), int(config["out_features"]), bias=bool(config.get("bias", True)))
    weights = _load_weights(folder)
    linear.load_state_dict({k.split(".", 1)[1]: v for k, v in weights.items() if k.startswith("linear.")})
    residual = None
    if config.get("use_residual"):
        residual = torch.nn.Identity()
        if linear.in_features != linear.out_features:
            residual = torch.nn.Linear(linear.in_features, linear.out_features, bias=False)
            residual.load_state_dict({"weight": weights["residual.weight"]})
    return Dense(linear, _activation(config.get("activation_function", "torch.nn.modules.activation.Tanh"), where),
                 residual)


def read(folder: Path) -> SentenceTransformersFolder | None:
    """The pipeline of ``folder`` if it is a sentence-transformers folder; a module llmret cannot
    reproduce is a :class:`DataError` naming it."""
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return None
    modules = read_json(modules_file)
    out = SentenceTransformersFolder()
    heads: list[torch.nn.Module] = []
    normalize = False
    for position, entry in enumerate(modules):
        name, path = _module_name(entry), folder / str(entry.get("path", ""))
        if name == "Transformer" and position == 0:
            out.transformer_path = str(entry.get("path", ""))
            for config_name in ("sentence_bert_config.json", "sentence_xlnet_config.json"):
                if (path / config_name).is_file():
                    config = read_json(path / config_name)
                    if config.get("max_seq_length"):
                        out.info["max_length"] = int(config["max_seq_length"])
                    if config.get("do_lower_case"):
                        out.info["lowercase"] = True
            tokenizer_config = path / "tokenizer_config.json"
            if "max_length" not in out.info and tokenizer_config.is_file():  # sentence-transformers 6 keeps it there
                limit = read_json(tokenizer_config).get("model_max_length")
                if isinstance(limit, int) and limit < 1_000_000:
                    out.info["max_length"] = limit
        elif name == "Pooling" and "pooling" not in out.info:
            out.info["pooling"] = _pooling(path, read_json(path / "config.json"))
        elif name == "Dense" and "pooling" in out.info and not normalize:
            heads.append(_dense(path))
        elif name == "Normalize" and position == len(modules) - 1:
            normalize = True
        elif name == "Dropout":
            continue  # the identity at inference
        elif name == "Transformer":
            raise DataError(modules_file, None, f"module {position} is a second Transformer; llmret reads one, first")
        else:
            raise DataError(modules_file, None, f"module {position} ('{entry.get('type')}') cannot be reproduced by llmret "
                                                "(it reads Transformer, Pooling, Dense, Dropout and a final Normalize)")
    out.head = torch.nn.Sequential(*heads) if heads else None
    st_config_file = folder / "config_sentence_transformers.json"
    st_config = read_json(st_config_file) if st_config_file.is_file() else {}
    similarity = st_config.get("similarity_fn_name") or "cosine"  # sentence-transformers' default
    if similarity not in ("cosine", "dot"):
        raise DataError(st_config_file, None, f"similarity '{similarity}' cannot be searched by inner product; "
                                              "llmret supports cosine and dot")
    out.info["normalize"] = normalize or similarity == "cosine"
    prompts = st_config.get("prompts") or {}
    default = prompts.get(st_config.get("default_prompt_name") or "", None)
    query = prompts.get("query", default)
    passage = next((prompts[n] for n in PASSAGE_PROMPT_NAMES if n in prompts), default)
    out.prompts = {k: v for k, v in (("query_prefix", query), ("passage_prefix", passage)) if v}
    return out


def write(folder: Path, *, pooling: str, normalize: bool, max_length: int, dim: int, lowercase: bool = False,
          head: torch.nn.Sequential | None = None, prompts: dict[str, str] | None = None) -> None:
    """Write the module files that make ``SentenceTransformer(folder)`` encode as llmret does.

    ``prompts`` maps prompt names (``query``, ``document``) to the text put before the input.
    """
    inverse = {v: k for k, v in POOLING_MODES.items()}
    missing = [m for m in pooling.split("+") if m not in inverse]
    if missing:
        raise InputError(f"pooling {', '.join(missing)} has no sentence-transformers module: "
                         "this model cannot be written as a sentence-transformers folder")
    modes = [inverse[m] for m in pooling.split("+")]
    modules: list[dict[str, Any]] = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    # sentence-transformers 6 reads pooling_mode and drops the older pooling_mode_* flags when it is there;
    # text-embeddings-inference reads only the flags (its PoolConfig), so both are written
    legacy = {key: mode in modes for key, mode in _LEGACY_POOLING_KEYS.items()}
    write_json(folder / "1_Pooling" / "config.json", {"embedding_dimension": dim,
                                                      "pooling_mode": modes[0] if len(modes) == 1 else modes,
                                                      "include_prompt": True, **legacy})
    for layer in head or []:
        index = len(modules)
        path = f"{index}_Dense"
        if not isinstance(layer, Dense):
            raise TypeError(f"cannot write {type(layer).__name__} as a sentence-transformers module")
        linear = layer.linear
        residual = layer.residual
        write_json(folder / path / "config.json", {
            "in_features": linear.in_features, "out_features": linear.out_features, "bias": linear.bias is not None,
            "activation_function": f"{type(layer.activation).__module__}.{type(layer.activation).__name__}",
            "use_residual": residual is not None})
        from safetensors.torch import save_file

        tensors = {f"linear.{k}": v.detach().cpu().contiguous() for k, v in linear.state_dict().items()}
        if isinstance(residual, torch.nn.Linear):
            tensors["residual.weight"] = residual.weight.detach().cpu().contiguous()
        save_file(tensors, str(folder / path / "model.safetensors"))
        modules.append({"idx": index, "name": str(index), "path": path, "type": "sentence_transformers.models.Dense"})
    if normalize:
        index = len(modules)
        modules.append({"idx": index, "name": str(index), "path": f"{index}_Normalize",
                        "type": "sentence_transformers.models.Normalize"})
        (folder / f"{index}_Normalize").mkdir(parents=True, exist_ok=True)
    write_json(folder / "modules.json", modules)
    write_json(folder / "sentence_bert_config.json", {"max_seq_length": max_length, "do_lower_case": lowercase})
    write_json(folder / "config_sentence_transformers.json", {
        "similarity_fn_name": "cosine" if normalize else "dot", "prompts": prompts or {}, "default_prompt_name": None})


def write_sparse(folder: Path, *, pooling: str, max_length: int, vocab_size: int, lowercase: bool = False,
                 prompts: dict[str, str] | None = None, causal_lm: bool = False) -> None:
    """Write the module files that make sentence-transformers' ``SparseEncoder(folder)`` encode as llmret
    does a SPLADE-style model: the LM head's logits, log(1 + ReLU), max- or sum-pooled (the caller checks
    that nothing else of llmret's applies). A masked LM gets sentence-transformers 5's module names, which 6
    still reads. A decoder (``causal_lm``) needs sentence-transformers 6's Transformer in its text-generation
    task, told to keep every position's logits (it keeps only the last by default) and to hand them to the
    pooling under the name it reads; its attention (causal or not) is the exported config's."""
    if pooling not in ("max", "sum"):
        raise InputError(f"a SparseEncoder pools by max or sum, not {pooling}")
    transformer = ("sentence_transformers.base.modules.transformer.Transformer" if causal_lm
                   else "sentence_transformers.sparse_encoder.models.MLMTransformer")
    write_json(folder / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": transformer},
        {"idx": 1, "name": "1", "path": "1_SpladePooling",
         "type": "sentence_transformers.sparse_encoder.models.SpladePooling"}])
    write_json(folder / "1_SpladePooling" / "config.json", {"pooling_strategy": pooling, "activation_function": "relu",
                                                            "word_embedding_dimension": vocab_size})
    causal = {"transformer_task": "text-generation", "module_output_name": "token_embeddings",
              "modality_config": {"text": {"method": "forward", "method_output_name": "logits"}},
              "processing_kwargs": {"text": {"logits_to_keep": 0}}} if causal_lm else {}
    write_json(folder / "sentence_bert_config.json", {"max_seq_length": max_length, "do_lower_case": lowercase,
                                                      **causal})
    write_json(folder / "config_sentence_transformers.json", {
        "model_type": "SparseEncoder", "similarity_fn_name": "dot", "prompts": prompts or {}, "default_prompt_name": None})
