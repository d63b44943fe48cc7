"""Two-stage training as Lion runs it: MNTP first, then retrieval training that continues the MNTP
LoRA adapter; in a study the stage is keyed by its settings, run once and shared by the cells that
need it; and a study plan shows every setting with the layer that set it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from llmret import studies
from llmret.cli import main
from llmret.encoders.settings import EncoderSettings
from llmret.training.mntp import MNTPSettings, run_mntp
from llmret.training.train import TrainSettings, train

from helpers import WORDS, random_texts


def _corpus(path: Path) -> Path:
    path.write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(random_texts(32, seed=6))))
    return path


@pytest.fixture(scope="module")
def mntp_final(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("mntp")
    return run_mntp(MNTPSettings(model=str(tiny_llama), data=str(_corpus(tmp / "corpus.jsonl")),
                                 output_dir=str(tmp / "run"), max_steps=3, batch_size=8, max_length=16,
                                 learning_rate=5e-2, mask_token=WORDS[-1], lora_dropout=0.05))


@pytest.mark.parametrize("retriever", ["dense", "sparse"])
def test_continuing_the_mntp_adapter_starts_from_its_weights(mntp_final: Path, tiny_llama: Path, tmp_path: Path,
                                                             retriever: str) -> None:
    """At learning rate 0 the continued adapter stays the MNTP adapter: the same A and B, its dropout, and a
    model that encodes as transformers + peft do with that adapter over the original base, bidirectionally."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from helpers import write_training_file

    data = write_training_file(tmp_path / "train.jsonl", 8, (1, 3))
    out = tmp_path / "run"
    final = train(TrainSettings(train_data=str(data), output_dir=str(out), retriever=retriever, batch_size=4,
                                group_size=2, max_steps=1, learning_rate=0.0, continue_adapter=True,
                                encoder=EncoderSettings(model=str(mntp_final))))
    canonical = lambda key: key.replace("base_model.model.", "").removeprefix("model.")  # noqa: E731
    mntp = {canonical(k): v for k, v in load_file(mntp_final / "adapter" / "adapter_model.safetensors").items()}
    trained = {canonical(k): v for k, v in load_file(final / "adapter_model.safetensors").items()}
    assert mntp.keys() == trained.keys() and len(mntp) > 0
    for key in mntp:
        torch.testing.assert_close(trained[key], mntp[key], rtol=0, atol=0, msg=key)
    assert json.loads((final / "adapter_config.json").read_text())["lora_dropout"] == 0.05
    saved = json.loads((final / "llmret.json").read_text())
    assert saved["base_model"] == str(tiny_llama) and saved["model_info"]["bidirectional"]

    from llmret.encoders.base import bidirectional_mask
    from llmret.encoders.registry import load_encoder

    encoder = load_encoder(retriever, EncoderSettings(model=str(final)))
    ids = encoder.collate(encoder.tokenize(["alpha beta gamma delta red river"], 16))  # unpadded: positions 0..
    with torch.no_grad():
        ours = encoder.model(**encoder.model_inputs(ids["input_ids"], ids["attention_mask"]))
        # the reference: the adapter over the causal LM it was trained on, with transformers' and peft's own code
        base = AutoModelForCausalLM.from_pretrained(tiny_llama)
        reference = PeftModel.from_pretrained(base, mntp_final / "adapter").merge_and_unload()
        mask = bidirectional_mask(ids["attention_mask"], reference.config)
        theirs = reference(input_ids=ids["input_ids"], attention_mask=mask, output_hidden_states=True)
    if retriever == "dense":
        torch.testing.assert_close(ours.last_hidden_state, theirs.hidden_states[-1], rtol=1e-5, atol=1e-5)
    else:
        torch.testing.assert_close(ours.logits, theirs.logits, rtol=1e-5, atol=1e-5)


def test_continue_adapter_needs_an_mntp_folder(tiny_llama: Path, tmp_path: Path) -> None:
    from helpers import write_training_file

    data = write_training_file(tmp_path / "train.jsonl", 8)
    with pytest.raises(ValueError, match="continue_adapter needs the model to be an MNTP run's final folder"):
        train(TrainSettings(train_data=str(data), output_dir=str(tmp_path / "o"), continue_adapter=True, batch_size=4,
                            encoder=EncoderSettings(model=str(tiny_llama))))


