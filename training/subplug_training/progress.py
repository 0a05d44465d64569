"""Training progress for the transformers ``Trainer`` (instead of its tqdm bars).

Two displays print the same lines: one per log (loss, learning rate, gradient norm,
epoch), evaluation and checkpoint, and a last ``finished:`` line only when the schedule
was completed (an interrupted run ends with its error instead).

* :class:`RichTrainingProgress`, on a terminal: a live bar for the optimiser steps
  (resumed runs start where they stopped), the lines printed above it;
* :class:`PlainTrainingProgress`, when the output goes to a file or a pipe (CI, nohup,
  cluster jobs, where a live bar shows only once, at the end): plain lines, each log
  line with the time elapsed and the ETA, and a progress line at least every
  ``every_seconds`` in between.

:func:`training_progress` picks the one that suits the console.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback


def training_progress(console: Any) -> TrainingProgress:
    """The rich bar on a terminal, plain lines otherwise."""
    if getattr(console, "is_terminal", False):
        return RichTrainingProgress(console)
    return PlainTrainingProgress(console)


def clock_text(seconds: float | None) -> str:
    """``H:MM:SS`` (``-:--:--`` when unknown)."""
    if seconds is None or seconds < 0:
        return "-:--:--"
    whole = round(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


class TrainingProgress(TrainerCallback):  # type: ignore[misc]
    """The lines both displays print; subclasses say where and add the running state."""

    def __init__(self, console: Any) -> None:
        self.console = console
        self.last_loss: float | None = None
        self.last_eval_loss: float | None = None
        self.first_step = 0
        """The step this invocation started from (a resumed run's checkpoint)."""

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.first_step = state.global_step

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        if not logs:
            return
        if "loss" in logs:
            self.last_loss = float(logs["loss"])
            parts = [f"step {state.global_step:>6}/{state.max_steps}", f"loss {logs['loss']:.4f}"]
            if "learning_rate" in logs:
                parts.append(f"lr {logs['learning_rate']:.3g}")
            if logs.get("grad_norm") is not None:
                parts.append(f"grad norm {float(logs['grad_norm']):.3g}")
            if "epoch" in logs:
                parts.append(f"epoch {logs['epoch']:.2f}")
            self.log_line("  ".join(parts), state)
        elif "train_loss" in logs and state.global_step >= state.max_steps:
            trained = state.global_step - self.first_step
            text = f"finished: {state.global_step} steps"
            if trained > 0:
                text += (
                    f", mean training loss {logs['train_loss']:.4f} over the {trained} "
                    f"step(s) of this run, {logs.get('train_runtime', 0):.0f} s"
                )
            self.print(text)

    def on_evaluate(
        self,
        args: Any,
        state: Any,
        control: Any,
        metrics: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if metrics and "eval_loss" in metrics:
            self.last_eval_loss = float(metrics["eval_loss"])
            self.print(
                f"[cyan]evaluation[/] at step {state.global_step}: "
                f"loss {metrics['eval_loss']:.4f} on the held-out samples"
            )

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.print(f"[dim]saved checkpoint-{state.global_step}[/]")

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop any live display (also called when training is interrupted)."""

    def log_line(self, text: str, state: Any) -> None:
        """Print one log line (subclasses may add the running state)."""
        self.print(text)

    def print(self, text: str) -> None:
        self.console.print(text, highlight=False)


class RichTrainingProgress(TrainingProgress):
    """A live rich bar (steps, elapsed, ETA, last loss) with the lines above it."""

    def __init__(self, console: Any) -> None:
        super().__init__(console)
        self.progress: Any = None
        self.task: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        super().on_train_begin(args, state, control, **kwargs)
        self.progress = Progress(
            TextColumn("[bold]training[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("steps"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[loss]}"),
            console=self.console,
            transient=False,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            "train", total=state.max_steps, completed=state.global_step, loss=""
        )

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def log_line(self, text: str, state: Any) -> None:
        self.print(text)
        if self.progress is not None and self.last_loss is not None:
            self.progress.update(self.task, loss=f"loss {self.last_loss:.4f}")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def print(self, text: str) -> None:
        console = self.progress.console if self.progress is not None else self.console
        console.print(text, highlight=False)


class PlainTrainingProgress(TrainingProgress):
    """Plain lines for logs and pipes: every log line ends with the time elapsed and the
    ETA, and a ``step N/M (P %)`` line is printed after any step that ends more than
    ``every_seconds`` after the last line."""

    def __init__(
        self,
        console: Any,
        *,
        every_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(console)
        self.every_seconds = every_seconds
        self.clock = clock
        self.started: float | None = None
        self.last_line = 0.0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        super().on_train_begin(args, state, control, **kwargs)
        self.started = self.last_line = self.clock()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.started is not None and self.clock() - self.last_line >= self.every_seconds:
            share = 100 * state.global_step / max(state.max_steps, 1)
            self.log_line(f"step {state.global_step:>6}/{state.max_steps} ({share:.0f} %)", state)

    def log_line(self, text: str, state: Any) -> None:
        self.print(f"{text}  | {self.timing(state)}")

    def timing(self, state: Any) -> str:
        """``elapsed 0:01:05, ETA 0:02:10`` for this run's steps so far."""
        now = self.clock()
        elapsed = now - (self.started if self.started is not None else now)
        done = state.global_step - self.first_step
        remaining = elapsed / done * (state.max_steps - state.global_step) if done > 0 else None
        return f"elapsed {clock_text(elapsed)}, ETA {clock_text(remaining)}"

    def print(self, text: str) -> None:
        self.last_line = self.clock()
        super().print(text)
