"""``subplug train`` and ``subplug eval`` as a user meets them: listed in the help without
heavy imports, and every mistake answered by one message with a hint, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from subplug import cache
from subplug.cli import main


def test_commands_are_listed_without_importing_torch() -> None:
    code = (
        "import sys\n"
        "from subplug.cli import build_parser\n"
        "parser, commands = build_parser()\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'datasets') if m in sys.modules]\n"
        "print(sorted(c.name for c in commands), heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    names, heavy = result.stdout.rsplit("] ", 1)
    assert "'train'" in names and "'eval'" in names
    assert heavy.strip() == "[]"


def _error(capsys, argv: list[str]) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    from subplug.testing.media import make_media, tone

    make_media(tmp_path / "a.wav", tone(440, 1.0))
    row = {"audio": "a.wav", "audio_language": "en", "text_en": "Hi."}
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("extra", "reference"),
    [
        ([], "no-data"),
        (["--data", "DATA", "--name", ""], "no-name"),
        (["--data", "DATA", "--name", "bad name"], "invalid-model-name"),
        (["--data", "DATA", "--recipe", "nope"], "recipe-not-found"),
        (["--data", "DATA", "--set", "train"], "bad-override"),
        (["--data", "DATA", "--instructions", "1,10"], "bad-instructions"),
        (["--data", "whatever=DATA"], "bad-data"),
        (["--data", "DATA"], "model-not-found"),
        (["--data", "DATA", "--base", "tiny"], "bad-base-model"),
        (["--data", "DATA", "--base", "BASEDIR"], "base-not-in-cache"),
        (["--data", "DATA", "--base", "base", "--device", "cuda:7"], "no-cuda"),
        (["--data", "DATA", "--base", "base", "--name", "base"], "model-exists"),
    ],
)
def test_train_mistakes_are_one_clear_error(
    capsys, manifest: Path, tiny_model_dir: Path, extra: list[str], reference: str
) -> None:  # type: ignore[no-untyped-def]
    from subplug.testing.tiny import build_tiny_adapter

    cache.import_model(tiny_model_dir, name="base")
    adapter = build_tiny_adapter(tiny_model_dir, manifest.parent / "adapter")
    cache.add_model("tiny", adapter, kind="adapter", base="base")
    words = {"DATA": str(manifest), "BASEDIR": str(tiny_model_dir)}
    argv = ["train", "--name", "mine"]
    argv += [a.replace("DATA", str(manifest)) if "=" in a else words.get(a, a) for a in extra]
    code, err = _error(capsys, argv)
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and f"[{reference}]" in lines[0], err
    assert "hint:" in err
    assert not (cache.models_dir() / "mine").exists()


@pytest.mark.parametrize(
    ("argv", "reference"),
    [
        (["eval", "--data", "DATA"], "no-model"),
        (["eval", "--model", "nope", "--data", "DATA"], "model-not-found"),
        (["eval", "--model", "base"], "no-data"),
        (["eval", "--model", "base", "--data", "DATA", "--limit", "0"], "bad-limit"),
        (["eval", "--model", "base", "--data", "DATA", "--out", "DATA"], "out-not-a-folder"),
    ],
)
def test_eval_mistakes_are_one_clear_error(
    capsys, manifest: Path, tiny_model_dir: Path, argv: list[str], reference: str
) -> None:  # type: ignore[no-untyped-def]
    cache.import_model(tiny_model_dir, name="base")
    code, err = _error(capsys, [str(manifest) if a == "DATA" else a for a in argv])
    assert code == 2 and f"[{reference}]" in err, err


def test_missing_training_libraries_are_named_with_the_install_command(capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from subplug.plugins import doctor_checks
    from subplug.types import CheckStatus

    checks = {check.name: check for check in doctor_checks()}
    assert checks["training"].run().status is CheckStatus.OK
    monkeypatch.setitem(sys.modules, "jiwer", None)  # as if jiwer were not installed
    result = checks["training"].run()
    assert result.status is CheckStatus.WARN and "jiwer" in result.summary
    assert 'pip install "subplug[train]"' in (result.hint or "")
    code, err = _error(capsys, ["eval", "--model", "x", "--data", "y.jsonl"])
    assert code == 2 and "[training-extras-missing]" in err and "jiwer" in err
    assert 'pip install "subplug[train]"' in err


def test_print_recipe_shows_the_values_a_run_uses(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from subplug_training.recipe import _tomllib, load_recipe
    from subplug_training.trainer import train_settings

    code = main(["train", "--print-recipe", "--device", "cpu", "--set", "train.learning_rate=1e-4"])
    printed = capsys.readouterr().out
    assert code == 0
    tables = _tomllib().loads(printed)
    train = tables["train"]
    assert train["learning_rate"] == 1e-4  # --set applied
    assert train["bf16"] is False  # "auto" on the CPU
    assert train["activation_checkpointing"] is True  # the seed's gradient_checkpointing
    assert train["activation_checkpointing_kwargs"] == {"use_reentrant": False}
    assert train["ddp_find_unused_parameters"] is False
    assert tables["lora"]["r"] == 32 and tables["data"]["holdout"] == 0.1
    # What it prints reads back as a recipe that resolves to the same settings.
    path = tmp_path / "printed.toml"
    path.write_text(printed, encoding="utf-8")
    again = load_recipe(str(path))
    assert train_settings(again, device="cpu", has_eval=True) == train
    assert not (cache.subplug_home() / "training").exists()


def test_dry_run_shows_data_batch_and_steps_and_trains_nothing(
    capsys, manifest: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    code = main(["train", "--dry-run", "--data", str(manifest), "--set", "data.holdout=0"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "[train]" in captured.out and "per_device_train_batch_size = 2" in captured.out
    err = captured.err
    assert "1 training and 0 test samples" in err
    # The seed's 2 × 8 on 1, 2, 4 and 8 processes; 1 sample, 2 epochs: 1 step per epoch.
    assert (
        "this launch: batch 2 × accumulation 8 × 1 process = 16 samples per optimiser step "
        "(the recipe's); 2 steps" in err
    )
    assert "batch 2 × accumulation 4 × 2 processes = 16 samples per optimiser step" in err
    assert "batch 2 × accumulation 1 × 8 processes = 16 samples per optimiser step" in err
    assert "1 training samples; 2 epoch(s) → 2 steps; a checkpoint every 100 steps (0)" in err
    assert "Dry run: nothing was trained or written." in err
    assert not (cache.subplug_home() / "training").exists()
    # Under a launcher of 2 processes, that is the launch it describes (printed once).
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", "--dry-run", "--data", str(manifest), "--set", "data.holdout=0"]) == 0
    err = capsys.readouterr().err
    assert "this launch: batch 2 × accumulation 4 × 2 processes" in err
    monkeypatch.setenv("RANK", "1")
    assert main(["train", "--dry-run", "--data", str(manifest), "--set", "data.holdout=0"]) == 0
    assert capsys.readouterr() == ("", "")
