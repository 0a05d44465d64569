"""Every model family end to end through ``subplug generate``, each with its tiny
offline model (real config, real processor, random weights) in a model cache, on real
espeak-ng speech: files written and cues valid, the cascades (CTC or Whisper + NLLB)
giving both languages, capability errors before any media is read, remote code refused
without ``--trust-remote-code``, and the backend picked from the model."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import pysubs2
import pytest
from subplug import cache, choice
from subplug.cli import main
from subplug.engine import Engine
from subplug.errors import SubplugError
from subplug.testing.media import SpeechClip, speech_clip
from subplug.testing.tiny_ctc import build_tiny_ctc
from subplug.testing.tiny_nllb import build_tiny_nllb
from subplug.testing.tiny_qwen3_asr import build_tiny_qwen3_asr
from subplug.testing.tiny_remote import build_tiny_remote
from subplug.testing.tiny_seamless import build_tiny_seamless
from subplug.testing.tiny_whisper import build_tiny_whisper
from subplug.types import BackendOptions, CueOptions, GenerateOptions

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("espeak-ng") is None, reason="espeak-ng not installed (apt install espeak-ng)"
    ),
]

#: Cache name → builder. Registry names where the family has one, so ``--model NAME``
#: is exactly what a user types; ``qwen-en-mn`` is not one (its backend comes from its
#: config), and states that it translates, as a fine-tune would.
MODELS = {
    "whisper-small": lambda d: build_tiny_whisper(d),
    "whisper-tiny-en": lambda d: build_tiny_whisper(d, multilingual=False),
    "mms-1b-all": lambda d: build_tiny_ctc(d),
    "nllb-200-distilled-600m": lambda d: build_tiny_nllb(d),
    "qwen-en-mn": lambda d: build_tiny_qwen3_asr(d, translates=True),
    "seamless-m4t-v2-large": lambda d: build_tiny_seamless(d),
    "tiny-remote": lambda d: build_tiny_remote(d),
}
TRANSLATOR = "nllb-200-distilled-600m"
RULES = CueOptions()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every tiny model built and imported into one model cache (``home``)."""
    root = tmp_path_factory.mktemp("families")
    home = root / "home"
    folders: dict[str, Path] = {"home": home}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SUBPLUG_HOME", str(home))
        for name, build in MODELS.items():
            folders[name] = build(root / name)
            cache.import_model(folders[name], name=name)
    return folders


