"""Load any backbone (zoo name, local folder, GGUF file, or hub id) with what llmret must know about it.

Besides the model and tokenizer, a :class:`Backbone` carries :class:`ModelInfo` (encoder or decoder,
default pooling, EOS/BOS handling, normalisation, maximum length), the description llmret saved with
a model it trained (:class:`~llmret.models.saved.SavedModel`), a sentence-transformers folder's prompts and
Dense head, and a fingerprint of the weights. Defaults come, in order of precedence, from the saved
description, the sentence-transformers configuration, and finally the architecture (decoders pool the
last token with an EOS appended; encoders pool CLS, except T5 which pools the mean).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
)

from llmret.models import st_folder, zoo
from llmret.models.fingerprint import combine, folder_fingerprint
from llmret.models.gguf import convert_gguf, gguf_cache_key
from llmret.models.model_info import ModelInfo
from llmret.models.saved import SavedModel
from llmret.util.cache import cache_dir
from llmret.util.errors import InputError

log = logging.getLogger(__name__)

__all__ = ["Backbone", "ModelInfo", "hand_over", "handing_over", "load_backbone", "resolve", "shared_loads"]

# The loads shared while a shared_loads() is open in this context; None outside one.
_SHARED: ContextVar[dict[tuple[str, Any, bool], Backbone] | None] = ContextVar("llmret_shared_loads", default=None)
# Where a training puts its final model while a handing_over() is open; None outside one.
_HANDOFF: ContextVar[dict[tuple[str, Any, bool], Backbone] | None] = ContextVar("llmret_handoff", default=None)


@dataclass
class Backbone:
    """A loaded model and tokenizer with their :class:`ModelInfo` and where they came from."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    info: ModelInfo
    source: str
    folder: Path
    saved: SavedModel | None = None  # what llmret saved with a model it trained, adapted or exported
    model_defaults: dict[str, Any] = field(default_factory=dict)  # encoder settings the folder implies (ST prompts)
    head: torch.nn.Module | None = None  # sentence-transformers Dense projections after pooling
    fingerprint: str = ""  # of the weights (and adapter): part of every embedding signature


# ---- resolving a spec to a transformers folder -------------------------------------------------
def resolve(spec: str, install: bool = True) -> tuple[Path | str, ModelInfo | None]:
    """Turn a model spec into a loadable folder (or hub id) and, for zoo models, their kind.

    Specs: a zoo name (``smollm2-135m``), a folder with ``config.json`` (or a sentence-transformers
    folder whose Transformer module sits in a subfolder), a ``.gguf`` file, or a hub id (online only).
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
            raise InputError(f"GGUF file not found: {path}")
        return convert_gguf(path.parent, path.name, cache_dir("models") / gguf_cache_key(path)), None
    if path.is_dir():
        if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
            raise InputError(f"{path} is a folder but has no config.json (not a transformers model folder)")
        return path, None
    if path.exists() or spec.startswith((".", "/", "~")):
        raise InputError(f"model not found: {spec}")
    return spec, None  # a hub id


# ---- what kind of model ------------------------------------------------------------------------
def is_seq2seq(config: PretrainedConfig) -> bool:
    """An encoder-decoder (T5, mT5, BART): its encoder alone is the retriever. A T5 encoder saved alone
    says ``is_encoder_decoder: false``, so the model type decides too."""
    return bool(getattr(config, "is_encoder_decoder", False)) or config.model_type in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES


def _encoder_of_seq2seq(source: Path | str, config: PretrainedConfig, **kwargs: Any) -> PreTrainedModel:
    """The encoder stack alone: T5EncoderModel and its kin where transformers has one, else the full model's encoder."""
    import transformers

    cls = getattr(transformers, type(config).__name__.removesuffix("Config") + "EncoderModel", None)
    if cls is not None:
        return cls.from_pretrained(source, **kwargs)
    return AutoModel.from_pretrained(source, **kwargs).get_encoder()


