"""A rich progress display for the transformers ``Trainer`` (instead of its tqdm bars).

One bar for the optimiser steps (resumed runs start where they stopped), and one line
per log (loss, learning rate, gradient norm), evaluation and checkpoint, printed above
the bar so the history stays on screen.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback


class RichTrainingProgress(TrainerCallback):
    """``TrainerCallback`` drawing a rich bar and printing logs, evaluations and saves."""

    def __init__(self, console: Any) -> None:
        self.console = console
        self.progress: Any = None
        self.task: Any = None
        self.last_loss: float | None = None
        self.last_eval_loss: float | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

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
            self._print("  ".join(parts))
            if self.progress is not None:
                self.progress.update(self.task, loss=f"loss {self.last_loss:.4f}")
        elif "train_loss" in logs:
            self._print(
                f"finished: {state.global_step} steps, mean training loss "
                f"{logs['train_loss']:.4f}, {logs.get('train_runtime', 0):.0f} s"
            )

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
            self._print(
                f"[cyan]evaluation[/] at step {state.global_step}: "
                f"loss {metrics['eval_loss']:.4f} on the held-out samples"
            )

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._print(f"[dim]saved checkpoint-{state.global_step}[/]")

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop the live display (also called when training is interrupted)."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def _print(self, text: str) -> None:
        console = self.progress.console if self.progress is not None else self.console
        console.print(text, highlight=False)
