"""Contrastive fine-tuning of a dense or learned-sparse retriever: LoRA (or full) + InfoNCE, on accelerate.

Sparse training is the same loop with a :class:`SparseEncoder` and FLOPS (or L1) regularisation of
query and passage term weights, with separate weights and a quadratic warm-up (SPLADE, Lion-SP).

accelerate places the model, runs DDP/FSDP/DeepSpeed when launched with ``accelerate launch``, and
handles mixed precision. Batches are built here (not by a DataLoader) from :mod:`llmret.data.sampling`,
so that which passages step N sees depends only on the seed; with the checkpoint's RNG, optimizer
and scheduler state that makes ``--resume`` continue exactly where a killed run stopped.

Output folder: ``checkpoint-N/state.pt`` every ``save_steps``; ``final/`` (adapter or full model,
tokenizer, ``llmret.json``); ``train_config.yaml`` (the settings used); ``log.jsonl``.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from llmret.data import hf_datasets
from llmret.data.corpus import Corpus
from llmret.data.sampling import epoch_order, sample_group
from llmret.data.spec import resolve_folder
from llmret.data.teacher_scores import attach_teacher_scores, read_teacher_scores
from llmret.data.training import TrainExample, read_training, require_teacher_scores
from llmret.encoders import term_bias
from llmret.encoders.base import DTYPES, TextEncoder
from llmret.encoders.recipes import lion_logit_scale
from llmret.encoders.registry import ENCODED, encoder_class
from llmret.encoders.settings import EncoderSettings
from llmret.encoders.sparse import SparseEncoder
from llmret.encoders.term_bias import CALIBRATION_TEXTS, TermBias, zero_points
from llmret.evaluation import conventions
from llmret.evaluation.pipeline import evaluate_retriever
from llmret.losses.infonce import InfoNCELoss
from llmret.losses.kd import ListwiseKDLoss
from llmret.losses.margin_mse import MarginMSELoss
from llmret.losses.objective import Objective
from llmret.models import st_folder
from llmret.models.backbone import hand_over, load_backbone
from llmret.models.saved import SavedModel
from llmret.retrievers.factory import make_retriever
from llmret.training import budget, trackers
from llmret.training.annotate import scored_by
from llmret.training.callbacks import (
    Callback,
    EvalCallback,
)
from llmret.training.loop import Trainer, mixed_precision, run_loop
from llmret.training.mining import mined_examples
from llmret.training.mntp import ADAPTER
from llmret.training.settings import (
    LoopSettings,
    LoraSettings,
    SparseTrainingSettings,
    TrainSettings,
    resolve_temperatures,
)
from llmret.training.steps import Batch, Criterion, Regularizer, cached_step, plain_step
from llmret.training.teachers import ScoresAsRead, load_teacher
from llmret.util.errors import DataError, InputError
from llmret.util.fileio import atomic_dir, check_output, read_json
from llmret.util.settings import bookkeeping, to_dict

log = logging.getLogger(__name__)


def objective_for(settings: TrainSettings) -> Objective:
    """The loss ``settings`` train with (their temperatures resolved in place first)."""
    resolve_temperatures(settings)
    return Objective(settings.objective, InfoNCELoss(settings.temperature, settings.similarity),
                     ListwiseKDLoss(settings.kd_student_temperature, settings.kd_teacher_temperature),
                     settings.kd_weight, MarginMSELoss(settings.margin_temperature, settings.margin_negatives))


# ---- data --------------------------------------------------------------------------------------------
def load_tasks(settings: TrainSettings) -> list[list[TrainExample]]:
    """The training examples of each source in ``train_data`` (one list per task), scored by
    ``teacher`` when the objective distils."""
    if settings.teacher and settings.teacher_scores:
        raise InputError("give teacher (scores computed here) or teacher_scores (a file of them), not both")
    tasks = [load_examples(settings, spec) for spec in settings.sources]
    if settings.objective == "cl":
        return tasks
    if settings.teacher and settings.teacher_scoring == "as-read":
        return tasks  # each pair is scored for the query that reads it: every query can train, as in CL
    tasks = [with_negatives(task) for task in tasks]  # before any teacher scores: a query left out costs none
    if settings.teacher_scores:
        scores = read_teacher_scores(settings.teacher_scores)
        return [attach_teacher_scores(task, scores, settings.teacher_scores) for task in tasks]
    if settings.teacher:
        return [scored_by(task, settings.teacher, settings.teacher_max_length) for task in tasks]
    return tasks


def with_negatives(examples: list[TrainExample]) -> list[TrainExample]:
    """The examples a distillation from scores made before training can use. A query without hard
    negatives (every BM25 hit judged relevant: 1 of the built-in ``code`` task's 3,466) fills its group
    with other queries' positives, which the teacher scored for those queries, not for this one: such
    queries are left out, said in the log (scored as read, each pair is scored for its own query)."""
    kept = [e for e in examples if e.negatives]
    if len(kept) < len(examples):
        first = next(e for e in examples if not e.negatives)
        log.warning("%d of %d training queries have no hard negative (the first: '%s') and are left out of the "
                    "distillation", len(examples) - len(kept), len(examples), first.query_id)
    return kept


def task_instructions(settings: TrainSettings) -> list[str]:
    """Each source's instruction from the ``task.json`` beside its data (``task_instructions``)."""
    out = []
    for spec in settings.sources:
        folder = resolve_folder(spec, "train")
        task_file = (folder if folder.is_dir() else folder.parent) / "task.json"
        instruction = read_json(task_file).get("instruction") if task_file.is_file() else None
        if not isinstance(instruction, str) or not instruction.strip():
            raise DataError(task_file, None, "task_instructions needs an 'instruction' in a task.json beside each "
                                             f"training source; none for {spec}")
        out.append(instruction)
    return out


def load_examples(settings: TrainSettings, spec: str | None = None) -> list[TrainExample]:
    """Training examples from a JSONL file, a BEIR folder (BM25-mined negatives), a built-in task or a
    Hugging Face dataset (:mod:`llmret.data.hf_datasets`)."""
    spec = spec or settings.sources[0]
    path = resolve_folder(spec, "train")
    if hf_datasets.is_dataset(spec):
        examples = hf_datasets.read_dataset(spec)
    elif path.is_dir() and (path / "train.jsonl").is_file():
        examples = read_training(path / "train.jsonl", Corpus.from_file(path / "corpus.jsonl"))
    elif path.is_dir():
        examples = mined_examples(path)
    else:
        examples = read_training(path, Corpus.from_file(settings.corpus) if settings.corpus else None)
    if settings.max_train_queries and settings.max_train_queries > len(examples):
        log.warning("max_train_queries %d is more than the %d training queries: training on all of them",
                    settings.max_train_queries, len(examples))
    return subset(examples, settings.max_train_queries, settings.seed)


def subset(examples: list[TrainExample], size: int | None, seed: int) -> list[TrainExample]:
    """``size`` examples drawn by ``seed`` (in file order), so that smaller subsets of one seed are nested:
    quality against data then differs only by the data added."""
    if not size or size >= len(examples):
        return examples
    ranked = sorted(range(len(examples)), key=lambda i: random.Random(f"subset:{seed}:{i}").random())
    return [examples[i] for i in sorted(ranked[:size])]


def make_batch(encoder: TextEncoder, examples: list[TrainExample], indexes: list[int], epoch: int,
               settings: TrainSettings, with_teacher: bool = False, instruction: str | None = None,
               scores_as_read: ScoresAsRead | None = None) -> Batch:
    """Token ids of the queries and of their passage groups (positive first), with the teacher's scores
    of each group when the objective uses them (every process must then send them: collectives): the
    passages' own, or ``scores_as_read``'s (of each group, or of the whole batch for each query);
    ``instruction``: the task's, before each query, instead of the encoder's own."""
    groups = [sample_group(examples, i, epoch, settings.seed, settings.group_size) for i in indexes]
    teacher = None
    if with_teacher:
        rows = (scores_as_read([examples[i].query for i in indexes], groups) if scores_as_read is not None
                else [[p.score for p in group] for group in groups])
        teacher = torch.tensor(rows)
    return Batch(encoder.token_ids([examples[i].query for i in indexes], query=True, instruction=instruction),
                 encoder.token_ids([p.full_text() for group in groups for p in group], query=False), teacher)


def batch_plan(sizes: list[int], batch_size: int, epoch: int, seed: int) -> list[tuple[int, int]]:
    """(task, batch number) for each batch of one epoch. A batch never mixes tasks, so its in-batch
    negatives come from the same task (as in Luo et al.'s multi-task runs); the tasks' batches are
    interleaved in a seeded order, each task in proportion to its size. One task: its batches in order."""
    plan = [(task, number) for task, size in enumerate(sizes) for number in range(size // batch_size)]
    if len(sizes) > 1:
        random.Random(f"tasks:{seed}:{epoch}").shuffle(plan)
    return plan


def estimate_tokens_per_step(encoder: TextEncoder, examples: list[TrainExample], settings: TrainSettings,
                             sample: int = 256, instruction: str | None = None) -> float:
    """Real tokens one optimizer step processes, from the first ``sample`` examples of epoch 0's order."""
    order = epoch_order(len(examples), 0, settings.seed)[:sample]
    batch = make_batch(encoder, examples, order, 0, settings, instruction=instruction)
    return batch.tokens / len(order) * settings.batch_size * settings.grad_accum


# ---- the loop ----------------------------------------------------------------------------------------
def _term_bias(encoder: TextEncoder, examples: list[TrainExample], settings: TrainSettings) -> TermBias | None:
    """The sparse encoder's per-term bias as a trainable module: calibrated from a seeded sample of the
    training passages when ``calibrate_terms`` asks, else the one the model was saved with (if any)."""
    if settings.calibrate_terms is None:
        saved = getattr(encoder, "term_bias", None)
        return TermBias(saved) if saved is not None else None
    if not isinstance(encoder, SparseEncoder):
        raise InputError("calibrate_terms sets sparse terms' zero points: it needs --retriever sparse")
    passages = [p.full_text() for e in examples for p in (*e.positives, *e.negatives)]
    sample = random.Random(settings.seed).sample(passages, min(CALIBRATION_TEXTS, len(passages)))
    bias = zero_points(encoder.pooled_logits(sample), settings.calibrate_terms)
    log.info("zero points calibrated on %d passages for %d terms a passage", len(sample), settings.calibrate_terms)
    return TermBias(bias.to(encoder.device))


def _wrap_lora(model: torch.nn.Module, settings: LoraSettings, seed: int, lora_layers: int | None = None) -> torch.nn.Module:
    """``model`` with fresh trainable LoRA adapters (on its top ``lora_layers`` layers only, if given),
    drawn from ``seed`` alone."""
    from peft import LoraConfig, get_peft_model

    targets = settings.lora_target_modules
    if lora_layers:
        # Full names of the linear modules in the top N layers. peft's layers_to_transform cannot be used:
        # it needs explicit module names and a '.layers.' pattern that bare models (layers.0...) lack.
        total = int(model.config.num_hidden_layers)
        keep = set(range(total - lora_layers, total))
        wanted = None if targets == "all-linear" else set([targets] if isinstance(targets, str) else targets)
        targets = [name for name, module in model.named_modules()
                   if isinstance(module, torch.nn.Linear) and (m := re.search(r"(?:^|\.)(\d+)\.", name))
                   and int(m.group(1)) in keep and (wanted is None or name.rsplit(".", 1)[-1] in wanted)]
    config = LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                        target_modules=targets, bias="none")
    # The adapters' initial values must not depend on what ran before them: converting a GGUF file on
    # first use draws random numbers that loading the cached conversion does not, and the same command
    # trained to a different model on an empty cache.
    torch.manual_seed(seed)
    return get_peft_model(model, config)


def mntp_stage(folder: str) -> SavedModel:
    """The description of an MNTP run's output ``folder`` whose unmerged adapter training continues."""
    saved = SavedModel.read(folder) if Path(folder).is_dir() else None
    if saved is None or "mntp" not in saved.adaptation or not (Path(folder) / ADAPTER / "adapter_config.json").is_file():
        raise InputError(f"continue_adapter needs the model to be an MNTP run's final folder (llmret mntp) with its "
                         f"adapter/ inside; {folder} is not")
    return saved


def _canonical(key: str) -> str:
    """A LoRA weight's name without the wrappers around the transformer: peft's ``base_model.model.`` and a
    causal LM's ``model.``, so an adapter trained over the LM (MNTP) fits the bare model (dense) too."""
    key = key.removeprefix("base_model.model.")
    return key.removeprefix("model.")


def continue_lora(model: torch.nn.Module, adapter: Path) -> torch.nn.Module:
    """``model`` with the LoRA adapter saved in ``adapter`` attached, trainable, every weight loaded.

    The adapter may have been trained over the causal LM (MNTP reads the LM head) while a dense retriever
    loads the bare transformer: names are matched without those wrappers (what Lion's
    lora_rewrite_from_mntp_to_bimodel does to its files), and a weight left over or missing is an error.
    """
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file

    config = LoraConfig.from_pretrained(str(adapter))
    config.inference_mode = False
    if not isinstance(config.target_modules, str):  # peft saves the full names it matched over the LM
        config.target_modules = sorted({name.rsplit(".", 1)[-1] for name in config.target_modules})
    model = get_peft_model(model, config)
    wanted = {_canonical(key): key for key in get_peft_model_state_dict(model)}
    saved = load_file(str(adapter / "adapter_model.safetensors"))
    state = {wanted[_canonical(key)]: value for key, value in saved.items() if _canonical(key) in wanted}
    if len(state) != len(saved) or len(state) != len(wanted):
        extra = sorted(set(map(_canonical, saved)) - set(wanted))[:3]
        missing = sorted(set(wanted) - set(map(_canonical, saved)))[:3]
        raise InputError(f"{adapter}: the adapter does not fit the model (unmatched {extra}, missing {missing})")
    set_peft_model_state_dict(model, state)
    log.info("continuing the adapter in %s (r %d, alpha %s, dropout %s)", adapter, config.r, config.lora_alpha,
             config.lora_dropout)
    return model


def check_settings(settings: TrainSettings, processes: int) -> None:
    """Refuse settings that cannot train, and an output folder that cannot be written, before any data or
    model loads."""
    check_output(settings.output_dir)
    if settings.batch_size % processes:
        # Every process must run as many forward passes as the others, or DDP's collectives deadlock.
        raise InputError(f"batch_size {settings.batch_size} does not split evenly over {processes} processes")
    if settings.budget_flops is not None and settings.max_steps is not None:
        raise InputError("give --budget-flops or --max-steps, not both: the budget decides the number of steps")
    if settings.chunk_size < 1 or (settings.max_train_queries is not None and settings.max_train_queries < 1):
        raise InputError("chunk_size and max_train_queries must be at least 1")
    if settings.eval_data and not settings.eval_steps:
        raise InputError("--eval-data needs --eval-steps: the steps at which to evaluate")
    if settings.retriever not in ENCODED:
        raise InputError(f"retriever must be {' or '.join(ENCODED)}, not '{settings.retriever}'")
    if settings.recipe and not getattr(settings, "recipe_applied", False):
        raise InputError(f"recipe '{settings.recipe}' was named but not applied: build the settings with "
                         "TrainSettings.from_dict({'recipe': ...}) (the CLI and config files do)")
    if settings.continue_adapter and not settings.lora:
        raise InputError("continue_adapter trains the MNTP stage's LoRA adapter: it needs lora")
    sparse = settings.retriever == "sparse"
    if settings.top_k_in_training and not (sparse and (settings.encoder.query_top_k or settings.encoder.passage_top_k)):
        raise InputError("top_k_in_training needs a sparse retriever with query_top_k or passage_top_k")
    if settings.task_instructions and settings.encoder.instruction:
        raise InputError("give task_instructions or encoder.instruction, not both")
    if settings.teacher_scoring == "as-read" and not settings.teacher:
        raise InputError("teacher_scoring as-read needs a teacher to score with (teacher_scores are read, not scored)")
    if settings.kd_in_batch and (settings.objective not in ("kd", "cl+kd") or settings.teacher_scoring != "as-read"):
        raise InputError("kd_in_batch distils kd or cl+kd from a teacher scoring as read (teacher_scoring as-read): "
                         "scores made before training cover each query's own group only")


def load_student(settings: TrainSettings, device: Any) -> tuple[TextEncoder, SavedModel | None]:
    """The encoder training starts from, and the MNTP run whose adapter it continues (if any)."""
    sparse = settings.retriever == "sparse"
    stage = mntp_stage(settings.encoder.model) if settings.continue_adapter else None
    if stage is not None and settings.encoder.bidirectional is None:
        settings.encoder.bidirectional = True  # what MNTP adapted the adapter to
    base = stage.base_model if stage is not None else settings.encoder.model
    backbone = load_backbone(base, dtype=DTYPES[settings.encoder.dtype or "float32"], lm_head=sparse)
    if settings.recipe == "lion-sparse" and settings.encoder.logit_scale is None:
        config = backbone.model.config
        config = config.get_text_config() if hasattr(config, "get_text_config") else config
        settings.encoder.logit_scale = lion_logit_scale(int(config.hidden_size))  # saved with the model
    encoder = encoder_class(settings.retriever)(backbone, settings.encoder, device)
    adapted = stage is not None or (backbone.saved is not None and "mntp" in backbone.saved.adaptation)
    if encoder.info.kind == "decoder" and encoder.info.bidirectional and not adapted:
        log.warning("%s reads bidirectionally without an MNTP stage: a causal LM has never seen the future, "
                    "and Lion adapts it first (llmret mntp, then --continue-adapter)", settings.encoder.model)
    return encoder, stage


def trainable_model(encoder: TextEncoder, settings: TrainSettings, stage: SavedModel | None,
                    bias: TermBias | None) -> torch.nn.Module:
    """The encoder's model as it trains: checkpointed activations if asked, with the MNTP stage's adapter,
    fresh LoRA adapters or neither (full fine-tuning), and the sparse term bias as a submodule (trained,
    checkpointed, restored and synced with the model)."""
    model = encoder.model
    if settings.grad_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if stage is not None:
        model = continue_lora(model, Path(settings.encoder.model) / ADAPTER)
    elif settings.lora:
        model = _wrap_lora(model, settings.part(LoraSettings), settings.seed, settings.lora_layers)
    if bias is not None:
        model.term_bias = bias
        encoder.term_bias = bias.bias
    model.train()
    return model


def regularizer_for(settings: SparseTrainingSettings, total: int, cut: tuple[int | None, int | None]) -> Regularizer:
    """The sparse regulariser of a ``total``-step run (its warm-up in steps; ``cut``: the top-k kept of
    queries and passages in training)."""
    warmup = settings.reg_warmup_steps if settings.reg_warmup_steps is not None else int(settings.reg_warmup_ratio * total)
    return Regularizer(settings.regularizer, settings.query_reg_weight, settings.passage_reg_weight, warmup, *cut)


def train(settings: TrainSettings, *, resume: bool = False, force: bool = False,
          on_step: Callable[[int, float], None] | None = None, callbacks: Sequence[Callback] = ()) -> Path:
    """Train and return the folder of the final model (``OUTPUT/final``).

    ``resume`` continues from the newest checkpoint; settings that differ from the ones the run
    started with are an error naming them (``force`` accepts them). ``callbacks`` run after each
    step, after logging, checkpoints and evaluation; ``on_step(step, loss)`` is the short form.
    """
    # long: micro_step is a closure over the run's tasks, encoder, criterion and plan
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    accelerator = Accelerator(mixed_precision=mixed_precision(settings.mixed_precision),
                              gradient_accumulation_steps=settings.grad_accum,
                              **trackers.accelerator_options(settings.report_to, settings.output_dir))
    set_seed(settings.seed, device_specific=True)  # each process draws its own dropout masks
    check_backend(settings, accelerator)
    check_settings(settings, accelerator.num_processes)
    for override in getattr(settings, "overrides", []):
        log.warning("recipe value replaced: %s", override)
    objective = objective_for(settings)  # resolves the temperatures: the saved config shows the values used
    tasks = load_tasks(settings)
    examples = [e for task in tasks for e in task]
    scores_as_read = None
    if objective.needs_teacher and settings.teacher_scoring == "as-read":
        scores_as_read = ScoresAsRead(load_teacher(settings.teacher, max_length=settings.teacher_max_length,
                                                   device=str(accelerator.device)), settings.kd_in_batch)
    elif objective.needs_teacher:
        require_teacher_scores(examples, f"objective '{settings.objective}'")  # before the model loads
    instructions = task_instructions(settings) if settings.task_instructions else None
    encoder, stage = load_student(settings, accelerator.device)
    used = {**to_dict(settings), "encoder": {"model": settings.encoder.model, **to_dict(encoder.settings)}}
    model = trainable_model(encoder, settings, stage, _term_bias(encoder, examples, settings))
    set_seed(settings.seed, device_specific=True)  # again: how the model loaded (converted now or cached) drew numbers

    sizes = [len(task) for task in tasks]
    steps_per_epoch = len(batch_plan(sizes, settings.batch_size, 0, settings.seed)) // settings.grad_accum
    if steps_per_epoch == 0:
        raise InputError(f"{', '.join(map(str, sizes))} training queries are fewer than one step's "
                         f"{settings.batch_size * settings.grad_accum}; lower batch_size or grad_accum")
    tokens = estimate_tokens_per_step(encoder, examples, settings, instruction=instructions[0] if instructions else None)
    compute = budget.plan(model, settings.lora, settings.grad_checkpointing or settings.grad_cache, tokens,
                          settings.budget_flops)
    total = compute.steps or settings.max_steps or math.ceil(steps_per_epoch * settings.epochs)
    log.info("%d steps of ~%.3g FLOPs (%.3g per token, %d of %d parameters trained%s)", total, compute.flops_per_step,
             compute.flops_per_token, compute.trainable, compute.parameters, ", LoRA" if settings.lora else "")
    cut = (encoder.settings.query_top_k, encoder.settings.passage_top_k) if settings.top_k_in_training else (None, None)
    sparse = settings.retriever == "sparse"
    criterion = Criterion(objective, regularizer_for(settings.part(SparseTrainingSettings), total, cut) if sparse else None)
    world, rank = accelerator.num_processes, accelerator.process_index

    @functools.lru_cache(maxsize=2)  # one epoch's plan, made once rather than at every micro-step
    def plan(epoch: int) -> list[tuple[int, int]]:
        return batch_plan(sizes, settings.batch_size, epoch, settings.seed)

    def micro_step(prepared: torch.nn.Module, step: int, micro: int) -> tuple[dict[str, float], int]:
        epoch, within = divmod(step, steps_per_epoch)
        task, number = plan(epoch)[within * settings.grad_accum + micro]
        begin = number * settings.batch_size
        chosen = tasks[task]
        indexes = epoch_order(len(chosen), epoch, settings.seed)[begin:begin + settings.batch_size][rank::world]
        batch = make_batch(encoder, chosen, indexes, epoch, settings, objective.needs_teacher,
                           instructions[task] if instructions else None, scores_as_read)
        # the regulariser's warm-up position: optimizer steps, or micro-batches counted from 1 (Lion's)
        at = step * settings.grad_accum + micro + 1 if settings.reg_warmup_unit == "micro-batch" else step
        if settings.grad_cache:
            parts = cached_step(encoder, batch, criterion, at, settings.chunk_size, accelerator.backward,
                                lambda: accelerator.no_sync(prepared))
        else:
            parts = plain_step(encoder, batch, criterion, at, settings.batch_size, accelerator.backward)
        return parts, batch.tokens

    def use_prepared(prepared: torch.nn.Module) -> None:
        encoder.model = prepared

    trainer = Trainer(bookkeeping=frozenset(bookkeeping(TrainSettings)), micro_batch=settings.batch_size // world)
    evaluate = _checkpoint_evaluator(settings) if settings.eval_data else None
    final = run_loop(accelerator, model, micro_step, total, settings.part(LoopSettings), used, trainer=trainer,
                     resume=resume, force=force,
                     save_model=lambda unwrapped, folder, state_dict: save_final(folder, unwrapped, encoder, settings,
                                                                                  instructions, state_dict),
                     prepared=use_prepared, callbacks=[EvalCallback(settings.eval_steps, evaluate), *callbacks],
                     on_step=on_step, flops_per_token=compute.flops_per_token,
                     records={"compute.json": {**compute.to_json(), "steps": total},
                              "settings-origins.json": origins_record(settings)})
    # A study evaluates the model next: it gets it as it is, merged, when nothing but the LoRA weights sets
    # it apart from what loading final/ gives (no MNTP adapter or term bias inside, no autocast or
    # checkpointing wrapper, one process holding all of it)
    if (settings.lora and stage is None and getattr(encoder, "term_bias", None) is None and world == 1
            and accelerator.mixed_precision == "no" and not settings.grad_checkpointing):
        hand_over(final, lambda: accelerator.unwrap_model(model).merge_and_unload(), encoder.backbone,
                  dtype=DTYPES[settings.encoder.dtype or "float32"], lm_head=sparse)
    return final


def origins_record(settings: TrainSettings) -> dict[str, Any]:
    """Where each setting came from (layer per dotted key; unnamed ones are defaults) and the recipe values
    replaced: written beside the settings a run used, so a cell's folder says what overrode its recipe."""
    return {"origins": dict(getattr(settings, "origins", {})),
            "recipe_overrides": [asdict(o) for o in getattr(settings, "overrides", [])]}


def check_backend(settings: TrainSettings, accelerator: Any) -> None:
    """Refuse GradCache under DeepSpeed, before any work. GradCache backpropagates the loss over the
    cached vectors first (through ``accelerator.backward``, for loss scaling and accumulation) and the
    chunks' forward passes after it; under DeepSpeed that backward also steps the engine, so the
    optimizer would step before the batch's gradients exist, and every chunk's backward would count as
    a micro-step. FSDP and DDP step only where the loop says (after the last chunk)."""
    from accelerate.utils import DistributedType

    if settings.grad_cache and accelerator.distributed_type == DistributedType.DEEPSPEED:
        raise InputError("grad_cache does not run under DeepSpeed (its backward also steps the optimizer, before "
                         "the chunks' gradients exist): launch with FSDP (llmret launch-config fsdp) or DDP, or "
                         "train without grad_cache")


def _checkpoint_evaluator(settings: TrainSettings) -> Callable[[Path], dict[str, float]]:
    """Scores of a saved checkpoint model on ``eval_data`` under that data's rules."""
    data, rules = conventions.load(settings.eval_data or "", settings.eval_split)

    def evaluate(folder: Path) -> dict[str, float]:
        retriever = make_retriever(settings.retriever, EncoderSettings(model=str(folder)), rules=rules, progress=False)
        result = evaluate_retriever(retriever, data, folder.parent / "eval", rules=rules)
        return result.evaluation.aggregate

    return evaluate


def save_final(folder: Path, model: torch.nn.Module, encoder: TextEncoder, settings: TrainSettings,
               instructions: list[str] | None = None, state_dict: dict[str, torch.Tensor] | None = None) -> None:
    """The trained model (a peft adapter folder, or a full model) with its description (llmret.json).

    A full model over a sentence-transformers folder keeps its Dense head as module files, so the
    folder encodes as the trained model did. A model trained with per-task ``instructions`` saves
    them, and no instruction of its own: each dataset's own is used when it is evaluated.
    ``state_dict``: the full weights gathered from FSDP / ZeRO-3 shards (the model itself holds shards).
    """
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp, **({"state_dict": state_dict} if state_dict is not None else {}))
        encoder.tokenizer.save_pretrained(tmp)
        if not settings.lora and encoder.head is not None:
            info = encoder.info
            st_folder.write(tmp, pooling=info.pooling, normalize=info.normalize, max_length=info.max_length,
                            dim=int(model.config.hidden_size), lowercase=info.lowercase, head=encoder.head)
        if getattr(encoder, "term_bias", None) is not None:
            term_bias.save(encoder.term_bias, tmp)
        explicit = encoder.settings.explicit()
        if instructions:
            explicit["instruction"] = ""
        base = mntp_stage(settings.encoder.model).base_model if settings.continue_adapter else settings.encoder.model
        SavedModel(base_model=base, retriever=encoder.retriever, lora=settings.lora,
                   model_info=encoder.info, encoder=explicit,
                   task_instructions=dict(zip(settings.sources, instructions or []))).write(tmp)
