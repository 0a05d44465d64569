"""The ``subplug`` command as a user meets it: help without torch, every bad input ending
in one clear message and a non-zero exit with nothing left behind, ``--jsonl``, Ctrl-C
and resume in a real child process, and ``doctor --json``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from subplug import JSONL_VERSION
from subplug.cli import main
from subplug.errors import SubplugError
from subplug.hookspecs import hookimpl
from subplug.testing import FakeBackendPlugin
from subplug.testing.media import SpeechClip, make_media, silence, speech_clip, video_only
from subplug.types import CheckResult, CheckStatus, DoctorCheck

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng not installed (apt install espeak-ng)"
)
PHRASES = ("Hello and welcome.", "This is the second sentence.", "And this is the last one.")
HEAVY = ("torch", "transformers", "peft", "silero_vad")


@pytest.fixture(scope="module")
def clip_source(tmp_path_factory: pytest.TempPathFactory) -> SpeechClip:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (apt install espeak-ng)")
    return speech_clip(tmp_path_factory.mktemp("clip") / "talk.mp4", PHRASES, video=True)


@pytest.fixture
def clip(clip_source: SpeechClip, tmp_path: Path) -> Path:
    path = tmp_path / "talk.mp4"
    shutil.copy(clip_source.path, path)
    return path


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(SUBPLUG_HOME=str(home), SUBPLUG_PLUGINS="subplug.testing.fake", **extra)
    env.pop("SUBPLUG_DEBUG", None)
    return env


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -------------------------------------------------------------------------- help


@pytest.mark.parametrize("argv", [["--help"], ["generate", "--help"], []])
def test_help_does_not_import_torch(argv: list[str]) -> None:
    code = (
        "import sys\n"
        "from subplug.cli import main\n"
        "try:\n"
        f"    code = main({argv!r})\n"
        "except SystemExit as exit:\n"
        "    code = exit.code\n"
        f"print(code, [m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert "usage: subplug" in result.stdout
    assert result.stderr.strip().splitlines()[-1] in ("0 []", "2 []")
    if argv:
        assert result.stderr.strip().splitlines()[-1] == "0 []"


def test_generate_help_lists_the_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "subplug", "generate", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    for option in ("--source", "--targets", "--format", "--model", "--device", "--out", "--jsonl"):
        assert option in result.stdout


# --------------------------------------------------------------------- bad input


def _truncated_mp4(clip: Path) -> Path:
    data = clip.read_bytes()
    bad = clip.with_name("cut off.mp4")
    bad.write_bytes(data[: len(data) // 3])
    return bad


BAD_INPUTS = {
    "missing file": (lambda clip: clip.with_name("nope.mp4"), "media-not-found"),
    "a directory": (lambda clip: _mkdir(clip.with_name("folder.mp4")), "media-is-directory"),
    "an empty file": (lambda clip: _touch(clip.with_name("empty.mp4")), "media-empty"),
    "a truncated mp4": (_truncated_mp4, "media-unreadable"),
    "a text file": (lambda clip: _write(clip.with_name("notes.mp4"), "hello"), "media-unreadable"),
    "video without sound": (
        lambda clip: video_only(clip.with_name("silent film.mp4"), 1.0),
        "media-no-audio",
    ),
}


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _touch(path: Path) -> Path:
    path.touch()
    return path


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _one_error(err: str, reference: str) -> None:
    """One clear message: an error line with its reference, a hint, no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, err
    assert f"[{reference}]" in err
    assert any(line.startswith("hint:") for line in lines), err
    assert "Traceback" not in err


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_clear_error_and_leaves_nothing(
    case: str, clip: Path, fake_backend: FakeBackendPlugin, capsys: pytest.CaptureFixture[str]
) -> None:
    make, reference = BAD_INPUTS[case]
    bad = make(clip)
    before = _listing(clip.parent)
    code = main(["generate", "--backend", "fake", str(bad)])
    assert code != 0
    _one_error(capsys.readouterr().err, reference)
    assert _listing(clip.parent) == before
    assert fake_backend.instances == []  # nothing reached the model


