"""The settings of llmret's two trainers, retrieval training and MNTP, composed of parts.

Each part declares its settings once (type, default, help): :class:`LoraSettings` (the adapters),
:class:`LoopSettings` (the optimisation loop every trainer runs), :class:`DataSettings`,
:class:`LossSettings` (the objective), :class:`BudgetSettings`, :class:`StepSettings` (how a step's
gradient is computed), :class:`SparseTrainingSettings` and :class:`CheckpointSettings` (evaluation
during training). :class:`TrainSettings` is made of all of them and :class:`MNTPSettings` of the LoRA
and loop parts (with MNTP's own defaults); their fields stay flat, so every field is one flag of its
command (``max_steps`` -> ``--max-steps``) and one key of config, study and saved files, and each part
goes, through :meth:`Parts.part`, to the code that needs it alone.

Kept apart from the trainers themselves so that reading them (the CLI's parser, a study's plan, a
config check) imports no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from llmret.encoders.recipes import RECIPES, recipe_values
from llmret.encoders.settings import EncoderSettings
from llmret.util.errors import DataError, InputError
from llmret.util.layers import merge
from llmret.util.settings import from_dict, load_config, option, with_defaults

P = TypeVar("P")


class Parts:
    """What a settings class composed of parts offers: one part's values as that part's own dataclass."""

    def part(self, cls: type[P]) -> P:
        """The values of part ``cls`` (a copy: the code it is handed to sees that part alone)."""
        return cls(**{f.name: getattr(self, f.name) for f in fields(cls)})  # type: ignore[arg-type]


@dataclass
class LoraSettings:
    """The LoRA adapters trained."""

    lora_r: int = option(16, "LoRA rank")
    lora_alpha: int = option(32, "LoRA alpha")
    lora_dropout: float = option(0.1, "dropout on the LoRA input")
    lora_target_modules: list[str] | str = option("all-linear", "modules given adapters (default every attention "
                                                                "and MLP projection)")


@dataclass
class LoopSettings:
    """The optimisation loop every trainer runs (:func:`llmret.training.loop.run_loop`)."""

    output_dir: str = option("runs/train", "where checkpoints, logs and final/ go", bookkeeping=True)
    learning_rate: float = option(3e-4, "peak learning rate (linear warm-up and decay)")
    weight_decay: float = option(0.0, "AdamW weight decay")
    warmup_ratio: float = option(0.1, "share of the steps spent warming up")
    batch_size: int = option(128, "examples per micro-batch over all processes, grad_accum of them a step (retrieval "
                                  "training: queries, whose passages are each other's in-batch negatives; MNTP: blocks)")
    grad_accum: int = option(1, "micro-batches per optimizer step")
    max_steps: int | None = option(None, "stop after this many steps")
    max_grad_norm: float = option(1.0, "gradient clipping (0: none)")
    mixed_precision: str = option("auto", "auto: bf16 where the GPU supports it, else none (CPU bf16 is slow)",
                                  choices=("auto", "no", "bf16", "fp16"))
    seed: int = option(42, "seeds data order, negatives, subsets, masks and initialisation")
    save_steps: int = option(0, "full training state every N steps, for --resume (0: none)", bookkeeping=True)
    logging_steps: int = option(10, "log.jsonl record every N steps", bookkeeping=True)
    report_to: list[str] = option([], "experiment trackers that also get every log record: tensorboard (in "
                                      "OUTPUT/llmret), trackio, wandb, mlflow (offline unless configured)",
                                  bookkeeping=True)


@dataclass
class AdapterSettings:
    """Whether and where retrieval training adds adapters (their shape is :class:`LoraSettings`)."""

    lora: bool = option(True, "LoRA adapters (--no-lora: full fine-tuning)")
    lora_layers: int | None = option(None, "only the top N layers get adapters (cheaper backward on a CPU)")
    continue_adapter: bool = option(False, "the model is an MNTP run's output: train its LoRA adapter further over "
                                           "the original base (as Lion does) instead of a fresh one over the merged "
                                           "weights; the adapter's rank, alpha, dropout and targets replace lora_*")


@dataclass
class DataSettings:
    """What retrieval training reads: its examples, their passages and teacher scores."""

    train_data: list[str] | str = option("builtin:code", "Tevatron JSONL, a BEIR folder (qrels/train.tsv) or "
                                         "builtin:TASK; several: multi-task training, each batch from one task")
    corpus: str | None = option(None, "corpus resolving passages given by id in a JSONL file")
    max_train_queries: int | None = option(None, "train on a seeded subset of this many queries (nested across sizes)")
    group_size: int = option(8, "passages per query: 1 positive + hard negatives")
    task_instructions: bool = option(False, "put each training source's own instruction (its task.json, as the "
                                            "built-in tasks have) before its queries; evaluation then uses each "
                                            "dataset's own")
    teacher: str | None = option(None, "kd, cl+kd, marginmse: score the training queries' passages with this "
                                       "teacher first (KIND:MODEL, as llmret annotate; cached by content)")
    teacher_scores: str | None = option(None, "kd, cl+kd, marginmse: teacher scores from a file, as the field shares "
                                              "them ({query id: {passage id: score}} as .pkl.gz, e.g. "
                                              "sentence-transformers' MS MARCO cross-encoder scores, or .json)")
    teacher_max_length: int | None = option(None, "tokens the teacher reads: of a pair (cross-encoder, judge: "
                                                  "default 512) or of a passage (retriever teachers: the model's)")
    teacher_scoring: str = option("before", "teacher: before: every passage of every training query, once before "
                                            "training (cached, shared by runs on the same data); as-read: each "
                                            "batch's pairs when the run reads them (a short run reads a few of them)",
                                  choices=("before", "as-read"), bookkeeping=True)

    def __setattr__(self, name: str, value: Any) -> None:
        """One training source is kept as a string (a list of one is the same run: resume compares them)."""
        if name == "train_data" and isinstance(value, (list, tuple)):
            value = value[0] if len(value) == 1 else list(value)
        super().__setattr__(name, value)

    @property
    def sources(self) -> list[str]:
        return [self.train_data] if isinstance(self.train_data, str) else list(self.train_data)


@dataclass
class LossSettings:
    """The objective and its temperatures (:func:`llmret.training.train.objective_for`)."""

    objective: str = option("cl", "cl: InfoNCE; kd: listwise KL from teacher scores; cl+kd: (1 - kd_weight) "
                                  "InfoNCE + kd_weight KL; marginmse: MarginMSE. All but cl need a teacher "
                                  "'score' on every passage (llmret annotate)",
                            choices=("cl", "kd", "cl+kd", "marginmse"))
    temperature: float | None = option(None, "InfoNCE temperature (default 0.02 dense, 1.0 sparse: raw dot products)")
    similarity: str = option("dot", "InfoNCE similarity: dot (cosine when the encoder normalises) or cos",
                             choices=("dot", "cos"))
    kd_weight: float = option(0.5, "cl+kd: share of the KL part (0.5 is Lion's (InfoNCE + KL) / 2)")
    kd_student_temperature: float | None = option(None, "kd, cl+kd: the student's scores are divided by this in the "
                                                        "KL (default: the InfoNCE temperature for dense, as Lion's "
                                                        "T = 0.01 over cosines; 1.0 for sparse dot products)")
    kd_teacher_temperature: float = option(1.0, "distillation temperature of the teacher's scores")
    kd_in_batch: bool = option(False, "kd, cl+kd: the KL spans each query's whole batch (every passage its process "
                                      "reads, in-batch negatives included), not only its own group; needs a teacher "
                                      "scoring as read")
    margin_temperature: float | None = option(None, "marginmse: the student's margin is divided by this (default as "
                                                    "kd_student_temperature: Lion's T = 0.01 dense, none sparse)")
    margin_negatives: str = option("all", "marginmse: all: every hard negative of the group; one: the group's first "
                                          "(a fresh uniform draw each epoch), Lion's one sampled negative per query",
                                   choices=("all", "one"))


@dataclass
class BudgetSettings:
    """How many steps retrieval training takes, when ``max_steps`` does not say."""

    epochs: float = option(1.0, "passes over the training queries")
    budget_flops: float | None = option(None, "train as many steps as this many FLOPs buy (see compute.json)")


@dataclass
class StepSettings:
    """How a step's gradient is computed: the same gradient, other memory and time."""

    grad_checkpointing: bool = option(False, "recompute activations in the backward pass (less memory)")
    grad_cache: bool = option(False, "GradCache: exact large-batch training with the memory of one chunk")
    chunk_size: int = option(16, "GradCache: sequences forwarded at once")


