"""Load any backbone (zoo name, local folder, GGUF file, or hub id) with what llmret must know about it.

Besides the model and tokenizer, a :class:`Backbone` carries :class:`ModelInfo`: encoder or decoder,
default pooling, EOS/BOS handling, normalisation and maximum length. These defaults come, in order of
precedence, from an ``llmret.json`` in the folder (written by llmret's own exports), a
sentence-transformers configuration, and finally the architecture (decoders pool the last token with
an EOS appended; encoders pool CLS, except T5 which pools the mean).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer, PretrainedConfig, PreTrainedModel
from transformers import PreTrainedTokenizerBase

from llmret import zoo
from llmret.cache import cache_dir
from llmret.fileio import atomic_dir

log = logging.getLogger(__name__)

POOLINGS = ("cls", "mean", "last")


@dataclass(frozen=True)
class ModelInfo:
    """How a backbone turns text into a vector by default; every field can be overridden per run."""

    kind: str = "encoder"  # "encoder" (BERT, T5 encoder) or "decoder" (Llama, Qwen, Gemma, Phi ...)
    pooling: str = "cls"
    normalize: bool = True
    append_eos: bool = False  # decoders: the last token must be EOS for last-token pooling to see it all
    add_bos: bool | None = None  # None: the tokenizer's own habit; False strips BOS (sparse models want that)
    max_length: int = 512
    bidirectional: bool = False  # decoders: let every token see the whole text (LLM2Vec / Lion style)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Backbone:
    """A loaded model and tokenizer with their :class:`ModelInfo` and where they came from."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    info: ModelInfo
    source: str
    folder: Path
    saved_settings: dict[str, Any] = field(default_factory=dict)  # encoder settings a trained model was made with


# ---- resolving a spec to a transformers folder -------------------------------------------------
def _gguf_cache_key(path: Path) -> str:
    stat = path.stat()
    return "gguf-" + hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]


def convert_gguf(folder: Path, gguf_file: str, out: Path) -> Path:
    """Dequantise a GGUF checkpoint once into a plain transformers folder (seconds to load, not a minute).

    transformers marks GGUF-loaded models as quantised and refuses to save them, so the weights are
    moved into a model built from the same config without its quantisation entry.
    """
    if (out / "config.json").is_file():
        return out
    log.info("converting %s to a transformers folder (once; later loads use %s)", gguf_file, out)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_file, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict())
    with atomic_dir(out) as tmp:  # a folder appears whole or not at all
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out


def resolve(spec: str, install: bool = True) -> tuple[Path | str, ModelInfo | None]:
    """Turn a model spec into a loadable folder (or hub id) and, for zoo models, their kind.

    Specs: a zoo name (``smollm2-135m``), a folder with ``config.json``, a ``.gguf`` file, or a
    hub id (only useful online).
    """
    if spec in zoo.ZOO:
        entry = zoo.get(spec)
        files = entry.locate(install=install)
        folder = files.folder
        if files.gguf_file:
            folder = convert_gguf(files.folder, files.gguf_file, cache_dir("models") / spec)
        return folder, ModelInfo(kind=entry.kind)
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {path}")
        return convert_gguf(path.parent, path.name, cache_dir("models") / _gguf_cache_key(path)), None
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is a folder but has no config.json (not a transformers model folder)")
        return path, None
    if path.exists() or spec.startswith((".", "/", "~")):
        raise FileNotFoundError(f"model not found: {spec}")
    return spec, None  # a hub id


# ---- what kind of model ------------------------------------------------------------------------
def _is_decoder(config: PretrainedConfig) -> bool:
    if getattr(config, "is_encoder_decoder", False):
        return False
    archs = getattr(config, "architectures", None) or []
    if any(a.endswith("ForCausalLM") for a in archs):
        return True
    return config.model_type not in {"bert", "roberta", "xlm-roberta", "distilbert", "electra", "deberta",
                                     "deberta-v2", "modernbert", "mpnet", "t5", "mt5", "nomic_bert"}


def _sentence_transformers_info(folder: Path) -> dict[str, Any]:
    """Pooling, normalisation and length from a sentence-transformers folder, if it is one."""
    out: dict[str, Any] = {}
    modules_file = folder / "modules.json"
    if not modules_file.is_file():
        return out
    modules = json.loads(modules_file.read_text())
    out["normalize"] = any(m.get("type", "").endswith("Normalize") for m in modules)
    for module in modules:
        if module.get("type", "").endswith("Pooling"):
            pooling = json.loads((folder / module["path"] / "config.json").read_text())
            for key, name in (("pooling_mode_cls_token", "cls"), ("pooling_mode_mean_tokens", "mean"),
                              ("pooling_mode_lasttoken", "last")):
                if pooling.get(key):
                    out["pooling"] = name
    bert_config = folder / "sentence_bert_config.json"
    if bert_config.is_file():
        out["max_length"] = json.loads(bert_config.read_text()).get("max_seq_length", 512)
    return out


