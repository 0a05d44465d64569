"""The engine end to end on real speech (espeak-ng video, real decoding, real silero-vad)
with the fake backend registered as a real plugin; subtitle files are parsed back."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import pysubs2
import pytest
from subplug import plugins, prompts
from subplug.cli import main
from subplug.engine import Engine
from subplug.errors import Cancelled
from subplug.hookspecs import hookimpl
from subplug.testing import FakeBackend, FakeBackendPlugin, fake_answer
from subplug.testing.media import SpeechClip, speech_clip
from subplug.types import BackendRequest, CueOptions, GenerateOptions, JobEvent, Task

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng not installed (apt install espeak-ng)"
)

PHRASES = (
    "Good morning, and welcome to the show.",
    "Today we talk about the weather in the mountains.",
    "Thank you for listening.",
)
RULES = CueOptions()
#: VAD pads speech by 0.1 s and a cue may reach max_lead into silence to be readable.
SLACK = 0.1 + RULES.max_lead + 0.05


@pytest.fixture(scope="module")
def clip_source(tmp_path_factory: pytest.TempPathFactory) -> SpeechClip:
    folder = tmp_path_factory.mktemp("clip")
    return speech_clip(folder / "talk.mp4", PHRASES, pause=1.2, video=True)


@pytest.fixture
def clip(clip_source: SpeechClip, tmp_path: Path) -> SpeechClip:
    """A private copy of the clip in this test's folder."""
    path = tmp_path / clip_source.path.name
    shutil.copy(clip_source.path, path)
    return SpeechClip(path, clip_source.speech, clip_source.duration, clip_source.texts)


def _options(**changes: object) -> GenerateOptions:
    base: dict[str, object] = {"backend": "fake", "source": "en"}
    base.update(changes)
    return GenerateOptions(**base)  # type: ignore[arg-type]


class Recorder:
    """A ``subplug_job_event`` plugin keeping every event."""

    def __init__(self) -> None:
        self.events: list[JobEvent] = []

    @hookimpl
    def subplug_job_event(self, event: JobEvent) -> None:
        self.events.append(event)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    plugin = Recorder()
    plugins.register(plugin, name="recorder")
    yield plugin


def _check_file_rules(path: Path, clip: SpeechClip, lang_styles: set[str]) -> pysubs2.SSAFile:
    subs = pysubs2.load(str(path))
    assert len(subs) > 0
    first, last = clip.speech[0][0], clip.speech[-1][1]
    for event in subs:
        start, end = event.start / 1000, event.end / 1000
        lines = event.plaintext.split("\n")
        assert event.style in lang_styles
        assert 1 <= len(lines) <= RULES.max_lines, event
        assert all(len(line) <= 42 for line in lines), event
        assert RULES.min_duration - 0.01 <= end - start <= RULES.max_duration + 0.01, event
        assert len(" ".join(lines)) / (end - start) <= RULES.max_cps + 0.5, event
        # Inside the speech: never before the first word or after the last (beyond the
        # allowed lead), and always overlapping some speech.
        assert start >= first - SLACK and end <= last + SLACK, event
        assert any(start < b + SLACK and end > a - SLACK for a, b in clip.speech), event
    return subs


# --------------------------------------------------------------------- end to end


def test_generate_writes_files_whose_cues_sit_on_the_speech(
    clip: SpeechClip, fake_backend: FakeBackendPlugin, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["generate", "--backend", "fake", "--source", "en", str(clip.path)])
    assert code == 0
    folder = clip.path.parent
    ass, en, mn = (folder / f"talk.{name}" for name in ("en-mn.ass", "en.srt", "mn.srt"))
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["talk.mp4", ass.name, en.name, mn.name]
    )
    bilingual = _check_file_rules(ass, clip, {"EN", "MN"})
    english = _check_file_rules(en, clip, {"Default"})
    mongolian = _check_file_rules(mn, clip, {"Default"})
    # English and Mongolian change together, and the .ass holds exactly both tracks.
    assert [(e.start, e.end) for e in english] == [(e.start, e.end) for e in mongolian]
    in_ass = sorted((e.start, e.end, e.plaintext) for e in bilingual if e.style == "EN")
    assert len(in_ass) == len(english)
    for (start, end, text), srt in zip(in_ass, english, strict=True):
        # ASS keeps centiseconds, SRT milliseconds.
        assert abs(start - srt.start) <= 10 and abs(end - srt.end) <= 10
        assert text == srt.plaintext
    assert any("\u0400" <= ch <= "\u04ff" for e in mongolian for ch in e.plaintext)
    # One cue per phrase at least: the pauses between phrases separate cues.
    assert len(english) >= len(PHRASES)
    for (_, end_a), (start_b, _) in zip(clip.speech, clip.speech[1:], strict=False):
        pause = (end_a + start_b) / 2
        assert not any(e.start / 1000 < pause - 0.3 and e.end / 1000 > pause + 0.3 for e in english)
    err = capsys.readouterr().err
    assert "wrote" in err and "Traceback" not in err


