"""Training on several processes (gloo, CPU) behaves as on one: the learning rate follows the global step,
bidirectional decoders work under DDP, and a killed run resumed on every rank ends bit-identical."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import torch

pytestmark = pytest.mark.slow  # several processes: the CI tier

SCRIPT = '''
import json, os, sys
from llmret.encoders.settings import EncoderSettings
from llmret.training.train import TrainSettings, train

spec = json.loads(sys.argv[1])
encoder = EncoderSettings(**spec.pop("encoder"))
kill_at = spec.pop("kill_at", None)
resume = spec.pop("resume", False)

def on_step(step, loss):
    if step == kill_at:
        raise KeyboardInterrupt("killed")

train(TrainSettings(encoder=encoder, **spec), resume=resume, on_step=on_step)

from llmret.losses.distributed import _KEPT
# several processes: the loop holds the group until exit (see keep_group_until_exit)
assert bool(_KEPT) == (os.environ["WORLD_SIZE"] != "1"), _KEPT
'''


def launch(tmp_path: Path, processes: int, spec: dict, code: str = SCRIPT,
           timeout: int = 300) -> subprocess.CompletedProcess:
    script = tmp_path / "run_train.py"
    script.write_text(code)
    # torchrun starts the processes; accelerate joins them into one gloo group on the CPU.
    # PYTHONFAULTHANDLER: a worker sent SIGABRT prints every thread's Python stack
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true", "PYTHONFAULTHANDLER": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "--master_port",
           str(29500 + os.getpid() % 1000), str(script), json.dumps(spec)]
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as run:
        try:
            out, err = run.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            # a run that does not end tells where its workers stand, then is killed whole: torchrun's
            # workers hold the output pipes (in their own sessions), so they go first
            workers = psutil.Process(run.pid).children(recursive=True)
            for process in workers:
                process.send_signal(signal.SIGABRT)
            psutil.wait_procs(workers, timeout=10)
            for process in [*workers, psutil.Process(run.pid)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()
            out, err = run.communicate()
            pytest.fail(f"the {processes}-process run did not end in {timeout} s:\n{err[-6000:]}")
    return subprocess.CompletedProcess(cmd, run.returncode, out, err)


def spec_for(model: Path, data: Path, out: Path, **extra: object) -> dict:
    return {"train_data": str(data), "output_dir": str(out), "batch_size": 4, "group_size": 2, "max_steps": 6,
            "logging_steps": 1, "save_steps": 2, "lora_r": 4, "lora_dropout": 0.3, "learning_rate": 1e-2,
            "warmup_ratio": 0.34, "seed": 5, "encoder": {"model": str(model), "query_max_length": 16,
                                                          "passage_max_length": 24, "bidirectional": True}, **extra}


def log_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.fixture()
def train_data(tmp_path: Path) -> Path:
    from helpers import write_training_file

    return write_training_file(tmp_path / "train.jsonl", 40, (1, 7))


def test_two_processes_follow_the_single_process_schedule_and_resume_exactly(
        tiny_llama: Path, train_data: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file
    from transformers import get_linear_schedule_with_warmup

    two = launch(tmp_path, 2, spec_for(tiny_llama, train_data, tmp_path / "two"))
    assert two.returncode == 0, two.stderr[-3000:]
    # one process's schedule, as transformers computes it: warm-up 2 steps, then linear to 0 at step 6,
    # the scheduler stepped once a global step (not once a process), each step's rate logged after it
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-2)
    schedule = get_linear_schedule_with_warmup(optimizer, 2, 6)
    expected = []
    for _ in range(6):
        optimizer.step()
        schedule.step()
        expected.append(schedule.get_last_lr()[0])
    lr_two = [r["lr"] for r in log_of(tmp_path / "two")]
    assert lr_two == pytest.approx(expected, rel=1e-9) and expected[-1] == 0.0
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoint-4").iterdir()) == ["rng-0.pt", "rng-1.pt", "state.pt"]

    killed = launch(tmp_path, 2, spec_for(tiny_llama, train_data, tmp_path / "resumed", kill_at=5))
    assert killed.returncode != 0 and not (tmp_path / "resumed" / "final").exists()
    resumed = launch(tmp_path, 2, spec_for(tiny_llama, train_data, tmp_path / "resumed", resume=True))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [r["step"] for r in log_of(tmp_path / "resumed")] == [1, 2, 3, 4, 5, 6]  # each step once
    a = load_file(tmp_path / "two" / "final" / "adapter_model.safetensors")
    b = load_file(tmp_path / "resumed" / "final" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and a
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("retriever,extra", [("dense", {"objective": "cl+kd", "grad_cache": True, "chunk_size": 2}),
                                             ("sparse", {"calibrate_terms": 8})])
def test_two_processes_train_the_single_process_adapter(tiny_llama: Path, tmp_path: Path, retriever: str,
                                                        extra: dict) -> None:
    """Negatives (and FLOPS sums) are gathered over processes, so without dropout two processes sharing a
    batch take exactly the single-process steps: InfoNCE + KD through GradCache (DDP reduction skipped
    for all chunks but the last), and sparse InfoNCE + FLOPS with a calibrated, trained term bias."""
    from safetensors.torch import load_file

    from helpers import write_training_file

    data = write_training_file(tmp_path / "scored.jsonl", 24, (1, 7), scored=True)
    adapters = []
    for processes in (1, 2):
        out = tmp_path / f"{retriever}-{processes}"
        spec = spec_for(tiny_llama, data, out, retriever=retriever, lora_dropout=0.0, max_steps=3, save_steps=0,
                        **extra)
        done = launch(tmp_path, processes, spec)
        assert done.returncode == 0, done.stderr[-3000:]
        adapters.append(load_file(out / "final" / "adapter_model.safetensors"))
        if (out / "final" / "term_bias.safetensors").is_file():
            adapters[-1]["term_bias"] = load_file(out / "final" / "term_bias.safetensors")["bias"]
    one, two = adapters
    assert ("term_bias" in one) == ("calibrate_terms" in extra)
    logs = [log_of(tmp_path / f"{retriever}-{processes}") for processes in (1, 2)]
    assert [r["flops"] for r in logs[1]] == [r["flops"] for r in logs[0]]  # the global batch's tokens, counted once
    assert [r["loss"] for r in logs[1]] == pytest.approx([r["loss"] for r in logs[0]], rel=1e-5)
    moved = 0
    for key in one:
        # atol 1e-5: Adam divides each gradient element by its own size, so the all-reduce's summation order
        # shows in an element whose gradient is near zero (weights here are ~0.1)
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=key)
        moved += int(one[key].abs().sum() > 0)
    assert moved == len(one)  # lora_B left zero would make equality trivial


ENDS = '''
import os, sys
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from llmret.losses.distributed import gather_with_grad, global_sum, keep_group_until_exit

for i in range(60):
    dist.init_process_group("gloo", init_method=f"file://{sys.argv[1]}-{i}", rank=int(os.environ["RANK"]),
                            world_size=2)
    model = DistributedDataParallel(torch.nn.Linear(3, 3))
    keep_group_until_exit()
    model(torch.ones(2, 3)).sum().backward()
    assert global_sum(torch.ones(3)).tolist() == [2.0] * 3 and gather_with_grad(torch.ones(2, 3)).shape == (4, 3)
    dist.barrier()
    dist.destroy_process_group()
    del model  # DDP's reducer drops its reference to the group
'''


def test_a_process_whose_model_outlives_its_process_group_exits(tmp_path: Path) -> None:
    """The hang at the end of a CPU run: when DDP's reducer holds the group's last reference, the
    group's destructor joins gloo's worker threads holding the GIL, while a thread may still need the
    GIL to destroy a finished collective. Without ``keep_group_until_exit`` this loop hangs within its
    60 rounds (every try here); with it, the group goes at exit, through Python, without the GIL."""
    done = launch(tmp_path, 2, {}, code=ENDS.replace("sys.argv[1]", repr(str(tmp_path / "rendezvous"))),
                  timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]


def test_the_packaged_configs_load_and_the_launch_line_runs_llmret(
        tiny_llama: Path, train_data: Path, tmp_path: Path) -> None:
    """The README's launch line, accelerate launch --config_file (packaged DDP config) -m llmret.cli train,
    runs the training a plain run does (with --cpu accelerate starts one process: several CPU processes are
    tested through torchrun above); the packaged FSDP and ZeRO-3 configs are what accelerate reads."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType
    from safetensors.torch import load_file

    from llmret.cli import main
    from llmret.training.launch import launch_config

    spec = spec_for(tiny_llama, train_data, tmp_path / "one", lora_dropout=0.0, max_steps=3, save_steps=0)
    assert launch(tmp_path, 1, spec).returncode == 0
    encoder = spec["encoder"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(launch_config("ddp")), "--cpu",
           "--num_processes", "1", "-m", "llmret.cli", "train",
           "--model", encoder["model"], "--train-data", str(train_data), "--output-dir", str(tmp_path / "ddp"),
           "--batch-size", "4", "--group-size", "2", "--max-steps", "3", "--logging-steps", "1", "--lora-r", "4",
           "--lora-dropout", "0", "--learning-rate", "1e-2", "--warmup-ratio", "0.34", "--seed", "5",
           "--query-max-length", "16", "--passage-max-length", "24", "--bidirectional"]
    done = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    one = load_file(tmp_path / "one" / "final" / "adapter_model.safetensors")
    two = load_file(tmp_path / "ddp" / "final" / "adapter_model.safetensors")
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-6, msg=key)
    assert [r["loss"] for r in log_of(tmp_path / "ddp")] == pytest.approx([r["loss"] for r in log_of(tmp_path / "one")],
                                                                         rel=1e-5)
    kinds = {name: load_config_from_file(str(launch_config(name))) for name in ("ddp", "fsdp", "deepspeed-zero3")}
    assert kinds["fsdp"].distributed_type == DistributedType.FSDP and kinds["fsdp"].fsdp_config["fsdp_version"] == 2
    assert kinds["fsdp"].fsdp_config["fsdp_state_dict_type"] == "SHARDED_STATE_DICT"
    assert kinds["deepspeed-zero3"].distributed_type == DistributedType.DEEPSPEED
    assert kinds["deepspeed-zero3"].deepspeed_config["zero_stage"] == 3
    assert main(["launch-config", "nope"]) == 2