@pytest.fixture
def home(built: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("SUBPLUG_HOME", str(built["home"]))
    yield built["home"]


@pytest.fixture(scope="module")
def talk(tmp_path_factory: pytest.TempPathFactory) -> SpeechClip:
    folder = tmp_path_factory.mktemp("talk")
    return speech_clip(
        folder / "talk.wav", ["Good morning, and welcome.", "The weather is fine today."]
    )


@pytest.fixture
def clip(talk: SpeechClip, tmp_path: Path) -> SpeechClip:
    path = tmp_path / talk.path.name
    shutil.copy(talk.path, path)
    return SpeechClip(path, talk.speech, talk.duration, talk.texts)


def cues_of(path: Path, duration: float) -> list[pysubs2.SSAEvent]:
    """The cues of a subtitle file, checked against subplug's rules: text on at most two
    lines, in time order without overlap, inside the media."""
    events = [e for e in pysubs2.load(str(path)).events if not e.is_comment]
    assert events, f"{path.name} has no cues"
    previous_end = 0.0
    for event in events:
        start, end = event.start / 1000, event.end / 1000
        assert 0.0 <= start < end <= duration + RULES.max_lead + 0.05, (path.name, start, end)
        assert start >= previous_end - 1e-3, f"{path.name}: cues overlap at {start}"
        lines = event.plaintext.splitlines()
        assert lines and all(line.strip() for line in lines)
        assert len(lines) <= RULES.max_lines
        previous_end = end
    return events


def generate(clip: SpeechClip, *args: str) -> int:
    return main(["generate", "--no-resume", "--format", "srt,ass", *args, str(clip.path)])


# ------------------------------------------------------------------ every family


@pytest.mark.parametrize(
    ("model", "args", "langs"),
    [
        ("whisper-small", ["--source", "en", "--targets", "en"], ("en",)),
        ("whisper-small", ["--source", "mn"], ("en", "mn")),  # it translates mn → en itself
        ("mms-1b-all", ["--source", "mn", "--targets", "mn"], ("mn",)),
        ("qwen-en-mn", [], ("en", "mn")),
        ("seamless-m4t-v2-large", ["--source", "en"], ("en", "mn")),
        ("tiny-remote", ["--trust-remote-code", "--targets", "en"], ("en",)),
    ],
)
def test_each_family_writes_valid_subtitles(
    home: Path,
    clip: SpeechClip,
    capsys: pytest.CaptureFixture[str],
    model: str,
    args: list[str],
    langs: tuple[str, ...],
) -> None:
    assert generate(clip, "--model", model, *args) == 0, capsys.readouterr().err
    stem = clip.path.with_suffix("")
    for lang in langs:
        cues_of(Path(f"{stem}.{lang}.srt"), clip.duration)
    assert Path(f"{stem}.{'-'.join(langs)}.ass").is_file()
    assert sorted(p.name for p in clip.path.parent.glob("*.srt")) == sorted(
        f"{stem.name}.{lang}.srt" for lang in langs
    )


def test_whisper_with_nllb_gives_both_languages_for_english_speech(
    home: Path, clip: SpeechClip
) -> None:
    """Whisper transcribes (detecting the language itself); NLLB translates the text."""
    options = GenerateOptions(
        backend_options=BackendOptions(model="whisper-small", device="cpu", translator=TRANSLATOR),
        targets=("en", "mn"),
        resume=False,
    )
    with Engine() as engine:
        tracks = engine.generate(clip.path, options)
        backend = engine.backend(engine.prepare(options))
        assert backend.describe()["translator"]["translator"] == "nllb"
    assert tracks.tracks["en"].cues and tracks.tracks["mn"].cues
    for transcript in tracks.transcripts:
        lang = transcript.source_lang
        assert lang in ("en", "mn") and len(transcript.raw) == 2
        other = "mn" if lang == "en" else "en"
        # The other language is the second answer: NLLB's, or Whisper's own translation.
        assert transcript.texts[other] == " ".join(transcript.raw[1].split())


def test_ctc_with_nllb_gives_both_languages(
    home: Path, clip: SpeechClip, capsys: pytest.CaptureFixture[str]
) -> None:
    code = generate(clip, "--model", "mms-1b-all", "--source", "en", "--translator", TRANSLATOR)
    assert code == 0, capsys.readouterr().err
    stem = clip.path.with_suffix("")
    english = cues_of(Path(f"{stem}.en.srt"), clip.duration)
    mongolian = cues_of(Path(f"{stem}.mn.srt"), clip.duration)
    assert [e.plaintext for e in english] != [e.plaintext for e in mongolian]
    # CTC writes only the letters of the language's vocabulary: Latin for English.
    assert all(not any("\u0400" <= ch <= "\u04ff" for ch in e.plaintext) for e in english)


def test_generate_jsonl_reports_the_family_backend_for_hosts(
    home: Path, clip: SpeechClip, capsys: pytest.CaptureFixture[str]
) -> None:
    """The contract VLC and Kdenlive read works unchanged for another family."""
    code = generate(clip, "--jsonl", "--model", "seamless-m4t-v2-large", "--source", "mn")
    assert code == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    stages = [e for e in events if e["event"] == "stage" and e.get("stage") == "model-load"]
    assert stages and stages[0]["backend"] == "seamless"
    (done,) = [e for e in events if e["event"] == "file-done"]
    assert {o["format"] for o in done["outputs"]} == {"srt", "ass"}


# ---------------------------------------------------------- refused before media


@pytest.mark.parametrize(
    ("args", "reference"),
    [
        (["--model", "mms-1b-all"], "cannot-detect-language"),
        (["--model", "mms-1b-all", "--source", "en"], "cannot-translate"),
        (["--model", "whisper-tiny-en", "--source", "mn", "--targets", "mn"], "cannot-transcribe"),
        (["--model", "whisper-small", "--source", "en"], "cannot-translate"),
        (["--model", "seamless-m4t-v2-large"], "cannot-detect-language"),
        (["--model", "whisper-small", "--translator", "whisper-small"], "unknown-translator"),
        (["--model", "whisper-small", "--quantize", "int8"], "quantize-unsupported"),
        (["--model", "tiny-remote"], "remote-code-refused"),
        (["--backend", "ctc", "--model", "whisper-small", "--source", "en"], "wrong-backend"),
    ],
)
def test_a_job_the_models_cannot_serve_fails_before_any_media_is_read(
    home: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    reference: str,
) -> None:
    missing = tmp_path / "missing.mp4"  # reading it would fail with media-not-found
    assert main(["generate", *args, str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"[{reference}]" in err and "media-not-found" not in err and "Traceback" not in err
    assert "hint:" in err


def test_remote_code_runs_only_from_the_cache_and_says_so(
    home: Path,
    built: dict[str, Path],
    clip: SpeechClip,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    folder = built["tiny-remote"]
    assert generate(clip, "--model", str(folder), "--trust-remote-code", "--targets", "en") == 2
    assert "[remote-code-not-cached]" in capsys.readouterr().err
    assert not list(clip.path.parent.glob("*.srt")) and not caplog.records
    with caplog.at_level(logging.WARNING, logger="subplug.backends.remote_code"):
        assert (
            generate(clip, "--model", "tiny-remote", "--trust-remote-code", "--targets", "en") == 0
        )
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "Running the Python code that comes with tiny-remote" in warning
    assert "modeling_tiny_speech.py" in warning


# ---------------------------------------------------------------- the choice


def test_auto_picks_the_backend_from_the_registry_or_the_config(
    home: Path, built: dict[str, Path], tmp_path: Path
) -> None:
    assert choice.choose_backend("auto", "whisper-small") == "whisper"  # registry
    assert choice.choose_backend("auto", "qwen-en-mn") == "qwen3-asr"  # its config
    assert choice.choose_backend("auto", str(built["mms-1b-all"])) == "ctc"  # a folder
    assert choice.choose_backend("auto", "tiny-remote") == "remote-code"  # its own code
    assert choice.choose_backend("auto", None) == "gemma3n"  # the default model
    assert choice.choose_backend("auto", "not-there") == "gemma3n"  # its check will say
    assert choice.choose_backend("ctc", "whisper-small") == "ctc"  # asked for: kept
    assert choice.choose_translator("nllb") == ("nllb", None)
    assert choice.choose_translator(str(built[TRANSLATOR])) == ("nllb", str(built[TRANSLATOR]))
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "config.json").write_text('{"model_type": "bert"}', encoding="utf-8")
    with pytest.raises(SubplugError) as raised:
        choice.choose_backend("auto", str(odd))
    assert raised.value.reference == "unknown-model-family" and "--backend" in str(raised.value)


def test_a_registry_model_not_pulled_yet_names_the_pull(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--model whisper-small`` on a machine without it: the whisper backend's check
    says how to get it, before any media is read."""
    assert main(["generate", "--model", "whisper-small", str(tmp_path / "x.mp4")]) == 2
    err = capsys.readouterr().err
    assert "[model-not-found]" in err and "subplug models pull whisper-small" in err


def test_models_list_and_doctor_say_what_runs_each_model(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from subplug.default_plugins.checks import check_models

    assert main(["models", "list", "--json"]) == 0
    listed = {e["name"]: e["runs_with"] for e in json.loads(capsys.readouterr().out)}
    assert listed == {
        "whisper-small": "whisper",
        "whisper-tiny-en": "whisper",  # not a registry name: from its config
        "mms-1b-all": "ctc",
        "nllb-200-distilled-600m": "translator nllb",
        "qwen-en-mn": "qwen3-asr",
        "seamless-m4t-v2-large": "seamless",
        "tiny-remote": "remote-code",
    }
    assert main(["models", "list"]) == 0
    table = capsys.readouterr().out
    assert "Runs with" in table and "translator nllb" in table
    result = check_models()
    assert result.details["runs_with"] == listed
    assert "mms-1b-all (ctc)" in result.summary