def test_auto_source_transcribes_then_translates(
    clip: SpeechClip, fake_backend: FakeBackendPlugin
) -> None:
    with Engine() as engine:
        (tracks,) = engine.run([clip.path], _options(source="auto", formats=("srt",)))
    assert tracks is not None and tracks.source_lang == "en"
    (backend,) = fake_backend.instances
    first, second = backend.calls
    assert {r.instruction for r in first} == {prompts.instruction(1)}
    assert {r.instruction for r in second} == {prompts.instruction(6)}
    assert all(r.source is None for r in first) and all(r.source == "en" for r in second)
    assert tracks.tracks["en"].cues and tracks.tracks["mn"].cues


def test_known_source_is_one_combined_call(
    clip: SpeechClip, fake_backend: FakeBackendPlugin
) -> None:
    with Engine() as engine:
        engine.run([clip.path], _options(source="en"))
    (backend,) = fake_backend.instances
    requests = [r for call in backend.calls for r in call]
    assert {r.instruction for r in requests} == {prompts.instruction(8)}
    assert all(r.task is Task.BOTH for r in requests)
    assert all(
        r.max_new_tokens == prompts.max_new_tokens_for(r.chunk.duration, Task.BOTH)
        for r in requests
    )


def test_mongolian_audio_is_detected_and_translated_into_english(clip: SpeechClip) -> None:
    def mongolian_speaker(request: BackendRequest) -> str:
        # The audio "is" Mongolian: a transcription comes back in Cyrillic.
        source = "mn" if request.source is None else request.source
        return fake_answer(BackendRequest(**{**request.__dict__, "source": source}))

    plugin = FakeBackendPlugin(script=mongolian_speaker)
    plugins.register(plugin, name="fake-mn")
    with Engine() as engine:
        (tracks,) = engine.run([clip.path], _options(source="auto", formats=("srt",)))
    assert tracks is not None and tracks.source_lang == "mn"
    first, second = plugin.instances[0].calls
    assert {r.instruction for r in second} == {prompts.instruction(7)}
    assert all("\u0400" <= c.text[0] <= "\u04ff" for c in tracks.tracks["mn"].cues)


def test_one_target_writes_one_language(clip: SpeechClip, fake_backend: FakeBackendPlugin) -> None:
    with Engine() as engine:
        (tracks,) = engine.run([clip.path], _options(targets=("mn",), formats=("ass", "vtt")))
    assert tracks is not None
    assert sorted(p.name for p in tracks.outputs) == ["talk.mn.ass", "talk.mn.vtt"]
    (backend,) = fake_backend.instances
    assert {r.instruction for call in backend.calls for r in call} == {prompts.instruction(6)}
    subs = pysubs2.load(str(clip.path.parent / "talk.mn.ass"))
    assert set(subs.styles) == {"MN"}


