"""What a rerun finds in the run folder: the settings that changed, by name; which
checkpoints a finished run keeps (the last and the best) and says so."""

from __future__ import annotations

import json
from pathlib import Path

from subplug_training.run_folder import (
    finished_run,
    incomplete_checkpoints,
    last_checkpoint,
    prune_checkpoints,
    settings_changes,
)


def test_changed_settings_are_named_by_their_key() -> None:
    before = {
        "recipe": {"train": {"learning_rate": 0.002, "max_steps": 60}, "data": {"holdout": 0.1}},
        "data": [{"kind": "manifest", "path": "/d/a.jsonl"}],
        "base": "tiny-base",
        "name": "x",
    }
    after = json.loads(json.dumps(before))
    after["recipe"]["train"]["learning_rate"] = 0.0005
    after["recipe"]["train"]["seed"] = 7
    after["data"].append({"kind": "ted", "path": "/d/ted"})
    assert settings_changes(before, after) == [
        "data: manifest=/d/a.jsonl → manifest=/d/a.jsonl, ted=/d/ted",
        "recipe.train.learning_rate: 0.002 → 0.0005",
        "recipe.train.seed: (not set) → 7",
    ]
    assert settings_changes(before, before) == []


def _checkpoint(run: Path, step: int, *, complete: bool = True, size: int = 1000) -> Path:
    folder = run / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "optimizer.pt").write_bytes(b"\0" * size)
    if complete:
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


def test_a_finished_run_keeps_the_last_and_the_best_checkpoint(tmp_path: Path) -> None:
    for step in (100, 200, 300, 400, 500):
        _checkpoint(tmp_path, step)
    history = [
        {"loss": 2.0, "step": 100},
        {"eval_loss": 1.5, "step": 200},
        {"eval_loss": 1.2, "step": 400},
        {"eval_loss": 1.1, "step": 450},  # no checkpoint at 450: not a candidate
        {"eval_loss": 1.3, "step": 500},
    ]
    retention = prune_checkpoints(tmp_path, "last", log_history=history)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-400", "checkpoint-500"]
    assert retention.kept == (
        ("checkpoint-400", "best evaluation loss 1.2"),
        ("checkpoint-500", "last"),
    )
    assert retention.removed == ("checkpoint-100", "checkpoint-200", "checkpoint-300")
    assert retention.freed == 3 * (1000 + len(json.dumps({"global_step": 100})))
    assert retention.describe() == (
        "Kept checkpoint-400 (best evaluation loss 1.2), checkpoint-500 (last) in the run "
        "folder; removed 3 other checkpoint(s) (3.0 KiB; --keep-checkpoints all keeps them)."
    )


def test_the_trainers_own_best_checkpoint_wins(tmp_path: Path) -> None:
    for step in (10, 20, 30):
        _checkpoint(tmp_path, step)
    history = [{"eval_loss": 0.5, "step": 10}, {"eval_accuracy": 0.9, "step": 20}]
    retention = prune_checkpoints(
        tmp_path, "last", log_history=history, best=str(tmp_path / "checkpoint-20")
    )
    assert [name for name, _ in retention.kept] == ["checkpoint-20", "checkpoint-30"]


def test_keep_all_removes_nothing(tmp_path: Path) -> None:
    for step in (3, 6, 9):
        _checkpoint(tmp_path, step)
    retention = prune_checkpoints(tmp_path, "all")
    assert len(list(tmp_path.iterdir())) == 3 and retention.removed == ()
    assert retention.describe() == "Kept all 3 checkpoint(s) in the run folder."


def test_a_checkpoint_cut_off_while_saving_is_not_resumed(tmp_path: Path) -> None:
    _checkpoint(tmp_path, 3)
    _checkpoint(tmp_path, 6)
    cut = _checkpoint(tmp_path, 9, complete=False)
    last = last_checkpoint(tmp_path)
    assert last is not None and last.name == "checkpoint-6"
    assert incomplete_checkpoints(tmp_path, last) == [cut]
    assert finished_run(tmp_path) is None
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "subplug-training.json").write_text('{"global_step": 6}')
    assert finished_run(tmp_path) == {"global_step": 6}