def test_mntp_schedule_can_outlast_the_run(tiny_llama: Path, tmp_path: Path) -> None:
    """Lion's MNTP decays over one epoch and stops at 10,000 steps: the rate at the stop is not zero."""
    corpus = _corpus(tmp_path / "corpus.jsonl")
    run_mntp(MNTPSettings(model=str(tiny_llama), data=str(corpus), output_dir=str(tmp_path / "m"), max_steps=2,
                          batch_size=2, max_length=8, learning_rate=1e-3, warmup_ratio=0.0, schedule_epochs=1.0,
                          mask_token=WORDS[-1]))
    rates = [json.loads(line)["lr"] for line in (tmp_path / "m" / "log.jsonl").read_text().splitlines()]
    per_epoch = _steps_per_epoch(tmp_path / "m", corpus)
    assert per_epoch > 4  # the schedule is longer than the run
    assert rates == pytest.approx([1e-3 * (1 - step / per_epoch) for step in (1, 2)], rel=1e-6)


def _steps_per_epoch(run: Path, corpus: Path) -> int:
    """Steps in one epoch of the run's packed blocks, as MNTP counts them."""
    from transformers import AutoTokenizer

    from llmret.training.mntp import corpus_texts, pack_blocks

    config = yaml.safe_load((run / "mntp_config.yaml").read_text())
    tok = AutoTokenizer.from_pretrained(config["model"])
    return len(pack_blocks(tok(corpus_texts(str(corpus)))["input_ids"], config["max_length"])) // config["batch_size"]


def _stage_study(tmp_path: Path, tiny_llama: Path) -> Path:
    from helpers import write_beir_folder, write_training_file

    docs = {f"d{i}": text for i, text in enumerate(random_texts(16, seed=21, min_words=5))}
    queries = {f"q{i}": " ".join(docs[f"d{i}"].split()[:3]) for i in range(8)}
    data = write_beir_folder(tmp_path / "data", docs, queries, {f"q{i}": {f"d{i}": 1} for i in range(8)})
    spec = {
        "name": "staged", "out": str(tmp_path / "study"),
        "datasets": [{"data": str(data)}], "measures": ["nDCG@10"],
        "systems": [{"name": "lion-like", "retriever": "dense",
                     "encoder": {"model": str(tiny_llama), "query_max_length": 12, "passage_max_length": 20},
                     "mntp": {"data": str(_corpus(tmp_path / "corpus.jsonl")), "max_steps": 2, "batch_size": 4,
                              "max_length": 16, "mask_token": WORDS[-1]},
                     "train": {"recipe": "lion-dense", "train_data": str(write_training_file(tmp_path / "t.jsonl", 8)),
                               "batch_size": 4, "group_size": 2, "lora_r": 4, "continue_adapter": True}}],
        "grid": {"train.max_steps": [1, 2]},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_study_runs_its_mntp_stage_once_for_the_cells_that_share_it(tiny_llama: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    spec = studies.StudySpec.read(_stage_study(tmp_path, tiny_llama))
    records = studies.run(spec)
    stages = sorted((spec.folder / "train").glob("mntp-*"))
    assert len(records) == 2 and len(stages) == 1 and (stages[0] / "final" / "adapter").is_dir()
    trainings = sorted((spec.folder / "train").glob("dense-*"))
    assert len(trainings) == 2
    for folder in trainings:
        used = yaml.safe_load((folder / "train_config.yaml").read_text())
        assert used["encoder"]["model"] == str(stages[0] / "final") and used["continue_adapter"]
        origins = json.loads((folder / "settings-origins.json").read_text())["origins"]
        assert origins["encoder.model"] == "stage mntp" and origins["max_steps"] == "grid"
        assert origins["learning_rate"] == "recipe lion-dense" and origins["group_size"] == "study"
    assert main(["study", "plan", str(spec.source), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert [c["cell"] for c in plan] == ["lion-like [max_steps=1]", "lion-like [max_steps=2]"]
    first = plan[0]
    assert first["train"]["encoder.model"] == {"value": f"{stages[0]}/final", "from": "stage mntp"}
    assert first["train"]["temperature"] == {"value": 0.01, "from": "recipe lion-dense"}
    assert first["train"]["seed"] == {"value": 42, "from": "default"}
    assert first["stage"]["mntp"]["max_steps"] == {"value": 2, "from": "study"}
    assert first["stage"]["mntp"]["learning_rate"]["from"] == "default"
    assert {o["key"] for o in first["recipe_overrides"]} == {"group_size", "encoder.query_max_length",
                                                             "encoder.passage_max_length"}
    assert main(["study", "plan", str(spec.source)]) == 0
    text = capsys.readouterr().out
    assert "train.group_size = 2  [study]" in text and "! group_size: 2 from study replaces recipe lion-dense's 17" in text