def test_out_folder_and_events(
    clip: SpeechClip, fake_backend: FakeBackendPlugin, recorder: Recorder, tmp_path: Path
) -> None:
    out = tmp_path / "subs"
    with Engine() as engine:
        engine.run([clip.path], _options(out_dir=out))
    assert sorted(p.name for p in out.iterdir()) == [
        "talk.en-mn.ass",
        "talk.en.srt",
        "talk.mn.srt",
    ]
    kinds = recorder.kinds()
    assert kinds[0] == "job-start" and kinds[1] == "file-start" and kinds[-1] == "job-done"
    stages = [e.data["stage"] for e in recorder.events if e.kind == "stage"]
    # The model loads before transcription starts, and the stage says so.
    assert stages == ["probe", "decode", "vad", "model-load", "transcribe", "write"]
    done = next(e for e in recorder.events if e.kind == "file-done")
    assert {o["format"] for o in done.data["outputs"]} == {"ass", "srt"}
    assert done.data["source_lang"] == "en"
    progress = [e.data for e in recorder.events if e.kind == "progress"]
    assert progress[-1]["done"] == progress[-1]["total"] and progress[-1]["percent"] == 100.0


def test_silence_makes_no_files_and_a_warning(
    tmp_path: Path, fake_backend: FakeBackendPlugin, recorder: Recorder
) -> None:
    from subplug.testing.media import make_media, silence, tone

    quiet = make_media(
        tmp_path / "quiet.m4a", [silence(2.0, 48_000), tone(440, 2.0, 48_000)], sample_rate=48_000
    )
    with Engine() as engine:
        (tracks,) = engine.run([quiet], _options())
    assert tracks is not None and not tracks.outputs
    assert [p.name for p in tmp_path.iterdir()] == ["quiet.m4a"]
    (warning,) = (e for e in recorder.events if e.kind == "warning")
    assert warning.data["reference"] == "no-speech"
    assert fake_backend.instances == []  # no model was loaded for nothing


def _english_only(request: BackendRequest) -> str:
    """A model that never manages Mongolian: the combined answer's Mongolian section is
    empty and a translation request gets nothing back."""
    if request.task is Task.TRANSLATE:
        return ""
    answer = fake_answer(request)
    return answer.split("---")[0] + "---\n\n### Mongolian\n\n" if "---" in answer else answer