def is_decoder(config: PretrainedConfig) -> bool:
    """Whether a model reads text causally, from transformers' own registry of model classes.

    Encoders are the architectures transformers can load as masked LMs (BERT, RoBERTa, XLM-R, MPNet,
    ALBERT, CamemBERT, Longformer, DeBERTa, ModernBERT ...) and encoder-decoders (T5); decoders are
    the causal-LM architectures (Llama, Mistral, Qwen, Gemma, Phi ...). A name in neither registry
    (remote code) is judged by its saved architecture.
    """
    if is_seq2seq(config) or config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return False
    if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return True
    return any(a.endswith("ForCausalLM") for a in getattr(config, "architectures", None) or [])


def infer_info(config: PretrainedConfig, st: st_folder.SentenceTransformersFolder | None,
               saved: SavedModel | None, hint: ModelInfo | None = None) -> ModelInfo:
    """Default :class:`ModelInfo`: the saved description, then sentence-transformers, then the architecture."""
    if saved is not None:
        return saved.model_info
    decoder = hint.kind == "decoder" if hint else is_decoder(config)
    max_pos = getattr(config, "max_position_embeddings", 512) or 512
    if decoder:
        info = ModelInfo(kind="decoder", pooling="last", append_eos=True, max_length=min(max_pos, 8192))
    else:
        info = ModelInfo(kind="encoder", pooling="mean" if is_seq2seq(config) else "cls", max_length=min(max_pos, 512))
    return replace(info, **st.info) if st is not None else info


def load_tokenizer(source: Path | str, info: ModelInfo) -> PreTrainedTokenizerBase:
    """The backbone's tokenizer, given a pad token if it has none (decoders often do not)."""
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if info.kind == "decoder" and tokenizer.eos_token is None:
        raise InputError(f"{source}: a decoder needs an EOS token for last-token pooling, and its tokenizer has none")
    return tokenizer


def _fingerprint(source: Path | str, config: PretrainedConfig) -> str:
    if isinstance(source, Path):
        return folder_fingerprint(source)
    return f"hub:{source}@{getattr(config, '_commit_hash', None) or 'unknown'}"


@contextmanager
def shared_loads(loads: dict[tuple[str, Any, bool], Backbone]) -> Iterator[None]:
    """While open, ``load_backbone`` returns the Backbone already in ``loads`` for the same model, dtype
    and head instead of loading it again (a trained LoRA model took ~8 s a load on a laptop CPU, once
    per dataset it was evaluated on).

    Only for loads whose model nobody changes (encoders read it under inference mode): training wraps
    and updates the model it loads, so it must load outside. The loads inside a load (an adapter's base
    model, into which the adapter is merged in place) are never shared.
    """
    token = _SHARED.set(loads)
    try:
        yield
    finally:
        _SHARED.reset(token)


@contextmanager
def handing_over(loads: dict[tuple[str, Any, bool], Backbone]) -> Iterator[None]:
    """While open, a LoRA training that calls :func:`hand_over` puts its final model into ``loads``
    (merged, as loading its folder would give it), for a :func:`shared_loads` over the same dict to
    return instead of loading the folder again: ~9 s a model on a laptop CPU, most of it the base
    model's tokenizer. Training itself loads outside any share."""
    token = _HANDOFF.set(loads)
    try:
        yield
    finally:
        _HANDOFF.reset(token)


def _key(spec: str, dtype: torch.dtype | None, lm_head: bool) -> tuple[str, Any, bool]:
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else spec, dtype, lm_head


def hand_over(folder: Path, merged: Callable[[], PreTrainedModel], base: Backbone, *, dtype: torch.dtype,
              lm_head: bool) -> None:
    """Inside :func:`handing_over`: the adapter saved in ``folder``, merged into the model it trained
    (``merged()``, called only then) over ``base`` (the backbone the training loaded), keyed as
    ``load_backbone(folder, dtype=dtype, lm_head=lm_head)`` is, the Backbone ``_load_adapter`` builds."""
    loads = _HANDOFF.get()
    if loads is None:
        return
    saved = SavedModel.read(folder)
    if saved is None:
        raise InputError(f"{folder}: no llmret.json, so no trained model to hand over")
    loads[_key(str(folder), dtype, lm_head)] = Backbone(
        merged().eval(), base.tokenizer, saved.model_info, str(folder), folder, saved, base.model_defaults,
        base.head, combine(base.fingerprint, folder_fingerprint(folder)))


