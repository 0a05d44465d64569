"""The heart of the training package: train a LoRA on real speech with the real collator
and Trainer, install it into the cache, and have ``subplug generate`` use it by name.

Two espeak-ng clips (English; the Russian voice reading Mongolian Cyrillic) are learned by
the tiny Gemma 3n with instructions 1, 6 and 7, which are what ``generate`` asks in its
default ``--source auto`` mode: transcribe, then translate into the other language."""

from __future__ import annotations

import json
import re

import pysubs2
import pytest
from subplug import cache
from subplug.cli import main
from training_setup import ADAPTER_NAME, BASE_NAME, CLIPS, Trained


def _text(path) -> str:  # type: ignore[no-untyped-def]
    return " ".join(line.plaintext.replace("\n", " ") for line in pysubs2.load(str(path)))


@pytest.mark.slow
def test_generate_with_the_trained_adapter_writes_the_learned_text(
    trained_home: Trained, tmp_path, capsys
) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "subs"
    code = main(
        [
            "generate",
            "--model",
            ADAPTER_NAME,
            "--device",
            "cpu",
            "--out",
            str(out),
            "--no-resume",
            str(trained_home.clips["en"]),
            str(trained_home.clips["mn"]),
        ]
    )
    assert code == 0, capsys.readouterr().err
    for lang, clip in CLIPS.items():
        stem = trained_home.clips[lang].stem
        assert _text(out / f"{stem}.en.srt") == clip["text_en"]
        assert _text(out / f"{stem}.mn.srt") == clip["text_mn"]
        # The bilingual .ass carries both lines.
        ass = _text(out / f"{stem}.en-mn.ass")
        assert clip["text_en"] in ass and clip["text_mn"] in ass


@pytest.mark.slow
def test_the_trained_adapter_is_a_cache_entry_on_its_base(trained_home: Trained) -> None:
    entries = {entry.name: entry for entry in cache.list_models()}
    adapter = entries[ADAPTER_NAME]
    assert adapter.complete and adapter.kind == "adapter" and adapter.base == BASE_NAME
    assert cache.verify(ADAPTER_NAME).ok
    resolved = cache.resolve_model(ADAPTER_NAME)
    assert resolved.is_adapter and resolved.base == cache.models_dir() / BASE_NAME
    config = json.loads((resolved.path / "adapter_config.json").read_text())
    assert config["r"] == 32 and config["lora_alpha"] == 64
    assert "language_model" in config["target_modules"]
    made = json.loads((resolved.path / "subplug-training.json").read_text())
    assert made["global_step"] == 60
    assert made["instructions"] == {"1": 2, "6": 1, "7": 1}
    # The run printed what it trained and where the adapter went.
    assert "Installed the adapter as tiny-en-mn" in trained_home.output
    assert "4 training and 0 test samples" in trained_home.output


@pytest.mark.slow
def test_a_run_without_a_terminal_prints_plain_progress(trained_home: Trained) -> None:
    """The session's run wrote to a StringIO, as a run in CI or under nohup writes to a
    file: no live bar, but log lines with the time elapsed and the ETA, before the end."""
    output = trained_home.output
    assert "training ━" not in output
    lines = re.findall(
        r"^step +(\d+)/60 +loss .*\| elapsed \d+:\d\d:\d\d, ETA (\S+)$", output, re.M
    )
    assert [int(step) for step, _ in lines] == [20, 40, 60]
    assert lines[-1][1] == "0:00:00"
    assert output.index("step     60/60") < output.index("finished: 60 steps")


@pytest.mark.slow
def test_eval_compares_the_adapter_with_its_base(trained_home: Trained, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    code = main(
        [
            "eval",
            "--model",
            ADAPTER_NAME,
            "--model",
            BASE_NAME,
            "--data",
            str(trained_home.manifest),
            "--split",
            "all",
            "--instructions",
            "1,6,7",
            "--device",
            "cpu",
            "--out",
            str(tmp_path),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads((tmp_path / "eval-report.json").read_text())
    assert report["models"] == [ADAPTER_NAME, BASE_NAME] and report["samples"] == 4
    # Asked for all rows, told which ones the adapter was trained on (all: holdout 0).
    assert report["trained_on"] == {ADAPTER_NAME: 4, BASE_NAME: 0}
    assert f"note 4 of the 4 samples to score were training rows of {ADAPTER_NAME}" in " ".join(
        captured.err.split()
    )
    adapter = report["results"][ADAPTER_NAME]["overall"]
    base = report["results"][BASE_NAME]["overall"]
    for lang in ("en", "mn"):
        assert adapter[f"asr-{lang}"]["wer"] == 0.0 and adapter[f"asr-{lang}"]["cer"] == 0.0
        assert base[f"asr-{lang}"]["wer"] > 50.0
    assert adapter["en-mn"]["chrf++"] == 100.0 and adapter["mn-en"]["chrf++"] == 100.0
    assert base["en-mn"]["chrf++"] < 50.0 and base["mn-en"]["chrf++"] < 50.0
    by_instruction = report["results"][ADAPTER_NAME]["per_instruction"]
    assert set(by_instruction) == {"1", "6", "7"}
    assert set(by_instruction["1"]) == {"asr-en", "asr-mn"}
    answers = [o["answers"][ADAPTER_NAME] for o in report["outputs"]]
    assert sorted(answers) == sorted(
        ["Hello world.", "Сайн уу, дэлхий.", "Сайн байна уу.", "Hello."]
    )
    table = (tmp_path / "eval-report.md").read_text()
    assert f"| instruction | metric | samples | {ADAPTER_NAME} | {BASE_NAME} |" in table
    assert "| 1. Transcribe this audio. | WER English | 1 | 0.00 |" in table
    assert table in captured.out


@pytest.mark.slow
def test_eval_refuses_held_out_rows_the_adapter_was_trained_on(
    trained_home: Trained, tmp_path, capsys
) -> None:  # type: ignore[no-untyped-def]
    """The adapter was trained with data.holdout = 0 on every row of the manifest; the
    default recipe holds one of its rows out, so that "held-out" row is a trained one."""
    command = ["eval", "--model", ADAPTER_NAME, "--data", str(trained_home.manifest)]
    command += ["--device", "cpu", "--out", str(tmp_path)]
    code = main(command)
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "[eval-overlap]" in err, err
    assert f"1 of the 1 samples to score were training rows of {ADAPTER_NAME}" in err
    assert re.search(r"e\.g\. manifest:clips/line/[12]\)", err)
    assert "--allow-overlap" in err and not (tmp_path / "eval-report.json").exists()
    # Asked to, it scores them (and the report says how many were trained on).
    assert main([*command, "--allow-overlap"]) == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "eval-report.json").read_text())
    assert report["samples"] == 1 and report["trained_on"] == {ADAPTER_NAME: 1}
    # The bare base model has no training record: nothing to refuse.
    assert main([*command[:2], BASE_NAME, *command[3:]]) == 0