@dataclass
class SparseTrainingSettings:
    """Sparse retrievers' regulariser and term handling in training."""

    # Lion used FLOPS with weights 0.05 (queries) and 0.04 (passages) next to ranking weight 1
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


@dataclass
class CheckpointSettings:
    """Models saved, and evaluated, at chosen steps of a run (quality against steps)."""

    eval_steps: list[int] = option([], "save checkpoint-N/model at these steps (and evaluate it with --eval-data)",
                                   bookkeeping=True)
    eval_data: str | None = option(None, "evaluate checkpoint models on this data (builtin:TASK or BEIR folder)",
                                   bookkeeping=True)
    eval_split: str = option("dev", "split of --eval-data", bookkeeping=True)


@dataclass
class TrainSettings(CheckpointSettings, SparseTrainingSettings, StepSettings, BudgetSettings, LossSettings,
                    DataSettings, AdapterSettings, LoraSettings, LoopSettings, Parts):
    """Retrieval training's settings: its parts' fields, flat, with the recipe, the retriever and the
    encoder; defaults follow Luo et al. 2024 (LoRA, InfoNCE at 0.02, lr 3e-4, 7 negatives)."""

    recipe: str | None = option(None, "a published system's settings under yours: lion-sparse, lion-dense, "
                                      "luo-dense, promptreps (see llmret.encoders.recipes)", choices=tuple(RECIPES))
    retriever: str = option("dense", "what to train", choices=("dense", "sparse"))
    encoder: EncoderSettings = field(default_factory=EncoderSettings)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path | None = None) -> TrainSettings:
        """Settings from one mapping (a config file's), over its recipe's values."""
        return cls.from_layers([("config", data)], source)

    @classmethod
    def saved(cls, folder: str | Path) -> TrainSettings:
        """The settings a training run in ``folder`` used (its ``train_config.yaml``)."""
        return cls.from_layers([("saved run", load_config(Path(folder) / "train_config.yaml"))],
                               Path(folder) / "train_config.yaml")

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