def load_backbone(spec: str, *, dtype: torch.dtype | None = None, lm_head: bool = False,
                  install: bool = True) -> Backbone:
    """Load model and tokenizer for ``spec``.

    ``lm_head`` keeps the vocabulary head (the MLM head of an encoder, the LM head of a decoder), through
    which sparse encoders read term weights; otherwise the bare transformer is loaded, which is all
    dense pooling needs. Inside :func:`shared_loads`, a model loaded before is returned as it is.
    """
    loads = _SHARED.get()
    if loads is None:
        return _load_backbone(spec, dtype=dtype, lm_head=lm_head, install=install)
    key = _key(spec, dtype, lm_head)
    if key not in loads:
        token = _SHARED.set(None)  # what this load loads inside it is its own (an adapter merges into its base)
        try:
            loads[key] = _load_backbone(spec, dtype=dtype, lm_head=lm_head, install=install)
        finally:
            _SHARED.reset(token)
    return loads[key]


def _load_backbone(spec: str, *, dtype: torch.dtype | None, lm_head: bool, install: bool) -> Backbone:
    """``load_backbone`` itself, each call a new load."""
    path = Path(spec).expanduser()
    if path.is_dir() and (path / "adapter_config.json").is_file():
        return _load_adapter(path, dtype=dtype, lm_head=lm_head, install=install)
    source, hint = resolve(spec, install=install)
    folder = Path(source) if isinstance(source, Path) else None
    st = st_folder.read(folder) if folder is not None else None
    saved = SavedModel.read(folder) if folder is not None else None
    if folder is not None and st is not None and st.transformer_path:
        source = folder / st.transformer_path  # older sentence-transformers folders: the model in 0_Transformer/
    try:
        config = AutoConfig.from_pretrained(source)
    except OSError as exc:
        raise InputError(f"'{spec}' is not a zoo model ({', '.join(zoo.ZOO)}), a model folder or a .gguf "
                                f"file, and as a hub id it could not be loaded: {str(exc).splitlines()[0]}") from None
    info = infer_info(config, st, saved, hint)
    tokenizer = load_tokenizer(source, info)
    kwargs: dict[str, Any] = {"dtype": dtype or torch.float32}
    if lm_head and is_seq2seq(config):
        raise InputError(f"{spec}: encoder-decoder models have no vocabulary head over the input; "
                         "sparse encoders need a masked-LM or causal-LM backbone")
    if lm_head:
        auto = AutoModelForCausalLM if info.kind == "decoder" else AutoModelForMaskedLM
        model, loading = auto.from_pretrained(source, output_loading_info=True, **kwargs)
        if loading["missing_keys"]:  # a randomly initialised head would give meaningless term weights
            raise InputError(f"{spec}: the checkpoint has no trained vocabulary head (missing "
                             f"{sorted(loading['missing_keys'])[:3]}); sparse encoders need a masked-LM or causal-LM checkpoint")
    elif is_seq2seq(config):
        model = _encoder_of_seq2seq(source, config, **kwargs)
    else:
        model = AutoModel.from_pretrained(source, **kwargs)
    model.eval()
    head = st.head.to(kwargs["dtype"]) if st is not None and st.head is not None else None
    return Backbone(model, tokenizer, info, spec, folder or Path(str(source)), saved,
                    st.prompts if st is not None else {}, head, _fingerprint(folder or str(source), config))


def _load_adapter(folder: Path, **kwargs: Any) -> Backbone:
    """A LoRA adapter saved by ``llmret train``: its base model with the adapter merged in."""
    from peft import PeftModel

    saved = SavedModel.read(folder)
    if saved is None:
        raise InputError(f"{folder} is a peft adapter without llmret.json (which names its base model)")
    base = load_backbone(saved.base_model, **kwargs)
    model = PeftModel.from_pretrained(base.model, folder).merge_and_unload()
    model.eval()
    return Backbone(model, base.tokenizer, saved.model_info, str(folder), folder, saved, base.model_defaults,
                    base.head, combine(base.fingerprint, folder_fingerprint(folder)))
