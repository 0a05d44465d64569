"""Training progress in a log file or a pipe: plain lines with the time elapsed and the ETA,
a progress line at least every minute in between, and ``finished:`` only for a run that
finished. The Trainer's own state objects drive the display, a settable clock its timing."""

from __future__ import annotations

import io

from rich.console import Console
from subplug_training.progress import (
    PlainTrainingProgress,
    RichTrainingProgress,
    clock_text,
    training_progress,
)
from transformers import TrainerControl, TrainerState, TrainingArguments


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200, soft_wrap=True), out


def test_plain_lines_carry_elapsed_time_and_eta(tmp_path) -> None:  # type: ignore[no-untyped-def]
    console, out = _console()
    assert not console.is_terminal
    clock = Clock()
    progress = training_progress(console)
    assert isinstance(progress, PlainTrainingProgress)
    progress.clock = clock
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    state, control = TrainerState(max_steps=100, global_step=20), TrainerControl()
    progress.on_train_begin(args, state, control)  # resumed at step 20

    state.global_step = 30
    clock.now += 50  # 10 steps in 50 s: 70 more steps take 350 s
    progress.on_log(args, state, control, logs={"loss": 1.5, "learning_rate": 2e-4, "epoch": 0.3})
    progress.on_step_end(args, state, control)  # a line was printed just now: no extra line
    state.global_step = 31
    clock.now += 59
    progress.on_step_end(args, state, control)  # 59 s since the last line: still quiet
    state.global_step = 32
    clock.now += 2
    progress.on_step_end(args, state, control)  # a minute without a line: one now
    state.global_step = 33
    progress.on_step_end(args, state, control)
    lines = out.getvalue().splitlines()
    assert lines == [
        "step     30/100  loss 1.5000  lr 0.0002  epoch 0.30  | elapsed 0:00:50, ETA 0:05:50",
        "step     32/100 (32 %)  | elapsed 0:01:51, ETA 0:10:29",
    ]


def test_finished_only_when_the_schedule_is_done(tmp_path) -> None:  # type: ignore[no-untyped-def]
    console, out = _console()
    progress = PlainTrainingProgress(console, clock=Clock())
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    state, control = TrainerState(max_steps=16, global_step=0), TrainerControl()
    progress.on_train_begin(args, state, control)
    state.global_step = 13  # stopped early (Ctrl-C): the Trainer still logs its summary
    progress.on_log(args, state, control, logs={"train_loss": 0.5, "train_runtime": 3.0})
    assert "finished" not in out.getvalue()
    state.global_step = 16
    progress.on_log(args, state, control, logs={"train_loss": 0.4, "train_runtime": 4.0})
    assert out.getvalue().splitlines() == [
        "finished: 16 steps, mean training loss 0.4000 over the 16 step(s) of this run, 4 s"
    ]


def test_a_finished_schedule_resumed_reports_no_made_up_loss(tmp_path) -> None:  # type: ignore[no-untyped-def]
    console, out = _console()
    progress = PlainTrainingProgress(console, clock=Clock())
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    state, control = TrainerState(max_steps=16, global_step=16), TrainerControl()
    progress.on_train_begin(args, state, control)
    progress.on_log(args, state, control, logs={"train_loss": 0.0, "train_runtime": 0.0})
    assert out.getvalue().splitlines() == ["finished: 16 steps"]


def test_a_terminal_gets_the_live_bar() -> None:
    console = Console(file=io.StringIO(), force_terminal=True)
    assert isinstance(training_progress(console), RichTrainingProgress)
    assert clock_text(None) == "-:--:--" and clock_text(3725.4) == "1:02:05"
