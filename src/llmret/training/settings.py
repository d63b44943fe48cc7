"""The settings of llmret's two trainers, retrieval training and MNTP: plain dataclasses, each field
a flag of its command (``max_steps`` -> ``--max-steps``) and a key of config and study files.

Kept apart from the trainers themselves so that reading them (the CLI's parser, a study's plan, a
config check) imports no torch: building ``llmret --help`` must not cost a deep-learning stack.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmret.encoders.recipes import RECIPES, recipe_values
from llmret.encoders.settings import EncoderSettings
from llmret.util.errors import DataError
from llmret.util.layers import merge
from llmret.util.settings import from_dict, option


@dataclass
class TrainSettings:
    """Training settings; defaults follow Luo et al. 2024 (LoRA, InfoNCE at 0.02, lr 3e-4, 7 negatives).

    Each field is a ``train`` flag (``max_steps`` -> ``--max-steps``) and a key of a ``--config`` file.
    """

    recipe: str | None = option(None, "a published system's settings under yours: lion-sparse, lion-dense, "
                              "promptreps (see llmret.encoders.recipes)",
                              choices=tuple(RECIPES))
    retriever: str = option("dense", "what to train", choices=("dense", "sparse"))
    train_data: list[str] | str = option("builtin:code", "Tevatron JSONL, a BEIR folder (qrels/train.tsv) or "
                                         "builtin:TASK; several: multi-task training, each batch from one task")
    corpus: str | None = option(None, "corpus resolving passages given by id in a JSONL file")
    output_dir: str = option("runs/train", "where checkpoints, logs and final/ go")
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    lora: bool = option(True, "LoRA adapters (--no-lora: full fine-tuning)")
    lora_r: int = option(16, "LoRA rank")
    lora_alpha: int = option(32, "LoRA alpha")
    lora_dropout: float = option(0.1, "dropout on the LoRA input")
    lora_target_modules: list[str] | str = option("all-linear", "modules given adapters (default every attention "
                                                              "and MLP projection)")
    lora_layers: int | None = option(None, "only the top N layers get adapters (cheaper backward on a CPU)")
    continue_adapter: bool = option(False, "the model is an MNTP run's output: train its LoRA adapter further over "
                                           "the original base (as Lion does) instead of a fresh one over the merged "
                                           "weights; the adapter's rank, alpha, dropout and targets replace lora_*")
    learning_rate: float = option(3e-4, "peak learning rate (linear warm-up and decay)")
    weight_decay: float = option(0.0, "AdamW weight decay")
    warmup_ratio: float = option(0.1, "share of the steps spent warming up")
    batch_size: int = option(128, "queries per step over all processes; in-batch negatives come from these")
    group_size: int = option(8, "passages per query: 1 positive + hard negatives")
    temperature: float | None = option(None, "InfoNCE temperature (default 0.02 dense, 1.0 sparse: raw dot products)")
    objective: str = option("cl", "cl: InfoNCE; kd: listwise KL from teacher scores; cl+kd: (1 - kd_weight) "
                                "InfoNCE + kd_weight KL; marginmse: MarginMSE. All but cl need a teacher "
                                "'score' on every passage (llmret annotate)",
                          choices=("cl", "kd", "cl+kd", "marginmse"))
    teacher: str | None = option(None, "kd, cl+kd, marginmse: score the training queries' passages with this "
                                       "teacher first (KIND:MODEL, as llmret annotate; cached by content)")
    teacher_scores: str | None = option(None, "kd, cl+kd, marginmse: teacher scores from a file, as the field shares "
                                              "them ({query id: {passage id: score}} as .pkl.gz, e.g. "
                                              "sentence-transformers' MS MARCO cross-encoder scores, or .json)")
    teacher_max_length: int | None = option(None, "tokens the teacher reads: of a pair (cross-encoder, judge: "
                                                  "default 512) or of a passage (retriever teachers: the model's)")
    task_instructions: bool = option(False, "put each training source's own instruction (its task.json, as the "
                                            "built-in tasks have) before its queries; evaluation then uses each "
                                            "dataset's own")
    kd_weight: float = option(0.5, "cl+kd: share of the KL part (0.5 is Lion's (InfoNCE + KL) / 2)")
    kd_student_temperature: float | None = option(None, "kd, cl+kd: the student's scores are divided by this in the KL "
                                                        "(default: the InfoNCE temperature for dense, as Lion's "
                                                        "T = 0.01 over cosines; 1.0 for sparse dot products)")
    kd_teacher_temperature: float = option(1.0, "distillation temperature of the teacher's scores")
    margin_temperature: float | None = option(None, "marginmse: the student's margin is divided by this (default as "
                                                    "kd_student_temperature: Lion's T = 0.01 dense, none sparse)")
    margin_negatives: str = option("all", "marginmse: all: every hard negative of the group; one: the group's first "
                                          "(a fresh uniform draw each epoch), Lion's one sampled negative per query",
                                   choices=("all", "one"))
    similarity: str = option("dot", "InfoNCE similarity: dot (cosine when the encoder normalises) or cos",
                           choices=("dot", "cos"))
    epochs: float = option(1.0, "passes over the training queries")
    max_steps: int | None = option(None, "stop after this many steps (instead of epochs)")
    max_train_queries: int | None = option(None, "train on a seeded subset of this many queries (nested across sizes)")
    grad_accum: int = option(1, "micro-batches per optimizer step")
    grad_checkpointing: bool = option(False, "recompute activations in the backward pass (less memory)")
    grad_cache: bool = option(False, "GradCache: exact large-batch training with the memory of one chunk")
    chunk_size: int = option(16, "GradCache: sequences forwarded at once")
    budget_flops: float | None = option(None, "train as many steps as this many FLOPs buy (see compute.json)")
    max_grad_norm: float = option(1.0, "gradient clipping (0: none)")
    mixed_precision: str = option("auto", "auto: bf16 where the GPU supports it, else none (CPU bf16 is slow)",
                                choices=("auto", "no", "bf16", "fp16"))
    seed: int = option(42, "seeds data order, negatives, subsets and initialisation")
    save_steps: int = option(0, "full training state every N steps, for --resume (0: none)")
    logging_steps: int = option(10, "log.jsonl record every N steps")
    tensorboard: bool = option(False, "also log to OUTPUT/tensorboard")
    eval_steps: list[int] = option([], "save checkpoint-N/model at these steps (and evaluate it with --eval-data)")
    eval_data: str | None = option(None, "evaluate checkpoint models on this data (builtin:TASK or BEIR folder)")
    eval_split: str = option("dev", "split of --eval-data")
    # sparse only: Lion used FLOPS with weights 0.05 (queries) and 0.04 (passages) next to ranking weight 1
    regularizer: str = option("flops", "sparse: sparsity regulariser", choices=("flops", "l1"))
    query_reg_weight: float = option(0.05, "sparse: query regulariser weight")
    passage_reg_weight: float = option(0.04, "sparse: passage regulariser weight")
    reg_warmup_ratio: float = option(0.33, "sparse: the weights rise quadratically over this share of the steps")
    reg_warmup_steps: int | None = option(None, "sparse: the warm-up in steps (instead of reg_warmup_ratio)")
    reg_warmup_unit: str = option("step", "sparse: what the warm-up counts: optimizer steps, or micro-batches as "
                                          "Lion's code does (with grad_accum its weights reach full strength sooner; "
                                          "its counter starts at 1)", choices=("step", "micro-batch"))
    calibrate_terms: int | None = option(None, "sparse: before training, set each term's zero point from a sample "
                                               "of the training passages so that a passage has about this many "
                                               "non-zero terms (a trained, saved per-term bias)")
    top_k_in_training: bool = option(False, "sparse: cut queries and passages to the encoder's query_top_k / "
                                          "passage_top_k in training too (gradient through the kept weights)")

    def __setattr__(self, name: str, value: Any) -> None:
        """One training source is kept as a string (a list of one is the same run: resume compares them)."""
        if name == "train_data" and isinstance(value, (list, tuple)):
            value = value[0] if len(value) == 1 else list(value)
        super().__setattr__(name, value)

    @property
    def sources(self) -> list[str]:
        return [self.train_data] if isinstance(self.train_data, str) else list(self.train_data)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path | None = None) -> TrainSettings:
        """Settings from one mapping (a config file's), over its recipe's values."""
        return cls.from_layers([("config", data)], source)

    @classmethod
    def from_layers(cls, layers: Sequence[tuple[str, dict[str, Any] | None]],
                    source: str | Path | None = None) -> TrainSettings:
        """Settings from ``(layer name, values)`` layers, lowest first, over the recipe the highest layer
        naming one names. The result remembers where each value came from (``origins``: dotted key ->
        layer) and which recipe values a layer replaced (``overrides``); neither is a field."""
        given = merge(layers).values
        named = given.get("recipe")
        if named is not None and named not in RECIPES:
            raise DataError(source, None, f"unknown recipe '{named}'; known: {', '.join(RECIPES)}")
        recipe = recipe_values(named, given.get("objective", "cl")) if named else None
        layered = merge([(f"recipe {named}", recipe), *layers] if named else list(layers))
        data = dict(layered.values)
        encoder = from_dict(EncoderSettings, data.pop("encoder", {}) or {}, source)
        settings = from_dict(cls, data, source)
        settings.encoder = encoder
        settings.recipe_applied = True  # train() refuses a recipe named but never applied
        settings.origins, settings.overrides = layered.origins, layered.overrides
        return settings


def resolve_temperatures(settings: TrainSettings) -> TrainSettings:
    """Fill the temperatures left to their defaults, in place: InfoNCE 0.02 for dense (cosines) and 1.0
    for sparse (raw dot products); the student's KL and margin temperatures follow InfoNCE's, as in Lion,
    whose dense student divides its cosine scores by the same T = 0.01 in every loss. At 1.0 a cosine
    student cannot follow a teacher: its distribution over a group stays near uniform."""
    if settings.temperature is None:
        settings.temperature = 1.0 if settings.retriever == "sparse" else 0.02
    if settings.kd_student_temperature is None:
        settings.kd_student_temperature = settings.temperature
    if settings.margin_temperature is None:
        settings.margin_temperature = settings.kd_student_temperature
    return settings


@dataclass
class MNTPSettings:
    """MNTP settings; each field is an ``llmret mntp`` flag. Defaults are CPU-sized. Lion's run
    (train_configs/mntp/meta_llama3_*_msmarco.json and run_mntp.py) is ``--batch-size 32 --max-length 512
    --max-steps 10000 --schedule-epochs 1 --learning-rate 5e-5 --warmup-ratio 0 --mixed-precision bf16`` on
    the MS MARCO passages, with LoRA r 16, alpha 32, dropout 0.05 and 20% of the tokens chosen, as here."""

    model: str = option("smollm2-135m", "the decoder to adapt (zoo name, folder, .gguf or hub id)")
    data: str = option("builtin:code", "corpus to adapt on: builtin:TASK, a BEIR folder or a corpus JSONL")
    output_dir: str = option("runs/mntp", "where checkpoints, log.jsonl and final/ go")
    max_steps: int = option(100, "optimizer steps")
    batch_size: int = option(16, "blocks (or texts, without packing) per step")
    max_length: int = option(128, "block length in tokens (each text's maximum without packing)")
    pack: bool = option(True, "join texts end to end and cut blocks of max_length (no padding), as run_mlm does")
    mask_ratio: float = option(0.2, "share of tokens chosen for prediction")
    mask_token: str | None = option(None, "the mask token's text (default: the tokenizer's, else '_')")
    learning_rate: float = option(1e-4, "peak learning rate (warm-up, then linear decay)")
    warmup_ratio: float = option(0.1, "share of the schedule spent warming up (Lion: 0)")
    schedule_epochs: float | None = option(None, "the linear decay spans this many epochs of blocks even where "
                                                 "max_steps stops earlier (Lion: 1, stopped at 10,000 steps); "
                                                 "default: it ends at max_steps")
    mixed_precision: str = option("auto", "auto: bf16 where the GPU supports it (Lion trains MNTP in bf16), else none",
                                  choices=("auto", "no", "bf16", "fp16"))
    lora_r: int = option(16, "LoRA rank")
    lora_alpha: int = option(32, "LoRA alpha")
    lora_dropout: float = option(0.05, "LoRA dropout")
    seed: int = option(42, "seed of the order and of the masks")
    save_steps: int = option(0, "full state every N steps, for --resume")
    logging_steps: int = option(1, "log every N steps")


DEFAULT_PROMPT = ("Query: {query}\nPassage: {passage}\n"
                  "Is the passage relevant to the query? Answer yes or no.\nAnswer:")


@dataclass
class TeacherSettings:
    """How a teacher scores (query, passage) pairs (``llmret annotate`` and ``llmret mine``)."""

    prompt: str = option(DEFAULT_PROMPT, "judge teachers: the prompt, with {query} and {passage}")
    max_length: int | None = option(None, "tokens of a (query, passage) pair (default 512); retriever teachers: of "
                                          "a passage (default the model's)")
    batch_size: int = option(32, "pairs scored at once")


@dataclass
class MiningSettings:
    """Which candidates of a run become hard negatives (``llmret mine``)."""

    depth_from: int = option(0, "first rank taken as a candidate (0-based)")
    depth_to: int = option(100, "candidates are ranks depth_from .. depth_to - 1")
    count: int = option(20, "negatives kept per query")
    margin: float | None = option(None, "drop candidates scored above (weakest positive - margin)")
    max_teacher_score: float | None = option(None, "drop candidates the teacher scores above this")