def test_existing_subtitles_are_kept_without_overwrite(
    clip: Path, fake_backend: FakeBackendPlugin, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = clip.with_name("talk.en.srt")
    mine.write_text("1\n00:00:01,000 --> 00:00:02,000\nmy own\n", encoding="utf-8")
    before = _listing(clip.parent)
    code = main(["generate", "--backend", "fake", str(clip)])
    assert code != 0
    _one_error(capsys.readouterr().err, "output-exists")
    assert _listing(clip.parent) == before
    assert mine.read_text(encoding="utf-8").endswith("my own\n")

    assert main(["generate", "--backend", "fake", "--overwrite", str(clip)]) == 0
    assert clip.with_name("talk.en.srt.bak").read_text(encoding="utf-8").endswith("my own\n")
    assert "my own" not in mine.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("argv", "reference"),
    [
        (["--targets", "en,de"], "bad-targets"),
        (["--format", "ass,docx"], "bad-format"),
        (["--max-chunk", "45"], "bad-chunk-length"),
        (["--max-chars", "5"], "bad-max-chars"),
        (["--batch-size", "0"], "bad-batch-size"),
        (["--backend", "nope"], "unknown-backend"),
        (["--audio-stream", "-1"], "bad-audio-stream"),
        (["--audio-stream", "3"], "audio-stream-out-of-range"),
    ],
)
def test_bad_options_are_one_clear_error(
    argv: list[str],
    reference: str,
    clip: Path,
    fake_backend: FakeBackendPlugin,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = _listing(clip.parent)
    argv = ["generate", "--backend", "fake", *argv, str(clip)]
    assert main(argv) != 0
    _one_error(capsys.readouterr().err, reference)
    assert _listing(clip.parent) == before


def test_out_pointing_at_a_file(
    clip: Path, fake_backend: FakeBackendPlugin, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["generate", "--backend", "fake", "--out", str(clip), str(clip)]) == 2
    _one_error(capsys.readouterr().err, "out-not-a-folder")


def test_debug_shows_the_traceback(clip: Path, fake_backend: FakeBackendPlugin) -> None:
    with pytest.raises(SubplugError):
        main(["--debug", "generate", "--backend", "fake", "--targets", "de", str(clip)])


@needs_espeak
def test_a_path_with_spaces_and_cyrillic(
    clip: Path, fake_backend: FakeBackendPlugin, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = clip.parent / "мой фильм" / "part 1"
    folder.mkdir(parents=True)
    media = folder / "Сайн байна уу — clip.mp4"
    clip.rename(media)
    assert main(["generate", "--backend", "fake", str(media)]) == 0
    assert _listing(folder) == [
        "Сайн байна уу — clip.en-mn.ass",
        "Сайн байна уу — clip.en.srt",
        "Сайн байна уу — clip.mn.srt",
        "Сайн байна уу — clip.mp4",
    ]
    assert "Сайн байна уу — clip.en.srt" in capsys.readouterr().err


@needs_espeak
def test_a_name_with_brackets_is_shown_as_it_is(
    clip: Path, fake_backend: FakeBackendPlugin, capsys: pytest.CaptureFixture[str]
) -> None:
    media = clip.with_name("talk [final].mp4")
    clip.rename(media)
    assert main(["generate", "--backend", "fake", str(media)]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "talk [final].mp4 done" in err  # the progress bar's line
    assert "wrote " in err and "talk [final].en.srt" in err


def test_silence_is_a_warning_not_an_error(
    tmp_path: Path, fake_backend: FakeBackendPlugin, capsys: pytest.CaptureFixture[str]
) -> None:
    quiet = make_media(tmp_path / "quiet.flac", [silence(3.0, 44_100)], sample_rate=44_100)
    assert main(["generate", "--backend", "fake", str(quiet)]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "No speech found" in err
    assert _listing(tmp_path) == ["quiet.flac"]


# --------------------------------------------------------- unwritable out folder


@pytest.fixture
def unwritable_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder this user cannot create files in."""
    if os.geteuid() != 0:
        folder = tmp_path / "locked"
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    # root may write anywhere its permission bits say no; sysfs refuses new files even
    # to root (and nothing is written there: the check fails before any file exists).
    folder = Path("/sys/kernel")
    if not folder.is_dir():
        pytest.skip("running as root without /sys: no folder root cannot write")
    yield folder


def test_unwritable_output_folder(
    clip: Path,
    unwritable_folder: Path,
    fake_backend: FakeBackendPlugin,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = _listing(unwritable_folder)
    code = main(["generate", "--backend", "fake", "--out", str(unwritable_folder), str(clip)])
    assert code != 0
    _one_error(capsys.readouterr().err, "output-not-writable")
    assert _listing(unwritable_folder) == before
    assert _listing(clip.parent) == ["talk.mp4"]
    assert fake_backend.instances == []  # refused before any work


def test_output_folder_that_cannot_be_created(
    clip: Path,
    unwritable_folder: Path,
    fake_backend: FakeBackendPlugin,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = unwritable_folder / "subplug-subtitles"
    assert main(["generate", "--backend", "fake", "--out", str(out), str(clip)]) != 0
    _one_error(capsys.readouterr().err, "output-not-writable")
    assert not out.exists()


# ------------------------------------------------------------------------- jsonl


def _jsonl(text: str) -> list[dict[str, object]]:
    events = [json.loads(line) for line in text.splitlines()]
    assert all(e["v"] == JSONL_VERSION and "event" in e and "time" in e for e in events)
    return events


def test_jsonl_stream(
    clip: Path, fake_backend: FakeBackendPlugin, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = clip.with_name("missing.mp4")
    code = main(["generate", "--backend", "fake", "--jsonl", str(missing), str(clip)])
    assert code == 1
    out = capsys.readouterr().out
    events = _jsonl(out)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "job-start" and kinds[-1] == "job-done"
    assert {"file-start", "stage", "progress", "file-error", "file-done"} <= set(kinds)
    error = next(e for e in events if e["event"] == "file-error")
    assert error["media"] == str(missing)
    assert error["error"]["reference"] == "media-not-found"  # type: ignore[index]
    done = next(e for e in events if e["event"] == "file-done")
    assert {o["path"] for o in done["outputs"]} == {  # type: ignore[attr-defined]
        str(clip.with_name(name)) for name in ("talk.en-mn.ass", "talk.en.srt", "talk.mn.srt")
    }
    assert events[-1]["ok"] == 1 and events[-1]["failed"] == 1 and events[-1]["exit_code"] == 1
    documented = (Path(__file__).resolve().parents[2] / "docs" / "jsonl.md").read_text("utf-8")
    for kind in set(kinds):
        assert f"| `{kind}` |" in documented, f"event {kind} is not in docs/jsonl.md"


def test_jsonl_usage_error_is_a_single_line(
    clip: Path, fake_backend: FakeBackendPlugin, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["generate", "--backend", "fake", "--jsonl", "--format", "docx", str(clip)]) == 2
    captured = capsys.readouterr()
    (event,) = _jsonl(captured.out)
    assert event["event"] == "job-done" and event["exit_code"] == 2
    assert event["error"]["reference"] == "bad-format"  # type: ignore[index]
    _one_error(captured.err, "bad-format")


# ----------------------------------------------------------------- Ctrl-C, resume


@needs_espeak
def test_ctrl_c_keeps_the_journal_and_a_rerun_resumes(clip: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    command = [sys.executable, "-m", "subplug", "generate", "--jsonl", "--backend", "fake"]
    command += ["--max-chunk", "4", "--batch-size", "1", "--format", "srt", str(clip)]
    child = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(home, SUBPLUG_FAKE_DELAY="2"),
    )
    lines: list[str] = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            lines.append(line)
            event = json.loads(line)
            if event["event"] == "progress" and event["done"] >= 1:
                child.send_signal(signal.SIGINT)  # what Ctrl-C in a terminal sends
                break
        lines.extend(child.stdout)
        stderr = child.stderr.read() if child.stderr else ""
        code = child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert code == 130, stderr
    events = _jsonl("".join(lines))
    assert events[-1]["event"] == "job-done"
    assert events[-1]["error"]["reference"] == "interrupted"  # type: ignore[index]
    _one_error(stderr, "interrupted")
    assert _listing(clip.parent) == ["home", "talk.mp4"], "no partial subtitles"
    (journal,) = (home / "journal").glob("*.jsonl")
    finished = len(journal.read_text(encoding="utf-8").splitlines())
    assert finished >= 1

    rerun = subprocess.run(command, capture_output=True, text=True, env=_env(home), timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    events = _jsonl(rerun.stdout)
    progress = [e for e in events if e["event"] == "progress"]
    assert progress[0]["resumed"] == finished and progress[0]["done"] == finished
    assert progress[-1]["done"] == progress[-1]["total"] > finished
    assert _listing(clip.parent) == ["home", "talk.en.srt", "talk.mn.srt", "talk.mp4"]
    assert not journal.exists()


@needs_espeak
def test_sigterm_stops_like_ctrl_c(clip: Path, tmp_path: Path) -> None:
    """A host program cancelling the job (VLC, Kdenlive) sends SIGTERM."""
    home = tmp_path / "home"
    command = [sys.executable, "-m", "subplug", "generate", "--jsonl", "--backend", "fake"]
    command += ["--max-chunk", "4", "--batch-size", "1", str(clip)]
    child = subprocess.Popen(
        command, stdout=subprocess.PIPE, text=True, env=_env(home, SUBPLUG_FAKE_DELAY="2")
    )
    try:
        assert child.stdout is not None
        lines = []
        for line in child.stdout:
            lines.append(line)
            if json.loads(line).get("stage") == "transcribe":
                child.send_signal(signal.SIGTERM)
                break
        lines.extend(child.stdout)
        code = child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert code == 130
    last = _jsonl("".join(lines))[-1]
    assert last["event"] == "job-done" and last["exit_code"] == 130
    assert last["error"]["reference"] == "interrupted"  # type: ignore[index]
    assert [p for p in _listing(clip.parent) if p != "home"] == ["talk.mp4"]


# ------------------------------------------------------------------------ doctor


class _BracketCheck:
    """A doctor check whose words hold square brackets, as pip extras and paths do."""

    @hookimpl
    def subplug_doctor_checks(self, register) -> None:  # type: ignore[no-untyped-def]
        def run() -> CheckResult:
            return CheckResult(
                CheckStatus.WARN, "extras [train] missing in /tmp/[a]", 'pip install "x[train]"'
            )

        register(DoctorCheck("brackets[1]", run))


def test_doctor_table_shows_brackets_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    from subplug import plugins

    plugins.register(_BracketCheck(), name="bracket-check")
    main(["doctor"])
    out = " ".join(capsys.readouterr().out.split())
    assert "brackets[1]" in out
    assert "extras [train] missing in /tmp/[a]" in out
    assert 'hint: pip install "x[train]"' in out


def test_doctor_json(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["doctor", "--json"])
    report = json.loads(capsys.readouterr().out)
    checks = {c["name"]: c for c in report["checks"]}
    expected = {"python", "torch", "devices", "pyav", "ffmpeg", "speech-detection", "cache"}
    assert expected | {"models", "plugins"} <= set(checks)
    for check in report["checks"]:
        assert check["status"] in ("ok", "warn", "fail", "skip")
        assert check["summary"] and isinstance(check["seconds"], float)
        if check["status"] in ("warn", "fail"):
            assert check["hint"], check
    assert checks["speech-detection"]["status"] == "ok", checks["speech-detection"]
    assert checks["pyav"]["status"] == "ok"
    assert checks["cache"]["details"]["path"].startswith(os.environ["SUBPLUG_HOME"])
    assert checks["models"]["status"] == "warn"  # an empty cache: a hint to pull or import
    assert report["ok"] is (code == 0)
    assert report["ok"] is all(c["status"] != "fail" for c in report["checks"])


def test_doctor_in_a_pipe_is_plain_text_and_not_ready_without_a_model() -> None:
    """Piped: no colour codes, no spaces at line ends; with an empty cache the last line
    says what is missing instead of "Ready."."""
    result = subprocess.run(
        [sys.executable, "-m", "subplug", "doctor"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "COLUMNS": "80"},
    )
    lines = result.stdout.splitlines()
    assert lines and all(line == line.rstrip() for line in lines), lines
    assert "\x1b[" not in result.stdout
    assert any(line.startswith("models ") and " warn " in line for line in lines)
    assert "no model is in the cache yet" in lines[-1] and "subplug models pull" in lines[-1]
    assert "Ready." not in result.stdout
    assert result.returncode == 0


def test_doctor_verdict_says_ready_only_when_a_model_is_there() -> None:
    from subplug.doctor import CheckOutcome, Report, verdict

    def outcome(name: str, status: CheckStatus) -> CheckOutcome:
        return CheckOutcome(name, "g", CheckResult(status, "x", "h"), 0.0)

    ok = Report([outcome("models", CheckStatus.OK), outcome("python", CheckStatus.OK)])
    assert verdict(ok, self_test=False) == ("green", "Ready.")
    assert verdict(ok, self_test=True) == ("green", "Self-test passed: ready.")
    warned = Report([outcome("models", CheckStatus.OK), outcome("vlc", CheckStatus.WARN)])
    assert verdict(warned, self_test=False) == ("green", "Ready (1 warning above).")
    empty = Report([outcome("models", CheckStatus.WARN)])
    style, text = verdict(empty, self_test=True)
    assert style == "yellow" and "no model is in the cache yet" in text
    failed = Report([outcome("models", CheckStatus.OK), outcome("pyav", CheckStatus.FAIL)])
    assert verdict(failed, self_test=False)[0] == "red"


def test_models_list_shows_the_default_legend_only_with_the_default_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from subplug import cache
    from subplug.testing.tiny import build_tiny_model

    cache.import_model(build_tiny_model(tmp_path / "tiny"), name="tiny")
    assert main(["models", "list"]) == 0
    assert "default model" not in capsys.readouterr().out


def test_summary_lines_count_files_time_audio_cues_and_resumed_chunks() -> None:
    from subplug.progress import summary_lines

    done = [
        {"cues": {"en": 3, "mn": 3}, "outputs": [{}, {}, {}], "resumed": 2, "duration": 60.0},
        {"cues": {"en": 1, "mn": 0}, "outputs": [{}], "resumed": 0, "duration": 30.0},
    ]
    job = {"ok": 2, "failed": 1, "audio_seconds": 90.0, "seconds": 45.0}
    lines = summary_lines(done, job, 3)
    assert lines == [
        "Done: 2 of 3 files in 45 s: 1 min 30 s of audio at 2.00x real time.",
        "Cues: 4 English, 3 Mongolian; 4 files written.",
        "Resumed an interrupted run: 2 chunks taken from its journal.",
        "1 file failed (see the errors above).",
    ]
    assert summary_lines([], {}, 1) == []


def test_generate_ends_with_a_summary(
    clip: Path, fake_backend: FakeBackendPlugin, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["generate", "--backend", "fake", "--source", "en", str(clip)]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "Done: 1 of 1 file in " in err and "of audio at " in err
    assert "English" in err and "files written" in err


def test_names_that_are_not_utf8_or_hold_a_newline_are_subtitled(
    clip: Path, fake_backend: FakeBackendPlugin, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file name with bytes that are not UTF-8 (Python keeps them as lone surrogates)
    or with a line break: subtitles are written beside it, the .ass title and the
    messages show a printable name, and --jsonl stays valid JSON."""
    odd = clip.with_name(os.fsdecode(b"bad\xff.mp4"))
    broken = clip.with_name("line\nbreak.mp4")
    shutil.copy(clip, odd)
    shutil.copy(clip, broken)
    assert main(["generate", "--backend", "fake", "--source", "en", str(odd), str(broken)]) == 0
    ass = odd.with_name(os.fsdecode(b"bad\xff.en-mn.ass"))
    assert ass.exists() and odd.with_name(os.fsdecode(b"bad\xff.en.srt")).exists()
    titles = [
        p.read_text(encoding="utf-8") for p in (ass, broken.with_name("line\nbreak.en-mn.ass"))
    ]
    assert "Title: bad\ufffd.mp4" in titles[0] and "Title: line break.mp4" in titles[1]
    err = capsys.readouterr().err
    assert "bad\ufffd.en-mn.ass" in err and "Done: 2 of 2 files" in " ".join(err.split())
    code = main(
        ["generate", "--backend", "fake", "--source", "en", "--jsonl", "--overwrite", str(odd)]
    )
    assert code == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[-1]["event"] == "job-done" and events[-1]["ok"] == 1
