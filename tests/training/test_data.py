"""Each data source read from a small local copy made here with ``datasets`` (or files), with
the real column names; broken rows are counted and reported, never fatal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from subplug.cli import main
from subplug.errors import SubplugError
from subplug.media import load_pcm
from subplug.testing.media import make_media, silence, tone
from subplug.types import SAMPLE_RATE
from subplug_training.data import (
    DataSpec,
    load_audio,
    open_sources,
    parse_data_spec,
    scan,
    seed_split,
)
from subplug_training.recipe import DataSettings

SETTINGS = DataSettings()


def clip(folder: Path, name: str, seconds: float, freq: float = 440.0) -> Path:
    """A real encoded clip (format from the extension), 44.1 kHz: decoding resamples it."""
    rate = 48_000 if name.endswith(".opus") else 44_100
    return make_media(folder / name, tone(freq, seconds, rate), sample_rate=rate)


def audio_column(paths: list[Path | bytes]) -> list[dict]:
    """Rows of an ``Audio`` column as the Hub stores them: encoded bytes and a name."""
    rows = []
    for item in paths:
        data = item if isinstance(item, bytes) else item.read_bytes()
        rows.append({"bytes": data, "path": "clip.bin" if isinstance(item, bytes) else item.name})
    return rows


def hf_dataset(columns: dict[str, list]):  # type: ignore[no-untyped-def]
    """A ``datasets.Dataset`` whose ``audio`` column has the ``Audio`` feature."""
    import datasets

    table = datasets.Dataset.from_dict(columns)
    return table.cast_column("audio", datasets.Audio(sampling_rate=16_000))


def reasons(result) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return dict(result.dropped)


# -------------------------------------------------------------------- MBSpeech


@pytest.fixture
def mbspeech(tmp_path: Path) -> Path:
    """MBSpeech as ``save_to_disk`` writes it: one ``train`` split, ``sentence_orig`` and
    ``sentence_norm``; rows 2–5 are broken on purpose."""
    import datasets

    good = clip(tmp_path, "good.flac", 1.0)
    audio = [good, good, good, b"this is not audio", clip(tmp_path, "short.flac", 0.3)]
    audio += [clip(tmp_path, "long.flac", 31.0), good, good, good, good]
    texts = [
        "Эхлэл.",
        "Хоёр.",
        "   ",
        "Дөрөв.",
        "Тав.",
        "Зургаа.",
        "Долоо.",
        "Найм.",
        "Ес.",
        "Арав.",
    ]
    table = hf_dataset(
        {
            "audio": audio_column(audio),
            "sentence_orig": texts,
            "sentence_norm": [t.lower() for t in texts],
        }
    )
    folder = tmp_path / "mbspeech"
    datasets.DatasetDict({"train": table}).save_to_disk(str(folder))
    return folder


def test_mbspeech_columns_split_and_bad_rows(mbspeech: Path) -> None:
    import datasets

    [source] = open_sources(DataSpec("mbspeech", mbspeech), SETTINGS)
    assert source.name == "mbspeech"
    # The seed's split: datasets' train_test_split(test_size=0.1, seed=42).
    split = datasets.Dataset.from_dict({"i": list(range(10))}).train_test_split(0.1, seed=42)
    assert [i for _, i in source.splits["train"]] == split["train"]["i"]
    assert [i for _, i in source.splits["test"]] == split["test"]["i"]
    assert seed_split(10, 0.1, 42) == (split["train"]["i"], split["test"]["i"])

    result = scan(source, SETTINGS)
    assert reasons(result) == {
        "no Mongolian text for its audio": 1,
        "shorter than 0.5 s": 1,
        "longer than 30 s": 1,
    } | {next(r for r in result.dropped if r.startswith("audio unreadable")): 1}
    assert sum(result.dropped.values()) == 4
    kept = result.kept["train"] + result.kept["test"]
    assert len(kept) == 6
    assert {k.row[1] for k in kept} == {0, 1, 6, 7, 8, 9}
    for k in kept:
        assert k.audio_language == "mn" and set(k.texts) == {"mn"}
        assert k.seconds == pytest.approx(1.0, abs=0.03)
    first = next(k for k in kept if k.row[1] == 0)
    assert first.texts["mn"] == "Эхлэл."  # sentence_orig, not the normalised sentence
    assert result.examples["longer than 30 s"] == ["mbspeech/train/5"]
    samples = load_audio(source.record(("train", 0)))
    assert samples.dtype == np.float32 and abs(len(samples) - SAMPLE_RATE) < 400


def test_mbspeech_as_an_audio_folder(tmp_path: Path) -> None:
    folder = tmp_path / "mbspeech-folder"
    folder.mkdir()
    clip(folder, "a.wav", 1.0)
    clip(folder, "b.mp3", 2.0)
    (folder / "metadata.csv").write_text(
        "file_name,sentence_orig,sentence_norm\na.wav,Нэг.,нэг\nb.mp3,Хоёр.,хоёр\n",
        encoding="utf-8",
    )
    [source] = open_sources(DataSpec("mbspeech", folder), DataSettings(holdout=0.0))
    result = scan(source, DataSettings(holdout=0.0))
    assert not result.dropped
    seconds = {k.texts["mn"]: round(k.seconds, 1) for k in result.kept["train"]}
    assert seconds == {"Нэг.": 1.0, "Хоёр.": 2.0}


def test_wrong_dataset_is_one_clear_error(tmp_path: Path, mbspeech: Path) -> None:
    with pytest.raises(SubplugError) as error:
        open_sources(DataSpec("common-voice", mbspeech), SETTINGS)
    assert error.value.reference == "data-columns"
    with pytest.raises(SubplugError) as error:
        open_sources(DataSpec("ted", mbspeech), SETTINGS)
    assert error.value.reference == "data-columns" and "en" in error.value.message
    (tmp_path / "empty").mkdir()
    with pytest.raises(SubplugError) as error:
        open_sources(DataSpec("mbspeech", tmp_path / "empty"), SETTINGS)
    assert error.value.reference == "data-unreadable" and error.value.hint


# ------------------------------------------------------------------------- TED


@pytest.fixture
def ted(tmp_path: Path) -> Path:
    """The TED dataset as a clone of its Hub repository: parquet files per split."""
    good = clip(tmp_path, "talk.opus", 1.5)
    folder = tmp_path / "ted_talks_en_mn_split"
    (folder / "data").mkdir(parents=True)
    rows = {
        "en": (
            ["Thank you.", "So.", "Hello there.", "Good."],
            ["Баярлалаа.", "", "Сайн уу.", None],
        ),
        "mn": (["Thanks.", "Yes."], ["Баярлалаа.", "Тийм."]),
    }
    for split, (english, mongolian) in rows.items():
        count = len(english)
        table = hf_dataset(
            {
                "audio": audio_column([good] * count),
                "text_en": english,
                "text_mn": mongolian,
                "audio_language": [split] * count,
                "filename": [f"talk-{i}" for i in range(count)],
                "group": ["g"] * count,
            }
        )
        table.to_parquet(str(folder / "data" / f"{split}-00000-of-00001.parquet"))
    return folder


def test_ted_splits_are_two_sources_with_both_texts(ted: Path) -> None:
    settings = DataSettings(holdout=0.0)
    sources = open_sources(parse_data_spec(f"ted={ted}"), settings)
    assert [s.name for s in sources] == ["ted-en", "ted-mn"]
    english, mongolian = (scan(s, settings) for s in sources)
    texts = [k.texts for k in english.kept["train"]]
    assert texts == [
        {"en": "Thank you.", "mn": "Баярлалаа."},
        {"en": "So."},  # empty Mongolian text: an English-only sample
        {"en": "Hello there.", "mn": "Сайн уу."},
        {"en": "Good."},  # missing (null) Mongolian text
    ]
    assert all(k.audio_language == "en" for k in english.kept["train"])
    assert [k.audio_language for k in mongolian.kept["train"]] == ["mn", "mn"]
    [only] = open_sources(parse_data_spec(f"ted-mn={ted}"), settings)
    assert only.name == "ted-mn"


# ---------------------------------------------------------------- Common Voice


def test_common_voice_release_folder(tmp_path: Path) -> None:
    folder = tmp_path / "cv-corpus-17.0" / "mn"
    (folder / "clips").mkdir(parents=True)
    header = (
        "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccent\tlocale\tsegment\n"
    )
    files = {
        "train.tsv": [("a.mp3", "Нэг."), ("b.mp3", "Хоёр.")],
        "dev.tsv": [("c.mp3", "Гурав.")],
        "test.tsv": [("d.mp3", "Дөрөв."), ("missing.mp3", "Тав.")],
    }
    for name, rows in files.items():
        lines = [header] + [f"x\t{p}\t{s}\t2\t0\t\t\t\tmn\t\n" for p, s in rows]
        (folder / name).write_text("".join(lines), encoding="utf-8")
        for path, _ in rows:
            if path != "missing.mp3":
                clip(folder / "clips", path, 1.2)
    [source] = open_sources(parse_data_spec(f"common-voice={folder}"), SETTINGS)
    result = scan(source, SETTINGS)
    assert [k.texts["mn"] for k in result.kept["train"]] == ["Нэг.", "Хоёр.", "Гурав."]
    assert [k.texts["mn"] for k in result.kept["test"]] == ["Дөрөв."]
    [reason] = result.dropped
    assert reason.startswith("audio unreadable: audio file missing")
    assert result.examples[reason] == ["common-voice/test/1"]


def test_common_voice_saved_with_datasets(tmp_path: Path) -> None:
    import datasets

    good = clip(tmp_path, "cv.mp3", 1.0)
    parts = {}
    for split, sentences in (("train", ["А.", "Б."]), ("validation", ["В."]), ("test", ["Г."])):
        parts[split] = hf_dataset(
            {
                "audio": audio_column([good] * len(sentences)),
                "sentence": sentences,
                "client_id": ["x"] * len(sentences),
                "accent": [""] * len(sentences),
            }
        )
    folder = tmp_path / "common_voice_17_0_mn"
    datasets.DatasetDict(parts).save_to_disk(str(folder))
    [source] = open_sources(DataSpec("common-voice", folder), SETTINGS)
    result = scan(source, SETTINGS)
    assert [k.texts["mn"] for k in result.kept["train"]] == ["А.", "Б.", "В."]
    assert [k.texts["mn"] for k in result.kept["test"]] == ["Г."]
    assert [k.row for k in result.kept["train"]] == [("train", 0), ("train", 1), ("validation", 0)]


# -------------------------------------------------------------------- manifest


def write_lines(path: Path, rows: list) -> Path:  # type: ignore[type-arg]
    text = "\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def test_manifest_rows_cuts_splits_and_bad_rows(tmp_path: Path) -> None:
    media = tmp_path / "recordings"
    media.mkdir()
    make_media(media / "talk.mp4", [silence(1.0), tone(440, 2.0), silence(1.0)], video=True)
    clip(media, "hello.ogg", 1.0)
    manifest = write_lines(
        tmp_path / "mine.jsonl",
        [
            {
                "audio": "recordings/talk.mp4",
                "audio_language": "en",
                "text_en": "Hi.",
                "text_mn": "Сайн уу.",
                "start": 1.0,
                "end": 3.0,
            },
            {
                "audio": "recordings/hello.ogg",
                "audio_language": "mn",
                "text_mn": "Сайн.",
                "split": "test",
            },
            {"audio": "recordings/hello.ogg", "audio_language": "ru", "text_mn": "Привет."},
            {"audio": "recordings/hello.ogg", "audio_language": "en", "text_mn": "Сайн."},
            {"audio": "recordings/nothing.wav", "audio_language": "en", "text_en": "Gone."},
            {
                "audio": "recordings/talk.mp4",
                "audio_language": "en",
                "text_en": "Late.",
                "start": 9.0,
            },
            {"audio_language": "en", "text_en": "No audio."},
            '{"audio": "recordings/hello.ogg", "audio_language": "en", ',
            "",
            {
                "audio": str((media / "hello.ogg").absolute()),
                "audio_language": "en",
                "text_en": "Absolute.",
            },
            {"audio": "recordings/hello.ogg", "text_en": "Which language?"},
        ],
    )
    [source] = open_sources(parse_data_spec(str(manifest)), SETTINGS)
    assert source.name == "manifest:mine"
    result = scan(source, SETTINGS)
    train = {k.texts.get("en") or k.texts.get("mn"): k for k in result.kept["train"]}
    assert set(train) == {"Hi.", "Absolute."}
    assert train["Hi."].seconds == pytest.approx(2.0, abs=0.01)  # cut 1.0–3.0 s
    cut = load_audio(source.record(train["Hi."].row))
    assert np.abs(cut).max() > 0.3  # the tone, not the silence around it
    whole = load_pcm(media / "talk.mp4")  # the engine's decoding of the whole file
    np.testing.assert_allclose(cut, whole[SAMPLE_RATE : 3 * SAMPLE_RATE], atol=0.05)
    assert [k.texts for k in result.kept["test"]] == [{"mn": "Сайн."}]
    dropped = reasons(result)
    # Rows are named by their line in the file, as the reasons count them (line 9 is blank).
    assert result.examples["audio_language is 'ru', not en or mn"] == ["manifest:mine/line/3"]
    assert result.examples["no audio_language (en or mn)"] == ["manifest:mine/line/11"]
    assert dropped.pop("no audio_language (en or mn)") == 1
    assert dropped.pop("audio_language is 'ru', not en or mn") == 1
    assert dropped.pop("no English text for its audio") == 1
    assert dropped.pop("no audio") == 1
    [bad_json] = [r for r in dropped if r.startswith("line 8 is not valid JSON")]
    assert result.examples[bad_json] == ["manifest:mine/line/8"]
    assert dropped.pop(bad_json) == 1
    unreadable = sorted(r for r in dropped if r.startswith("audio unreadable"))
    assert len(unreadable) == 2 and sum(dropped[r] for r in unreadable) == 2
    assert any("audio file missing" in r for r in unreadable)
    assert any("past the end" in r for r in unreadable)


def test_manifest_without_splits_holds_out_like_the_seed(tmp_path: Path) -> None:
    clip(tmp_path, "a.wav", 1.0)
    rows = [{"audio": "a.wav", "audio_language": "en", "text_en": f"Row {i}."} for i in range(20)]
    manifest = write_lines(tmp_path / "m.jsonl", rows)
    [source] = open_sources(DataSpec("manifest", manifest), SETTINGS)
    train, test = seed_split(20, 0.1, 42)
    assert [i for _, i in source.splits["train"]] == train
    assert [i for _, i in source.splits["test"]] == test and len(test) == 2


def test_a_one_row_manifest_reports_its_row_before_the_holdout(
    tmp_path: Path, capsys, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("COLUMNS", "200")
    clip(tmp_path, "a.wav", 1.0)
    bad = write_lines(tmp_path / "bad.jsonl", [{"audio": "a.wav", "text_en": "Hi."}])
    code = main(["train", "--check-data", "--data", str(bad)])
    err = capsys.readouterr().err
    # The row is reported first; the error is that nothing is left, not the 10 % holdout.
    assert code == 2, err
    dropped = err.index("dropped 1 row(s) of manifest:bad: no audio_language (en or mn)")
    assert "manifest:bad/line/1" in err
    assert dropped < err.index("error: No usable training samples") and "[no-training-data]" in err
    assert "Holding out" not in err and "holding out" not in err

    good = write_lines(
        tmp_path / "one.jsonl", [{"audio": "a.wav", "audio_language": "en", "text_en": "Hi."}]
    )
    code = main(["train", "--check-data", "--data", str(good)])
    err = capsys.readouterr().err
    assert code == 2 and "1 training and 0 test samples" in err
    reported = err.index("1 training and 0 test samples")
    assert reported < err.index("error: manifest:one: holding out")
    assert "[data-too-small]" in err and "data.holdout=0" in err


def test_data_spec_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(SubplugError) as error:
        parse_data_spec(str(tmp_path))
    assert error.value.reference == "bad-data" and "KIND=PATH" in error.value.message
    with pytest.raises(SubplugError) as error:
        parse_data_spec(f"mbspeech={tmp_path / 'nope'}")
    assert error.value.reference == "data-not-found"


def test_check_data_reports_broken_rows_without_stopping(
    mbspeech: Path, tmp_path: Path, capsys, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("COLUMNS", "200")
    code = main(["train", "--check-data", "--data", f"mbspeech={mbspeech}"])  # no --name needed
    err = capsys.readouterr().err
    assert code == 0, err
    assert "dropped 1 row(s) of mbspeech: shorter than 0.5 s (e.g. mbspeech/train/4)" in err
    assert "dropped 1 row(s) of mbspeech: longer than 30 s (e.g. mbspeech/train/5)" in err
    assert "dropped 1 row(s) of mbspeech: audio unreadable" in err
    assert "Traceback" not in err
    # 6 usable rows (0, 1, 6–9), one instruction each; the held-out row may be a bad one.
    held_out = set(seed_split(10, 0.1, 42)[1]) & {0, 1, 6, 7, 8, 9}
    assert f"{6 - len(held_out)} training and {len(held_out)} test samples" in err
