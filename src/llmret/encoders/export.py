"""Export a trained retriever as a plain transformers folder that needs neither peft nor llmret.

LoRA is merged into the weights. The folder gets ``llmret.json`` (so llmret loads it back with the
same behaviour) and a model card. A dense export also gets sentence-transformers module files that
make ``SentenceTransformer(folder)`` encode queries and passages exactly as llmret does: pooling, Dense
head and normalisation as modules, the query prefix and instruction and the passage prefix as the
``query`` and ``document`` prompts, and, for decoders, the appended EOS (and BOS choice) in the
exported tokenizer's post-processor. A sparse export keeps the vocabulary head, and gets
``SparseEncoder`` files when sentence-transformers can reproduce it (masked LMs, and decoders such as the
Lion models, bidirectional ones through the exported config).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from tokenizers import processors
from transformers import PreTrainedTokenizerBase

from llmret.encoders.base import TextEncoder
from llmret.encoders.registry import load_encoder
from llmret.encoders.settings import EncoderSettings
from llmret.models import st_folder, zoo
from llmret.models.backbone import is_seq2seq
from llmret.models.saved import SavedModel
from llmret.util.errors import InputError
from llmret.util.fileio import atomic_dir, atomic_write, check_output, read_json, write_json


def export_model(model: str, out: str | Path) -> Path:
    """Merge and save ``model`` (an adapter folder, a trained folder, or any spec) into ``out``."""
    check_output(out)
    saved = SavedModel.read(Path(model)) if Path(model).is_dir() else None
    retriever = saved.retriever if saved is not None else "dense"
    encoder = load_encoder(retriever, EncoderSettings(model=model), device="cpu")
    out = Path(out)
    dense = retriever == "dense"
    unsupported = [] if dense else sparse_encoder_gaps(encoder)
    prompts = _prompts(encoder) if dense or not unsupported else {}
    with atomic_dir(out) as tmp:
        encoder.model.save_pretrained(tmp)
        tokenizer = encoder.tokenizer
        if encoder.info.kind == "decoder" and (dense or not unsupported):
            tokenizer = _with_llmret_specials(encoder)
        if encoder.info.kind == "decoder" and encoder.info.bidirectional:
            _config_bidirectional(tmp)
        tokenizer.model_max_length = encoder.passage_max_length
        tokenizer.save_pretrained(tmp)
        SavedModel(base_model=saved.base_model if saved else model, retriever=encoder.retriever, lora=False,
                   model_info=encoder.info, encoder=encoder.settings.explicit()).write(tmp)
        if dense:
            info = encoder.info
            st_folder.write(tmp, pooling=info.pooling, normalize=info.normalize, max_length=encoder.passage_max_length,
                            dim=int(encoder.model.config.hidden_size), lowercase=info.lowercase, head=encoder.head,
                            prompts=prompts)
        elif not unsupported:
            st_folder.write_sparse(tmp, pooling=encoder.info.pooling, max_length=encoder.passage_max_length,
                                   vocab_size=int(encoder.dim), lowercase=encoder.info.lowercase, prompts=prompts,
                                   causal_lm=encoder.info.kind == "decoder")
        with atomic_write(tmp / "README.md") as handle:
            handle.write(_card(encoder, saved, model, out.name, prompts, unsupported))
    return out


def sparse_encoder_gaps(encoder: TextEncoder) -> list[str]:
    """What of a sparse encoder's behaviour sentence-transformers' SparseEncoder (a masked-LM or causal-LM
    head, log(1 + ReLU), max or sum pooling) cannot reproduce: an export writes its files only when this is
    empty."""
    s, info = encoder.settings, encoder.info
    config = encoder.model.config
    window = getattr(config.get_text_config() if hasattr(config, "get_text_config") else config, "sliding_window", None)
    gaps = [what for what, present in (
        ("an encoder-decoder's LM head", is_seq2seq(config)),
        # llmret's bidirectional mask opens sliding-window layers fully; transformers' bidirectional
        # config keeps their window (both ways), so the two agree only on texts that fit in it
        (f"bidirectional attention past the {window}-token sliding window",
         bool(info.bidirectional and window and window < max(s.query_max_length, encoder.passage_max_length))),
        (f"{info.pooling} pooling", info.pooling not in ("max", "sum")),
        (f"logits scaled by {s.logit_scale}", (s.logit_scale or 1.0) != 1.0),
        ("a calibrated term bias", getattr(encoder, "term_bias", None) is not None),
        ("special tokens' terms zeroed", bool(s.zero_special_terms)),
        ("only the text's own terms", bool(s.input_terms_only)),
        ("top-k term cuts", bool(s.query_top_k or s.passage_top_k)),
        ("quantised weights", bool(s.quantize)),
        ("a suffix after the text", bool(s.query_suffix or s.passage_suffix))) if present]
    return gaps


def _config_bidirectional(folder: Path) -> None:
    """Mark the exported decoder's config bidirectional the two ways transformers reads (5.2 and later):
    ``is_causal`` false for every decoder, and Gemma 3's own ``use_bidirectional_attention`` where the
    config has it, so that a plain transformers or sentence-transformers load attends as llmret did."""
    config = read_json(folder / "config.json")
    config["is_causal"] = False
    for part in (config, config.get("text_config") or {}):
        if "use_bidirectional_attention" in part:
            part["use_bidirectional_attention"] = True
    write_json(folder / "config.json", config)


def _prompts(encoder: TextEncoder) -> dict[str, str]:
    """The text llmret puts before queries and passages, as sentence-transformers prompts."""
    s = encoder.settings
    if s.query_suffix or s.passage_suffix:
        raise InputError("sentence-transformers prompts only go before the text: a model encoding with a suffix "
                         "(query_suffix / passage_suffix) cannot be exported as a sentence-transformers folder")
    query = s.query_prefix
    if s.instruction:
        if not s.instruction_template.endswith("{query}"):
            raise InputError(f"instruction template {s.instruction_template!r} puts text after the query; "
                             "sentence-transformers prompts can only go before it")
        query += s.instruction_template[: -len("{query}")].format(instruction=s.instruction)
    return {name: text for name, text in (("query", query), ("document", s.passage_prefix)) if text}


def _with_llmret_specials(encoder: TextEncoder) -> PreTrainedTokenizerBase:
    """A copy of the tokenizer whose post-processor adds the BOS and EOS that llmret's tokenize adds."""
    import copy

    tok = copy.deepcopy(encoder.tokenizer)
    bos, eos = tok.bos_token, tok.eos_token
    adds_bos = tok.bos_token_id is not None and tok("a")["input_ids"][:1] == [tok.bos_token_id]
    keep_bos = bos is not None and (encoder.info.add_bos or (encoder.info.add_bos is None and adds_bos))
    single = " ".join([*(["$A"] if not keep_bos else [bos, "$A"]), *([eos] if encoder.info.append_eos else [])])
    specials = sorted({(t, tok.convert_tokens_to_ids(t)) for t in single.split() if t != "$A"})
    backend = getattr(tok, "backend_tokenizer", None) or getattr(tok, "_tokenizer", None)
    if backend is None:
        raise InputError(f"{encoder.settings.model}: the tokenizer is not a fast tokenizer; its EOS cannot be exported")
    backend.post_processor = processors.TemplateProcessing(single=single, special_tokens=specials)
    for flag, value in (("add_bos_token", keep_bos), ("add_eos_token", encoder.info.append_eos)):
        if hasattr(tok, flag):  # tokenizers that rebuild their post-processor from these flags on load
            try:
                setattr(tok, flag, value)
            except AttributeError:
                pass
    if hasattr(tok, "init_kwargs"):
        tok.init_kwargs.update(add_bos_token=keep_bos, add_eos_token=encoder.info.append_eos)
    return tok


