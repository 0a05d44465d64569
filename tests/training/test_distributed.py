"""Training in several processes, started as users start them (``torchrun``, ``accelerate
launch``): two CPU processes (gloo) train the tiny Gemma 3n on espeak-ng clips together.
One process prints, writes the run folder and installs; the effective batch stays the
recipe's; an interrupted run stops every process after the same step and resumes."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from subplug import cache
from subplug.errors import SubplugError
from subplug_training.batch import optimiser_steps, plan_batch
from subplug_training.distributed import check_launch
from training_setup import ADAPTER_NAME, BASE_NAME, CLIPS, Trained, write_manifest

#: 2 clips, every instruction each allows: 12 samples. The recipe's batch is 3 × 2 = 6
#: samples per step on one process; on two it becomes 3 × 1 × 2 = 6.
RECIPE = f"""\
extends = "gemma3n-en-mn"

[model]
base = "{BASE_NAME}"

[data]
holdout = 0.0
instructions = [1, 2, 3, 4, 5, 6, 7, 8, 9]

[train]
per_device_train_batch_size = 3
gradient_accumulation_steps = 2
learning_rate = 2e-3
lr_scheduler_type = "constant"
gradient_checkpointing = true
logging_steps = 1
"""


def _adapter_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as weights:
        return {key: tuple(weights.get_slice(key).get_shape()) for key in weights.keys()}  # noqa: SIM118


@pytest.fixture
def setup(tmp_path: Path, tiny_model_dir: Path, speech_clips, monkeypatch):  # type: ignore[no-untyped-def]
    """A model cache with the tiny base, the clips' manifest and the recipe."""
    home = tmp_path / "home"
    monkeypatch.setenv("SUBPLUG_HOME", str(home))
    cache.import_model(tiny_model_dir, name=BASE_NAME)
    manifest = write_manifest(tmp_path / "clips.jsonl", speech_clips)
    recipe = tmp_path / "mp.toml"
    recipe.write_text(RECIPE, encoding="utf-8")
    env = {**os.environ, "SUBPLUG_HOME": str(home), "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return home, manifest, recipe, env


def _torchrun(*args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "subplug",
        "train",
        *args,
    ]


def _train_args(manifest: Path, recipe: Path, name: str, *extra: str) -> list[str]:
    return [
        "--recipe",
        str(recipe),
        "--data",
        str(manifest),
        "--name",
        name,
        "--device",
        "cpu",
        "--threads",
        "1",
        *extra,
    ]


def _once(text: str, output: str) -> None:
    assert output.count(text) == 1, f"{text!r} printed {output.count(text)} times:\n{output}"


@pytest.mark.slow
def test_two_processes_train_one_adapter_and_install_it_once(setup, trained: Trained) -> None:  # type: ignore[no-untyped-def]
    home, manifest, recipe, env = setup
    run_dir = home / "training" / "mp"
    done = subprocess.run(
        _torchrun(
            *_train_args(
                manifest,
                recipe,
                "mp",
                "--set",
                "train.num_train_epochs=3",
                "--set",
                "train.save_steps=2",
            )
        ),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output

    # Every line once, from the main process; no DDP warning, nothing from rank 1.
    _once("Training mp: recipe mp, base tiny-base, on cpu, 2 processes", output)
    _once("12 training and 0 test samples", output)
    _once(
        "batch 3 × accumulation 1 × 2 processes = 6 samples per optimiser step, as the "
        "recipe's 3 × 2 on one process",
        output,
    )
    _once("LoRA r=32 on 24 modules", output)
    _once("saved checkpoint-2", output)
    _once("finished: 6 steps", output)
    _once("Installed the adapter as mp in the model cache.", output)
    _once("Kept checkpoint-6 (last) in the run folder; removed 2 other checkpoint(s)", output)
    _once("adapter: ", output)
    for noise in ("find_unused_parameters", "[rank1]", "Traceback", "Warning"):
        assert noise not in output, output

    # The recipe's batch per step: 12 samples in 3 epochs make 6 steps, one epoch per 2
    # steps, as on one process (not one epoch per step, as with twice the batch).
    state = json.loads((run_dir / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["max_steps"] == 6 == optimiser_steps(12, plan_batch(3, 2, 2), epochs=3)
    epochs = {entry["step"]: entry["epoch"] for entry in state["log_history"] if "loss" in entry}
    assert epochs[2] == pytest.approx(1.0) and epochs[6] == pytest.approx(3.0)
    assert re.search(r"step\s+2/6\s+loss \S+\s+lr \S+\s+grad norm \S+\s+epoch 1\.00", output)

    # One cache entry, complete, with every file; the same adapter a single process makes.
    entries = {entry.name: entry for entry in cache.list_models()}
    assert set(entries) == {BASE_NAME, "mp"} and entries["mp"].complete
    assert cache.verify("mp").ok
    installed = cache.resolve_model("mp").path
    assert {p.name for p in installed.iterdir()} == {
        p.name for p in (run_dir / "adapter").iterdir()
    } | {"manifest.json"}
    single = trained.home / "models" / ADAPTER_NAME
    assert _adapter_shapes(installed) == _adapter_shapes(single)
    made = json.loads((installed / "subplug-training.json").read_text())
    assert made["processes"] == 2 and made["batch"]["effective"] == 6
    # The run folder: the last checkpoint only; the cache's lock folder: only the locks
    # of its entries and of the folder (they stay: a lock is held on its file).
    assert [p.name for p in run_dir.glob("checkpoint-*")] == ["checkpoint-6"]
    assert not list(run_dir.rglob("*.lock"))
    locks = {p.name for p in (home / "locks").iterdir()}
    assert locks <= {"models.lock", f"model-{BASE_NAME}.lock", "model-mp.lock"}


@pytest.mark.slow
def test_an_interrupted_two_process_run_resumes(setup) -> None:  # type: ignore[no-untyped-def]
    home, manifest, recipe, env = setup
    run_dir = home / "training" / "mp-resume"
    command = _torchrun(
        *_train_args(
            manifest,
            recipe,
            "mp-resume",
            "--no-install",
            "--keep-checkpoints",
            "all",
            "--set",
            "train.max_steps=60",
            "--set",
            "train.save_steps=3",
        )
    )
    # Ctrl-C reaches torchrun (its processes run in sessions of their own), which passes
    # it on to each process once.
    first = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        while (
            first.poll() is None and not (run_dir / "checkpoint-3" / "trainer_state.json").is_file()
        ):
            time.sleep(0.02)
        first.send_signal(signal.SIGINT)
        output, _ = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert first.returncode != 0, output
    match = re.search(
        r"Training interrupted at step (\d+); the last checkpoint is checkpoint-(\d+)", output
    )
    assert match, output
    stopped, saved = int(match.group(1)), int(match.group(2))
    assert 3 <= stopped == saved < 60
    _once("Training interrupted", output)
    _once("Stopping after this step and saving a checkpoint", output)
    assert "finished:" not in output
    # Both processes wrote their part of the checkpoint (each its random state).
    checkpoint = run_dir / f"checkpoint-{saved}"
    assert {p.name for p in checkpoint.glob("rng_state_*.pth")} == {
        "rng_state_0.pth",
        "rng_state_1.pth",
    }

    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    output = second.stdout + second.stderr
    assert second.returncode == 0, output
    _once(f"Resuming from checkpoint-{saved}", output)
    _once("finished: 60 steps, mean training loss", output)
    steps = [int(s) for s in re.findall(r"step\s+(\d+)/60", output)]
    assert min(steps) == saved + 1 and max(steps) == 60
    state = json.loads((run_dir / "checkpoint-60" / "trainer_state.json").read_text())
    assert [e["step"] for e in state["log_history"] if "loss" in e] == list(range(1, 61))
    kept = sorted(run_dir.glob("checkpoint-*"))
    assert len(kept) == 60 // 3 + (saved % 3 != 0)  # --keep-checkpoints all
    _once(f"Kept all {len(kept)} checkpoint(s) in the run folder.", output)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.slow
def test_accelerate_launch_starts_two_processes_and_its_cpu_launcher_is_refused(setup) -> None:  # type: ignore[no-untyped-def]
    home, manifest, recipe, env = setup
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no"]
    train = _train_args(manifest, recipe, "acc", "--no-install", "--set", "train.max_steps=2")
    done = subprocess.run(
        [
            *launch,
            "--multi_gpu",
            "--num_processes",
            "2",
            "--main_process_port",
            str(_free_port()),
            "-m",
            "subplug",
            "train",
            *train,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    _once("Training acc: recipe mp, base tiny-base, on cpu, 2 processes", output)
    _once("finished: 2 steps", output)

    # (--quiet: accelerate does not repeat a failed command's error output in its own.)
    refused = subprocess.run(
        [*launch, "--quiet", "--cpu", "--num_processes", "2", "-m", "subplug", "train", *train],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0
    _once(
        "error: accelerate launch --cpu started only this process, not the several asked for",
        output,
    )
    assert "[launch-one-process]" in output and "torchrun --nproc_per_node N" in output
    assert "Training acc" not in output


def test_only_a_lone_process_of_a_several_process_launch_is_refused() -> None:
    lone = {"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    with pytest.raises(SubplugError) as error:
        check_launch(lone)
    assert error.value.reference == "launch-one-process"
    check_launch({"ACCELERATE_USE_CPU": "True"})  # accelerate launch --cpu, one process
    check_launch({**lone, "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"})  # torchrun's
    check_launch({**lone, "PMI_SIZE": "2", "PMI_RANK": "0"})  # MPI's
    check_launch({})


@pytest.mark.parametrize("targets", ["language-model", "seed"])
def test_every_lora_parameter_gets_a_gradient_in_each_step(
    tiny_model_dir: Path, speech_clips, targets: str
) -> None:  # type: ignore[no-untyped-def]
    """Why DDP runs with ``find_unused_parameters=False``: one training step with
    gradient checkpointing reaches every adapted parameter, so the search for unused
    ones (and its warning) is wasted work."""
    import torch
    from subplug.media import load_pcm
    from subplug.prompts import INSTRUCTIONS
    from subplug_training.collator import Collator
    from subplug_training.recipe import load_recipe
    from subplug_training.trainer import load_model

    recipe = load_recipe(None, [f'lora.targets="{targets}"'])
    processor, model = load_model(tiny_model_dir, recipe, dtype=torch.float32)
    if hasattr(model, "activation_checkpointing_enable"):  # transformers ≥ 5.2
        model.activation_checkpointing_enable(
            activation_checkpointing_kwargs={"use_reentrant": False}
        )
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    batch = Collator(processor)(
        [
            {"audio": load_pcm(speech_clips["en"]), "instruction": INSTRUCTIONS[0], "target": text}
            for text in (CLIPS["en"]["text_en"], CLIPS["en"]["text_mn"])
        ]
    )
    model(**batch).loss.backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert [n for n, p in trainable.items() if p.grad is None] == []
