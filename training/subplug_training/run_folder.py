"""The run folder of ``subplug train`` and what a rerun finds in it.

``--output DIR`` (by default ``<subplug home>/training/<name>``) holds:

* ``run.json``: the settings the run was started with (recipe, data, base, name); a
  rerun continues only a run with the same settings, and otherwise names the values
  that changed (:func:`settings_changes`);
* ``data-report.json``: rows kept and dropped per source, with reasons;
* ``checkpoint-N/``: the Trainer's checkpoints. One is complete once its
  ``trainer_state.json`` (written last) is there; a rerun resumes from the newest
  complete one and removes any cut off while being saved. After a finished run only the
  last and the best are kept (:func:`prune_checkpoints`), unless asked to keep all;
* ``adapter/``: the finished adapter, with ``subplug-training.json`` (how it was made)
  written last, so its presence means the run finished (:func:`finished_run`).

Only the main process of a multi-process run writes or removes anything here.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUN_FILE = "run.json"
REPORT_FILE = "data-report.json"
ADAPTER_DIR = "adapter"
#: Written into the adapter folder (and so into the cache entry): how it was made.
PROVENANCE_FILE = "subplug-training.json"
KEEP_CHOICES = ("last", "all")

_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON atomically (a temporary file, then a rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or ``None`` when it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------- settings


def settings_changes(before: Any, after: Any, *, prefix: str = "") -> list[str]:
    """The values that differ between two ``run.json`` settings, by dotted key:
    ``recipe.train.learning_rate: 0.002 → 0.0005``. Tables are compared key by key;
    other values (the data list) whole."""
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        changes: list[str] = []
        for key in sorted(set(before) | set(after), key=lambda k: (k not in after, str(k))):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in before:
                changes.append(f"{name}: (not set) → {_shown(after[key])}")
            elif key not in after:
                changes.append(f"{name}: {_shown(before[key])} → (not set)")
            else:
                changes.extend(settings_changes(before[key], after[key], prefix=name))
        return changes
    if before == after:
        return []
    return [f"{prefix or 'run.json'}: {_shown(before)} → {_shown(after)}"]


def _shown(value: Any) -> str:
    if isinstance(value, list) and all(
        isinstance(v, Mapping) and {"kind", "path"} <= set(v) for v in value
    ):
        return ", ".join(f"{v['kind']}={v['path']}" for v in value) or "(none)"
    return json.dumps(value, ensure_ascii=False)


# -------------------------------------------------------------------- checkpoints


def checkpoint_step(path: Path) -> int | None:
    """N of a ``checkpoint-N`` folder, else ``None``."""
    match = _CHECKPOINT_RE.match(path.name)
    return int(match.group(1)) if match else None


def checkpoints(run_dir: Path) -> list[Path]:
    """Every ``checkpoint-N`` folder, complete or not, by step."""
    if not run_dir.is_dir():
        return []
    found = [(checkpoint_step(c), c) for c in run_dir.iterdir() if c.is_dir()]
    return [c for step, c in sorted((s, c) for s, c in found if s is not None)]


def last_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint in ``run_dir`` (its ``trainer_state.json``, which
    the Trainer writes last, is present and readable), or ``None``."""
    complete = [c for c in checkpoints(run_dir) if read_json(c / "trainer_state.json") is not None]
    return complete[-1] if complete else None


def incomplete_checkpoints(run_dir: Path, last: Path | None) -> list[Path]:
    """Checkpoints newer than ``last``: cut off while being saved."""
    newest = checkpoint_step(last) if last is not None else None
    newest = -1 if newest is None else newest
    return [c for c in checkpoints(run_dir) if (checkpoint_step(c) or 0) > newest]


@dataclass(frozen=True)
class Retention:
    """What :func:`prune_checkpoints` kept and removed."""

    kept: tuple[tuple[str, str], ...]
    """(folder name, why: ``last``, ``best evaluation loss 0.81``, or ``kept``)."""
    removed: tuple[str, ...]
    freed: int
    """Bytes removed."""

    def describe(self) -> str:
        """One line for the end of a run."""
        if not self.kept and not self.removed:
            return "No checkpoints were saved in the run folder."
        kept = ", ".join(f"{name} ({why})" for name, why in self.kept)
        if not self.removed:
            if all(why == "kept" for _, why in self.kept):
                return f"Kept all {len(self.kept)} checkpoint(s) in the run folder."
            return f"Kept {kept} in the run folder."
        return (
            f"Kept {kept} in the run folder; removed {len(self.removed)} other checkpoint(s) "
            f"({_size(self.freed)}; --keep-checkpoints all keeps them)."
        )


def best_checkpoint(
    run_dir: Path, log_history: Sequence[Mapping[str, Any]], best: str | None
) -> Path | None:
    """The checkpoint with the lowest evaluation loss: the Trainer's own choice when the
    recipe tracks one (``metric_for_best_model``), else the lowest ``eval_loss`` logged
    at a step that has a checkpoint."""
    if best:
        path = run_dir / Path(best).name
        return path if path.is_dir() else None
    saved = {checkpoint_step(c): c for c in checkpoints(run_dir)}
    scored = [
        (float(entry["eval_loss"]), int(entry["step"]))
        for entry in log_history
        if "eval_loss" in entry and "step" in entry and int(entry["step"]) in saved
    ]
    return saved[min(scored)[1]] if scored else None


def prune_checkpoints(
    run_dir: Path,
    keep: str,
    *,
    log_history: Sequence[Mapping[str, Any]] = (),
    best: str | None = None,
) -> Retention:
    """After a finished run: keep the last checkpoint and the best one (``keep="last"``)
    or every one (``keep="all"``); each holds the adapter and the optimiser state (about
    three times the adapter's size), so they add up."""
    found = checkpoints(run_dir)
    if keep == "all":
        return Retention(tuple((c.name, "kept") for c in found), (), 0)
    last = last_checkpoint(run_dir)
    top = best_checkpoint(run_dir, log_history, best)
    reasons: dict[Path, str] = {}
    if top is not None:
        loss = _eval_loss_at(log_history, checkpoint_step(top))
        reasons[top] = "best" + (f" evaluation loss {loss:.4g}" if loss is not None else "")
    if last is not None:
        reasons[last] = "last" if last not in reasons else f"last, {reasons[last]}"
    removed, freed = [], 0
    for folder in found:
        if folder in reasons:
            continue
        freed += _folder_bytes(folder)
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder.name)
    kept = tuple((c.name, reasons[c]) for c in found if c in reasons)
    return Retention(kept, tuple(removed), freed)


def _eval_loss_at(log_history: Sequence[Mapping[str, Any]], step: int | None) -> float | None:
    losses = [
        float(e["eval_loss"]) for e in log_history if "eval_loss" in e and e.get("step") == step
    ]
    return losses[-1] if losses else None


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


# ---------------------------------------------------------------------- finished


def finished_run(run_dir: Path) -> dict[str, Any] | None:
    """How a finished run's adapter was made (its ``subplug-training.json``, written
    after everything else), or ``None`` when the run has not finished."""
    made = read_json(run_dir / ADAPTER_DIR / PROVENANCE_FILE)
    return made if isinstance(made, dict) and "global_step" in made else None
