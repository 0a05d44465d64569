"""``subplug eval`` over other model families: one table for a CTC model and a Whisper
model, both with the NLLB text translator beside them (the cascade), scored on the same
manifest of espeak-ng speech, with the real-time factor and peak memory of each run.

The tiny models have random weights, so their scores are whatever they are; what is
checked is that every model ran every sample it can serve, through the calls its
backend plans, and that the JSON and Markdown reports say the same."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from subplug import cache, plugins
from subplug.cli import main
from training_setup import write_manifest

pytestmark = pytest.mark.slow

CTC = "mms-1b-all"
WHISPER = "whisper-small"
NLLB = "nllb-200-distilled-600m"


@pytest.fixture(scope="module")
def family_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model cache with the tiny CTC, Whisper and NLLB under their registry names."""
    from subplug.testing.tiny_ctc import build_tiny_ctc
    from subplug.testing.tiny_nllb import build_tiny_nllb
    from subplug.testing.tiny_whisper import build_tiny_whisper

    root = tmp_path_factory.mktemp("eval-families")
    home = root / "home"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SUBPLUG_HOME", str(home))
        plugins.reset_plugin_manager()
        for name, build in (
            (CTC, build_tiny_ctc),
            (WHISPER, build_tiny_whisper),
            (NLLB, build_tiny_nllb),
        ):
            cache.import_model(build(root / name), name=name)
    return home


@pytest.fixture
def families(family_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("SUBPLUG_HOME", str(family_home))
    yield family_home


@pytest.fixture(scope="module")
def clips_manifest(tmp_path_factory: pytest.TempPathFactory, speech_clips: dict[str, Path]) -> Path:
    """The round-trip clips (one English, one Mongolian) as a manifest."""
    return write_manifest(tmp_path_factory.mktemp("eval-data") / "clips.jsonl", speech_clips)


def test_one_table_compares_a_ctc_and_a_whisper_cascade_on_the_same_samples(
    families: Path, clips_manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    command = ["eval", "--model", CTC, "--model", WHISPER, "--translator", NLLB]
    command += ["--data", str(clips_manifest), "--split", "all", "--instructions", "1,6,7"]
    command += ["--device", "cpu", "--out", str(tmp_path)]
    code = main(command)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads((tmp_path / "eval-report.json").read_text(encoding="utf-8"))
    # Two rows × the instructions each allows: 1 and 6 for English, 1 and 7 for Mongolian.
    assert report["models"] == [CTC, WHISPER] and report["samples"] == 4
    assert report["translator"] == NLLB
    runs, results = report["runs"], report["results"]
    assert runs[CTC]["backend"] == "ctc" and runs[WHISPER]["backend"] == "whisper"
    assert runs[CTC]["translator"] == runs[WHISPER]["translator"] == "nllb"

    by_instruction = {o["instruction"]: [] for o in report["outputs"]}
    for output in report["outputs"]:
        by_instruction[output["instruction"]].append(output["answers"])
    # CTC cannot tell the language: instruction 1 (language not given) is not served; the
    # translations are its transcription plus NLLB's translation of it: two answers.
    assert all(answers[CTC] is None for answers in by_instruction[1])
    assert runs[CTC]["not_served"] == 2
    for number in (6, 7):
        (answers,) = by_instruction[number]
        assert len(answers[CTC].split("\n")) == 2
    assert set(results[CTC]["overall"]) == {"en-mn", "mn-en"}
    assert set(results[CTC]["per_instruction"]) == {"6", "7"}
    # Whisper detects the language and serves all four: mn → en itself, en → mn with NLLB.
    assert runs[WHISPER]["not_served"] == 0
    assert all(isinstance(a[WHISPER], str) for group in by_instruction.values() for a in group)
    assert set(results[WHISPER]["overall"]) == {"asr-en", "asr-mn", "en-mn", "mn-en"}
    for model in (CTC, WHISPER):
        for key, values in results[model]["overall"].items():
            assert values["samples"] >= 1
            metrics = ("wer", "cer") if key.startswith("asr-") else ("bleu", "chrf++")
            assert all(isinstance(values.get(m), float) for m in metrics), (model, key, values)
        run = runs[model]
        assert run["audio_seconds"] > 0 and run["model_seconds"] > 0
        assert run["rtf"] == pytest.approx(run["model_seconds"] / run["audio_seconds"], rel=0.01)
        assert run["peak_memory_gib"] > 0 and run["peak_gpu_gib"] is None

    # The comparison table: one row per model, the same figures as the JSON.
    table = (tmp_path / "eval-report.md").read_text(encoding="utf-8")
    assert table in captured.out
    lines = table.splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == [
        "model",
        "backend",
        "WER English",
        "CER English",
        "WER Mongolian",
        "CER Mongolian",
        "BLEU en→mn",
        "chrF++ en→mn",
        "BLEU mn→en",
        "chrF++ mn→en",
        "RTF",
        "peak memory (GiB)",
        "not served",
    ]
    rows = {
        cells[0]: dict(zip(header, cells, strict=True))
        for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:4])
    }
    assert set(rows) == {CTC, WHISPER}
    assert rows[CTC]["backend"] == "ctc + nllb" and rows[WHISPER]["backend"] == "whisper + nllb"
    assert rows[CTC]["WER English"] == "–" and rows[CTC]["not served"] == "2"
    for model, row in rows.items():
        overall = results[model]["overall"]
        assert row["chrF++ mn→en"] == f"{overall['mn-en']['chrf++']:.2f}"
        assert row["BLEU en→mn"] == f"{overall['en-mn']['bleu']:.2f}"
        assert row["RTF"] == f"{runs[model]['rtf']:.3f}"
    whisper_en = results[WHISPER]["overall"]["asr-en"]
    assert rows[WHISPER]["WER English"] == f"{whisper_en['wer']:.2f}"
    # Then the table per instruction, one column per model.
    assert f"| instruction | metric | samples | {CTC} | {WHISPER} |" in table
    assert f"| 1. Transcribe this audio. | WER English | 0/1 | – | {whisper_en['wer']:.2f} |" in (
        table
    )


@pytest.mark.parametrize(
    ("args", "reference", "hint"),
    [
        (["--model", CTC, "--translator", WHISPER], "unknown-translator", "--translator"),
        (["--model", "qwen3-asr-1.7b"], "model-not-found", "subplug models pull qwen3-asr-1.7b"),
    ],
)
def test_a_model_eval_cannot_run_is_one_clear_error_and_writes_nothing(
    families: Path,
    clips_manifest: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    reference: str,
    hint: str,
) -> None:
    out = tmp_path / "out"
    code = main(["eval", *args, "--data", str(clips_manifest), "--split", "all", "--out", str(out)])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and f"[{reference}]" in err and "Traceback" not in err, err
    assert hint in err
    assert not out.exists()