def test_a_language_without_text_gets_no_empty_file_and_a_warning(
    clip: SpeechClip, recorder: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    plugins.register(FakeBackendPlugin(script=_english_only), name="english-only")
    code = main(["generate", "--backend", "fake", "--source", "en", str(clip.path)])
    assert code == 0
    folder = clip.path.parent
    assert sorted(p.name for p in folder.iterdir()) == ["talk.en-mn.ass", "talk.en.srt", "talk.mp4"]
    for name in ("talk.en-mn.ass", "talk.en.srt"):
        subs = pysubs2.load(str(folder / name))  # readable, with English cues
        assert len(subs) > 0 and {e.style for e in subs} <= {"EN", "Default"}
    (warning,) = (e for e in recorder.events if e.kind == "warning")
    assert warning.data["reference"] == "no-text" and warning.data["langs"] == ["mn"]
    assert "Mongolian" in warning.data["message"]
    done = next(e for e in recorder.events if e.kind == "file-done")
    assert [o["path"] for o in done.data["outputs"]] == [
        str(folder / "talk.en-mn.ass"),
        str(folder / "talk.en.srt"),
    ]
    err = capsys.readouterr().err
    assert "warning: talk.mp4: The model gave no Mongolian text" in " ".join(err.split())


def test_one_target_with_no_usable_text_says_that_nothing_was_written(
    clip: SpeechClip, capsys: pytest.CaptureFixture[str], subplug_home: Path
) -> None:
    import json

    plugins.register(FakeBackendPlugin(script=lambda request: "  \n"), name="mute")
    args = ["generate", "--backend", "fake", "--targets", "en", "--jsonl", str(clip.path)]
    assert main(args) == 0  # like silence: a finding, not a failure
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    (warning,) = (e for e in events if e["event"] == "warning")
    assert warning["reference"] == "no-text" and warning["langs"] == ["en"]
    assert "no subtitle file was written" in warning["message"]
    assert warning["media"] == str(clip.path)
    done = next(e for e in events if e["event"] == "file-done")
    assert done["outputs"] == []
    assert [p.name for p in clip.path.parent.iterdir()] == ["talk.mp4"]
    assert not list((subplug_home / "journal").glob("*.jsonl")), "a finished file keeps no journal"


def test_text_that_cannot_fit_is_counted_in_a_warning(clip: SpeechClip, recorder: Recorder) -> None:
    def rambling(request: BackendRequest) -> str:
        if request.chunk.index:
            return fake_answer(request)
        words = " ".join(f"word{i}" for i in range(400))
        return f"### English\n\n{words}\n\n---\n\n### Mongolian\n\nСайн байна уу."

    plugins.register(FakeBackendPlugin(script=rambling), name="rambling")
    with Engine() as engine:
        (tracks,) = engine.run([clip.path], _options(max_chunk=4.0, formats=("srt",)))
    assert tracks is not None and tracks.tracks["en"].dropped
    (warning,) = (e for e in recorder.events if e.kind == "warning")
    assert warning.data["reference"] == "cues-dropped" and warning.data["lang"] == "en"
    assert warning.data["count"] == len(tracks.tracks["en"].dropped)
    assert f"{warning.data['count']} English subtitles" in warning.data["message"]
    assert warning.data["message"] in tracks.warnings


def test_writing_tracks_without_cues_warns_instead_of_writing_empty_files(
    tmp_path: Path, recorder: Recorder
) -> None:
    from subplug.types import Track, Tracks

    media = tmp_path / "talk.mp4"
    empty = Tracks(media, None, {"en": Track("en", ()), "mn": Track("mn", ())})
    with Engine() as engine:
        written = engine.write(empty, _options(formats=("ass", "srt", "vtt")))
    assert written.outputs == () and list(tmp_path.iterdir()) == []
    (warning,) = (e for e in recorder.events if e.kind == "warning")
    assert warning.data["reference"] == "no-output" and warning.media == media
    assert written.warnings == (warning.data["message"],)


def test_a_bad_file_does_not_stop_the_others(
    clip: SpeechClip, fake_backend: FakeBackendPlugin, recorder: Recorder
) -> None:
    missing = clip.path.parent / "missing.mp4"
    with Engine() as engine:
        results = engine.run([missing, clip.path], _options(formats=("srt",)))
    assert results[0] is None and results[1] is not None
    error = next(e for e in recorder.events if e.kind == "file-error")
    assert error.media == missing and error.data["error"]["reference"] == "media-not-found"
    assert recorder.events[-1].data["exit_code"] == 1


class LossyBackend(FakeBackend):
    """A broken third-party backend: it answers only the first request of a batch."""

    name = "lossy"

    def generate(self, requests: Sequence[BackendRequest]) -> list[str]:
        return super().generate(requests[:1])


class LossyPlugin:
    @hookimpl
    def subplug_register_backends(self, register):  # type: ignore[no-untyped-def]
        register("lossy", LossyBackend)


def test_a_backend_that_drops_answers_is_a_bug_not_a_silent_gap(clip: SpeechClip) -> None:
    plugins.register(LossyPlugin(), name="lossy")
    options = _options(backend="lossy", max_chunk=4.0)
    with Engine() as engine, pytest.raises(RuntimeError, match="returned 1 answers for 3"):
        engine.generate(clip.path, options)


# ------------------------------------------------------------------------ journal


def test_an_interrupted_run_keeps_its_journal_and_resumes(
    clip: SpeechClip, subplug_home: Path
) -> None:
    options = _options(max_chunk=4.0, backend_options=_batch(1), formats=("srt",))
    seen: list[int] = []

    def interrupted(request: BackendRequest) -> str:
        if seen:
            raise KeyboardInterrupt  # Ctrl-C while the second chunk is transcribed
        seen.append(request.chunk.index)
        return fake_answer(request)

    first = FakeBackendPlugin(script=interrupted)
    plugins.register(first, name="first-run")
    with Engine() as engine, pytest.raises(Cancelled) as info:
        engine.run([clip.path], options)
    assert info.value.exit_code == 130
    assert len(seen) == 1
    assert [p.name for p in clip.path.parent.iterdir()] == ["talk.mp4"], "no partial output"
    journals = list((subplug_home / "journal").glob("*.jsonl"))
    assert len(journals) == 1 and len(journals[0].read_text().splitlines()) == 1

    plugins.unregister(name="first-run")
    second = FakeBackendPlugin()
    plugins.register(second, name="second-run")
    with Engine() as engine:
        (tracks,) = engine.run([clip.path], options)
    assert tracks is not None
    resumed = sorted(r.chunk.index for call in second.instances[0].calls for r in call)
    assert resumed == [i for i in range(len(tracks.transcripts)) if i not in seen]
    assert len(tracks.transcripts) >= 3
    assert not journals[0].exists(), "a finished job removes its journal"
    assert sorted(p.name for p in clip.path.parent.iterdir()) == [
        "talk.en.srt",
        "talk.mn.srt",
        "talk.mp4",
    ]


def test_a_retrained_model_under_the_same_name_does_not_reuse_the_journal(
    clip: SpeechClip, subplug_home: Path, tmp_path: Path
) -> None:
    from subplug.types import BackendOptions

    model = tmp_path / "my-model"
    model.mkdir()
    (model / "config.json").write_text("{}", encoding="utf-8")
    (model / "model.safetensors").write_bytes(b"first training run")
    options = _options(
        max_chunk=4.0,
        formats=("srt",),
        backend_options=BackendOptions(model=str(model), batch_size=1),
    )

    answered: list[int] = []

    def interrupted(request: BackendRequest) -> str:
        if answered:
            raise KeyboardInterrupt
        answered.append(request.chunk.index)
        return fake_answer(request)

    plugins.register(FakeBackendPlugin(script=interrupted), name="first-run")
    with Engine() as engine, pytest.raises(Cancelled):
        engine.run([clip.path], options)
    plugins.unregister(name="first-run")
    assert len(list((subplug_home / "journal").glob("*.jsonl"))) == 1

    # Retrained into the same folder: the first run's chunk is from another model.
    (model / "model.safetensors").write_bytes(b"second training run, other weights")
    second = FakeBackendPlugin()
    plugins.register(second, name="second-run")
    with Engine() as engine:
        (tracks,) = engine.run([clip.path], options)
    assert tracks is not None
    redone = sorted(r.chunk.index for call in second.instances[0].calls for r in call)
    assert redone == list(range(len(tracks.transcripts))), "no chunk may be reused"


def test_no_resume_ignores_the_journal(clip: SpeechClip, subplug_home: Path) -> None:
    plugin = FakeBackendPlugin()
    plugins.register(plugin, name="fake-backend")
    options = _options(max_chunk=4.0, formats=("srt",), resume=False)
    with Engine() as engine:
        engine.run([clip.path], options)
    assert not (subplug_home / "journal").exists() or not any((subplug_home / "journal").iterdir())


def _batch(size: int):  # type: ignore[no-untyped-def]
    from subplug.types import BackendOptions

    return BackendOptions(batch_size=size)


class _Sized(FakeBackend):
    """The fake backend with a batch size of its own, as the real one has (the runtime
    sizes it from free memory)."""

    batch_size = 2


def test_batches_follow_the_backend_and_hold_chunks_of_similar_length(
    clip: SpeechClip, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --batch-size the backend's own batch size decides the group (no fixed
    cap of 8), and the longest chunks go together (their answers are the longest)."""
    from subplug import engine as engine_module

    monkeypatch.setattr(engine_module, "PARTIAL_PROGRESS_EVERY", 0.0)  # every report
    made: list[_Sized] = []

    class Plugin:
        @hookimpl
        def subplug_register_backends(self, register):  # type: ignore[no-untyped-def]
            def factory(options):  # type: ignore[no-untyped-def]
                made.append(_Sized(options))
                return made[-1]

            register("sized", factory)

    plugins.register(Plugin(), name="sized")
    options = _options(backend="sized", max_chunk=2.0, formats=("srt",))
    with Engine() as engine:
        (tracks,) = engine.run([clip.path], options)
    assert tracks is not None and len(tracks.transcripts) >= 4
    calls = made[0].calls
    assert all(len(call) <= 2 for call in calls) and max(len(c) for c in calls) == 2
    durations = [[r.chunk.duration for r in call] for call in calls]
    flat = [d for call in durations for d in call]
    assert flat == sorted(flat, reverse=True), "longest chunks first, similar ones together"
    # Progress moves inside each call (the fake reports after every request), and the
    # job's percentage never goes back.
    percents = [e.data["percent"] for e in recorder.events if e.kind == "progress"]
    assert len(percents) > len(calls) + 1
    assert percents == sorted(percents) and percents[-1] == 100.0