def infer_info(config: PretrainedConfig, folder: Path | None, hint: ModelInfo | None = None) -> ModelInfo:
    """Default :class:`ModelInfo` for a model: llmret.json, then sentence-transformers, then architecture."""
    decoder = hint.kind == "decoder" if hint else _is_decoder(config)
    max_pos = getattr(config, "max_position_embeddings", 512) or 512
    if decoder:
        info = ModelInfo(kind="decoder", pooling="last", append_eos=True, max_length=min(max_pos, 8192))
    else:
        t5 = getattr(config, "is_encoder_decoder", False)
        info = ModelInfo(kind="encoder", pooling="mean" if t5 else "cls", max_length=min(max_pos, 512))
    if folder is not None:
        info = replace(info, **_sentence_transformers_info(folder))
        own = folder / "llmret.json"
        if own.is_file():
            info = replace(info, **asdict(ModelInfo.from_dict(json.loads(own.read_text()).get("model_info", {}))))
    return info


def load_tokenizer(source: Path | str, info: ModelInfo) -> PreTrainedTokenizerBase:
    """The backbone's tokenizer, given a pad token if it has none (decoders often do not)."""
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if info.kind == "decoder" and tokenizer.eos_token is None:
        raise ValueError(f"{source}: a decoder needs an EOS token for last-token pooling, and its tokenizer has none")
    return tokenizer


def load_backbone(spec: str, *, dtype: torch.dtype | None = None, lm_head: bool = False,
                  install: bool = True) -> Backbone:
    """Load model and tokenizer for ``spec``.

    ``lm_head`` keeps the vocabulary head (the MLM head of an encoder, the LM head of a decoder), through
    which sparse encoders read term weights; otherwise the bare transformer is loaded, which is all
    dense pooling needs.
    """
    path = Path(spec).expanduser()
    if path.is_dir() and (path / "adapter_config.json").is_file():
        return _load_adapter(path, dtype=dtype, lm_head=lm_head, install=install)
    source, hint = resolve(spec, install=install)
    folder = Path(source) if isinstance(source, Path) else None
    try:
        config = AutoConfig.from_pretrained(source)
    except OSError as exc:
        raise FileNotFoundError(f"'{spec}' is not a zoo model ({', '.join(zoo.ZOO)}), a model folder or a .gguf "
                                f"file, and as a hub id it could not be loaded: {str(exc).splitlines()[0]}") from None
    info = infer_info(config, folder, hint)
    tokenizer = load_tokenizer(source, info)
    kwargs: dict[str, Any] = {"dtype": dtype or torch.float32}
    if lm_head and getattr(config, "is_encoder_decoder", False):
        raise ValueError(f"{spec}: encoder-decoder models have no vocabulary head over the input; "
                         "sparse encoders need a masked-LM or causal-LM backbone")
    if lm_head:
        auto = AutoModelForCausalLM if info.kind == "decoder" else AutoModelForMaskedLM
        model, loading = auto.from_pretrained(source, output_loading_info=True, **kwargs)
        if loading["missing_keys"]:  # a randomly initialised head would give meaningless term weights
            raise ValueError(f"{spec}: the checkpoint has no trained vocabulary head (missing "
                             f"{sorted(loading['missing_keys'])[:3]}); sparse encoders need a masked-LM or causal-LM checkpoint")
    elif getattr(config, "is_encoder_decoder", False):
        from transformers import T5EncoderModel  # T5: the encoder alone is the retriever

        model = T5EncoderModel.from_pretrained(source, **kwargs)
    else:
        model = AutoModel.from_pretrained(source, **kwargs)
    model.eval()
    saved = json.loads((folder / "llmret.json").read_text()).get("encoder", {}) if folder and (folder / "llmret.json").is_file() else {}
    return Backbone(model, tokenizer, info, spec, folder or Path(str(source)), saved)


def _load_adapter(folder: Path, **kwargs: Any) -> Backbone:
    """A LoRA adapter saved by ``llmret train``: its base model with the adapter merged in."""
    from peft import PeftModel

    meta_file = folder / "llmret.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{folder} is a peft adapter without llmret.json (which names its base model)")
    meta = json.loads(meta_file.read_text())
    base = load_backbone(meta["base_model"], **kwargs)
    model = PeftModel.from_pretrained(base.model, folder).merge_and_unload()
    model.eval()
    info = ModelInfo.from_dict(meta.get("model_info", {}))
    return Backbone(model, base.tokenizer, info, str(folder), folder, meta.get("encoder", {}))
