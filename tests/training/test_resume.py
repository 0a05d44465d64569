"""An interrupted ``subplug train`` (a real SIGINT, as Ctrl-C sends) resumes from its last
checkpoint when the same command runs again; a finished run says so when run again; a
changed command is refused, naming what changed."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest
from subplug import cache
from subplug.cli import main
from training_setup import write_manifest

RECIPE = """\
extends = "gemma3n-en-mn"

[model]
base = "tiny-base"

[data]
holdout = 0.0
instructions = [1]

[train]
per_device_train_batch_size = 2
gradient_accumulation_steps = 1
learning_rate = 1e-3
max_steps = 16
gradient_checkpointing = true
logging_steps = 1
save_steps = 3
"""


def _interrupt_after(checkpoint: Path, stop: threading.Event) -> threading.Thread:
    """Send this process SIGINT (once) as soon as ``checkpoint`` is complete."""

    def watch() -> None:
        while not stop.is_set():
            if (checkpoint / "trainer_state.json").is_file():
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _steps(text: str) -> list[int]:
    return [int(m) for m in re.findall(r"step\s+(\d+)/16", text)]


@pytest.mark.slow
def test_interrupted_training_resumes_from_the_checkpoint(
    tmp_path: Path, tiny_model_dir: Path, speech_clips, capsys, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    import torch

    monkeypatch.setenv("COLUMNS", "200")
    cache.import_model(tiny_model_dir, name="tiny-base")
    manifest = write_manifest(tmp_path / "clips.jsonl", speech_clips)
    recipe = tmp_path / "resume.toml"
    recipe.write_text(RECIPE, encoding="utf-8")
    run_dir = tmp_path / "run"
    command = [
        "train",
        "--recipe",
        str(recipe),
        "--data",
        str(manifest),
        "--name",
        "resumed",
        "--output",
        str(run_dir),
        "--device",
        "cpu",
        "--threads",
        "1",
    ]
    threads = torch.get_num_threads()
    # Ctrl-C in a terminal raises KeyboardInterrupt; a shell that started this test run in
    # the background may have set SIGINT to "ignore", which Python then keeps.
    previous_handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    stop = threading.Event()
    try:
        watcher = _interrupt_after(run_dir / "checkpoint-3", stop)
        first_code = main(command)
        stop.set()
        watcher.join()
        first = capsys.readouterr().err
        cached_after_first = {entry.name for entry in cache.list_models()}
        second_code = main(command)
        second = capsys.readouterr()
    finally:
        stop.set()
        torch.set_num_threads(threads)
        signal.signal(signal.SIGINT, previous_handler)

    # The first run stopped with one clear message and exit code 130.
    assert first_code == 130, first
    match = re.search(
        r"Training interrupted at step (\d+); the last checkpoint is checkpoint-(\d+)", first
    )
    assert match, first
    stopped, saved = int(match.group(1)), int(match.group(2))
    # The first Ctrl-C lets the step finish and saves a checkpoint there: nothing is lost.
    assert 3 <= saved == stopped < 16
    assert "Stopping after this step and saving a checkpoint" in first
    assert "Run the same command again to resume" in first and "Traceback" not in first
    assert "finished:" not in first  # it did not finish
    assert cached_after_first == {"tiny-base"}  # nothing installed by the interrupted run

    # The second run picked up at the checkpoint and finished the schedule.
    assert second_code == 0, second.err
    assert f"Resuming from checkpoint-{saved}" in second.err
    logged = _steps(second.err)
    assert logged and min(logged) == saved + 1 and max(logged) == 16
    assert f"over the {16 - saved} step(s) of this run" in second.err
    # Only the last checkpoint is kept (no evaluation here, so no "best" one).
    assert [p.name for p in run_dir.glob("checkpoint-*")] == ["checkpoint-16"]
    kept = r"Kept checkpoint-16 \(last\) in the run folder; removed \d+ other checkpoint"
    assert re.search(kept, second.err), second.err
    state = json.loads((run_dir / "checkpoint-16" / "trainer_state.json").read_text())
    history = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert history == list(range(1, 17))  # the log from before the interruption was kept
    made = json.loads((run_dir / "adapter" / "subplug-training.json").read_text())
    assert made["global_step"] == 16
    assert "resumed" in {entry.name for entry in cache.list_models()}
    assert "use it:  subplug generate --model resumed MEDIA" in second.out

    # The same command once more: the run has finished, nothing is trained or resumed.
    again = main(command)
    third = capsys.readouterr()
    assert again == 0, third.err
    assert "resumed finished training already (16 steps)" in third.err
    assert "It is installed as resumed: nothing to do" in third.err
    assert "Resuming" not in third.err and "mean training loss" not in third.err

    # Running it again with other settings is refused before any work, naming the change.
    changed = main([*command, "--force", "--set", "train.learning_rate=5e-4"])
    err = capsys.readouterr().err
    assert changed == 2 and "run-mismatch" in err and "--restart" in err
    assert "recipe.train.learning_rate: 0.001 → 0.0005" in err, err


@pytest.mark.slow
def test_a_finished_run_kept_out_of_the_cache_is_not_resumed(
    tmp_path: Path, tiny_model_dir: Path, speech_clips, capsys, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    import torch

    monkeypatch.setenv("COLUMNS", "200")
    cache.import_model(tiny_model_dir, name="tiny-base")
    manifest = write_manifest(tmp_path / "clips.jsonl", speech_clips)
    recipe = tmp_path / "resume.toml"
    recipe.write_text(RECIPE, encoding="utf-8")
    command = ["train", "--recipe", str(recipe), "--data", str(manifest), "--name", "kept"]
    command += ["--output", str(tmp_path / "run"), "--device", "cpu", "--threads", "1"]
    command += ["--no-install", "--set", "train.max_steps=2"]
    threads = torch.get_num_threads()
    try:
        assert main(command) == 0, capsys.readouterr().err
        capsys.readouterr()
        again = main(command)
    finally:
        torch.set_num_threads(threads)
    err = capsys.readouterr().err
    assert again == 0, err
    assert "kept finished training already (2 steps)" in err
    assert "Nothing to do (--restart trains it again)." in err
    for stale in ("Resuming", "mean training loss", "-:--:--", "LoRA r="):
        assert stale not in err, err
    assert {entry.name for entry in cache.list_models()} == {"tiny-base"}