MNTPLora = with_defaults(LoraSettings, "MNTPLora", lora_dropout=0.05)
MNTPLoop = with_defaults(LoopSettings, "MNTPLoop", output_dir="runs/mntp", learning_rate=1e-4, batch_size=16,
                         max_steps=100, logging_steps=1)


@dataclass
class MNTPSettings(MNTPLora, MNTPLoop, Parts):  # type: ignore[misc, valid-type]
    """MNTP's settings: what to adapt on what, with the LoRA and loop parts of retrieval training (and
    CPU-sized defaults). Lion's run (train_configs/mntp/meta_llama3_*_msmarco.json and run_mntp.py) is
    ``--batch-size 32 --max-length 512 --max-steps 10000 --schedule-epochs 1 --learning-rate 5e-5
    --warmup-ratio 0 --mixed-precision bf16`` on the MS MARCO passages, with LoRA r 16, alpha 32, dropout
    0.05 and 20% of the tokens chosen, as here."""

    model: str = option("smollm2-135m", "the decoder to adapt (zoo name, folder, .gguf or hub id)")
    data: str = option("builtin:code", "corpus to adapt on: builtin:TASK, a BEIR folder or a corpus JSONL")
    max_length: int = option(128, "block length in tokens (each text's maximum without packing)")
    pack: bool = option(True, "join texts end to end and cut blocks of max_length (no padding), as run_mlm does")
    mask_ratio: float = option(0.2, "share of tokens chosen for prediction")
    mask_token: str | None = option(None, "the mask token's text (default: the tokenizer's, else '_')")
    schedule_epochs: float | None = option(None, "the linear decay spans this many epochs of blocks even where "
                                                 "max_steps stops earlier (Lion: 1, stopped at 10,000 steps); "
                                                 "default: it ends at max_steps")


DEFAULT_PROMPT = ("Query: {query}\nPassage: {passage}\n"
                  "Is the passage relevant to the query? Answer yes or no.\nAnswer:")


@dataclass
class TeacherSettings:
    """How a teacher scores (query, passage) pairs (``llmret annotate`` and ``llmret mine``)."""

    prompt: str = option(DEFAULT_PROMPT, "judge teachers: the prompt, with {query} and {passage}")
    max_length: int | None = option(None, "tokens of a (query, passage) pair (default 512); retriever teachers: of "
                                          "a passage (default the model's)")
    batch_size: int = option(32, "pairs scored at once")

    def __post_init__(self) -> None:
        if self.batch_size < 1 or (self.max_length is not None and self.max_length < 2):
            raise InputError("batch_size must be at least 1 and max_length at least 2")


@dataclass
class MiningSettings:
    """Which candidates of a run become hard negatives (``llmret mine``)."""

    depth_from: int = option(0, "first rank taken as a candidate (0-based)")
    depth_to: int = option(100, "candidates are ranks depth_from .. depth_to - 1")
    count: int = option(20, "negatives kept per query")
    margin: float | None = option(None, "drop candidates scored above (weakest positive - margin)")
    max_teacher_score: float | None = option(None, "drop candidates the teacher scores above this")

    def __post_init__(self) -> None:
        if self.count < 1:
            raise InputError(f"count must be at least 1 negative a query, not {self.count}")
        if not 0 <= self.depth_from < self.depth_to:
            raise InputError(f"the candidate ranks must satisfy 0 <= depth_from < depth_to, not {self.depth_from} "
                             f"and {self.depth_to}")