def _card(encoder: TextEncoder, saved: SavedModel | None, model: str, name: str, prompts: dict[str, str],
          unsupported: list[str]) -> str:
    """The model card: the Hub's metadata block (base model, library, pipeline, tags), then how it encodes."""
    info, s = encoder.info, encoder.settings
    base = saved.base_model if saved else model
    dense = encoder.retriever == "dense"
    hub_base = zoo.hub_id(base)
    tags = ["llmret", "sentence-transformers" if dense else "transformers", "retrieval",
            "dense-retrieval" if dense else "learned-sparse-retrieval", *(["splade"] if not dense else [])]
    st = dense or not unsupported  # sentence-transformers loads it (SentenceTransformer or SparseEncoder)
    meta = {**({"base_model": hub_base} if hub_base else {}),
            "library_name": "sentence-transformers" if st else "transformers",
            "pipeline_tag": "sentence-similarity" if dense else "feature-extraction",
            "tags": [*tags, *(["sparse-encoder"] if st and not dense else [])]}
    named = f"`{hub_base}`" + (f" (llmret zoo: `{base}`)" if base in zoo.ZOO else "") if hub_base else f"`{base}`"
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "",
             f"# {'Dense' if dense else 'Learned-sparse'} retriever exported by llmret", "",
             f"- base model: {named}",
             f"- pooling: `{info.pooling}` (EOS appended: {info.append_eos}), L2-normalised: {info.normalize}",
             f"- query prefix: `{s.query_prefix!r}`, passage prefix: `{s.passage_prefix!r}`",
             f"- instruction: `{s.instruction!r}` (template `{s.instruction_template!r}`)",
             f"- lengths: queries {s.query_max_length}, passages {s.passage_max_length} tokens",
             f"- trained with LoRA merged into the weights: {bool(saved and saved.lora)}"]
    if not dense:
        lines.append(f"- term weights log(1 + ReLU({s.logit_scale} x logit)), {info.pooling}-pooled over the vocabulary head")
    lines += ["", f"Load with `llmret evaluate --retriever {encoder.retriever} --model {name}`."]
    if dense:
        lines += ["", "With sentence-transformers: `SentenceTransformer(folder).encode_query(...)` and "
                      f"`.encode_document(...)` (prompts {sorted(prompts) or 'none'}); it truncates queries at the "
                      "passage length, llmret at the query length."]
    elif st:
        lines += ["", "With sentence-transformers: `SparseEncoder(folder).encode_query(...)` and `.encode_document(...)` "
                      f"(prompts {sorted(prompts) or 'none'})."]
    else:
        lines += ["", "No sentence-transformers SparseEncoder files: it cannot reproduce " + "; ".join(unsupported) + "."]
    return "\n".join(lines) + "\n"
