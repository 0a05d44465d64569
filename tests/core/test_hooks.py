"""The hook contract: every hook is documented in docs/plugin_hooks.md with its exact
signature, and every hook has a test here (``test_hook_<name>``) that registers a real
plugin implementing it and checks what a user sees."""

from __future__ import annotations

import inspect
import json
import re
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from subplug import hookspecs, plugins
from subplug.cli import Commands, main
from subplug.engine import Engine
from subplug.errors import SubplugError
from subplug.hookspecs import hookimpl
from subplug.testing.fake import EN_WORDS, MN_WORDS, FakeBackend
from subplug.types import (
    BackendOptions,
    Capabilities,
    CheckResult,
    CheckStatus,
    DoctorCheck,
    GenerateOptions,
    HostStatus,
    JobEvent,
    StyleOptions,
    SubtitleFormat,
    Tracks,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "plugin_hooks.md"


def _hooks() -> dict[str, Callable[..., object]]:
    return {
        name: function
        for name, function in vars(hookspecs).items()
        if name.startswith("subplug_") and hasattr(function, "subplug_spec")
    }


def _signature(function: Callable[..., object]) -> str:
    """``def name(arg: Annotation, …) -> Return`` as written in the hookspec source."""
    signature = inspect.signature(function)
    params = ", ".join(
        f"{name}: {param.annotation}" for name, param in signature.parameters.items()
    )
    return f"def {function.__name__}({params}) -> {signature.return_annotation}"


# --------------------------------------------------------------------- meta-tests


def test_there_are_hooks() -> None:
    assert set(_hooks()) == {
        "subplug_register_backends",
        "subplug_register_translators",
        "subplug_register_formats",
        "subplug_register_hosts",
        "subplug_register_commands",
        "subplug_doctor_checks",
        "subplug_job_event",
    }


@pytest.mark.parametrize("name", sorted(_hooks()))
def test_every_hook_is_documented_with_its_exact_signature(name: str) -> None:
    docs = DOCS.read_text(encoding="utf-8")
    section = re.search(rf"^### {name}\n(.*?)(?=^##|\Z)", docs, re.MULTILINE | re.DOTALL)
    assert section is not None, f"docs/plugin_hooks.md has no '### {name}' section"
    block = re.search(r"```python\n(.*?)\n```", section.group(1), re.DOTALL)
    assert block is not None, f"the {name} section has no python signature block"
    assert block.group(1).strip() == _signature(_hooks()[name])
    assert len(section.group(1).split()) > 30, f"the {name} section says too little"


@pytest.mark.parametrize("name", sorted(_hooks()))
def test_every_hook_has_a_docstring(name: str) -> None:
    doc = inspect.getdoc(_hooks()[name]) or ""
    assert "Called" in doc, f"{name}: say when it is called"
    assert "Returns" in doc or "return value" in doc, f"{name}: say what it returns"


@pytest.mark.parametrize("name", sorted(_hooks()))
def test_every_hook_has_a_test(name: str) -> None:
    test = globals().get(f"test_hook_{name}")
    assert callable(test), f"add test_hook_{name} to {__file__}"


# ------------------------------------------------------------------ the hook tests


class EchoBackend(FakeBackend):
    name = "echo"


class EchoBackendPlugin:
    def __init__(self) -> None:
        self.options: list[BackendOptions] = []

    @hookimpl
    def subplug_register_backends(self, register):  # type: ignore[no-untyped-def]
        def factory(options: BackendOptions) -> EchoBackend:
            self.options.append(options)
            return EchoBackend(options)

        register("echo", factory)


def test_hook_subplug_register_backends(tmp_path: Path) -> None:
    plugin = EchoBackendPlugin()
    plugins.register(plugin, name="echo-plugin")
    assert "echo" in plugins.backends() and "gemma3n" in plugins.backends()
    options = GenerateOptions(
        backend="echo", backend_options=BackendOptions(model=str(tmp_path), device="cpu")
    )
    with Engine() as engine:
        backend = engine.backend(options)
        assert isinstance(backend, EchoBackend)
        assert engine.backend(options) is backend  # loaded once, then kept
    assert backend.closed
    assert [o.model for o in plugin.options] == [str(tmp_path)]


class CheckedFactory:
    """A backend factory with the optional fail-fast ``check(options)``."""

    def __init__(self) -> None:
        self.checked: list[BackendOptions] = []
        self.loaded = 0

    def __call__(self, options: BackendOptions) -> EchoBackend:
        self.loaded += 1
        return EchoBackend(options)

    def check(self, options: BackendOptions) -> None:
        self.checked.append(options)
        if options.model is None or not Path(options.model).is_dir():
            raise SubplugError(
                "model-not-found",
                f"No model folder at {options.model}.",
                "Give --model a folder.",
            )


class CheckedBackendPlugin:
    def __init__(self) -> None:
        self.factory = CheckedFactory()

    @hookimpl
    def subplug_register_backends(self, register):  # type: ignore[no-untyped-def]
        register("checked", self.factory)


def test_a_backend_check_fails_the_job_before_any_media_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plugin = CheckedBackendPlugin()
    plugins.register(plugin, name="checked-plugin")
    log = EventLog()
    plugins.register(log, name="event-log")
    missing_model = tmp_path / "no-model"
    media = tmp_path / "missing.mp4"  # would fail with media-not-found if it were read
    code = main(["generate", "--backend", "checked", "--model", str(missing_model), str(media)])
    assert code == 2
    err = capsys.readouterr().err
    assert "[model-not-found]" in err and str(missing_model) in err and "Traceback" not in err
    assert [o.model for o in plugin.factory.checked] == [str(missing_model)]
    assert plugin.factory.loaded == 0 and log.events == []  # no job started, no media read
    # With a model there, the check passes and the job goes on to the media.
    assert main(["generate", "--backend", "checked", "--model", str(tmp_path), str(media)]) == 1
    assert "media-not-found" in capsys.readouterr().err
    assert len(plugin.factory.checked) == 2


class ScribeBackend(FakeBackend):
    """Transcribes English and Mongolian, translates nothing, must be told the language."""

    name = "scribe"
    capabilities = Capabilities(
        transcribes=("en", "mn"),
        translates=(),
        combined=False,
        detects_language=False,
        plain_text=True,
    )


#: A Mongolian word for each of the fake backend's English words.
GLOSSARY = {word: MN_WORDS[i % len(MN_WORDS)] for i, word in enumerate(EN_WORDS)}


class Glossary:
    """A word-for-word English → Mongolian text translator."""

    name = "glossary"
    directions = (("en", "mn"),)

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], str, str]] = []
        self.closed = False

    def translate(self, texts: Sequence[str], source: str, target: str) -> list[str]:
        self.calls.append((list(texts), source, target))
        return [
            " ".join(GLOSSARY.get(word.strip(".").lower(), word) for word in text.split())
            for text in texts
        ]

    def close(self) -> None:
        self.closed = True

    def describe(self) -> dict[str, str]:
        return {"translator": "glossary"}


class ScribeWithGlossaryPlugin:
    def __init__(self) -> None:
        self.translators: list[Glossary] = []

    @hookimpl
    def subplug_register_backends(self, register):  # type: ignore[no-untyped-def]
        register("scribe", ScribeBackend)

    @hookimpl
    def subplug_register_translators(self, register):  # type: ignore[no-untyped-def]
        def factory(options: BackendOptions) -> Glossary:
            self.translators.append(Glossary())
            return self.translators[-1]

        factory.check = lambda options: {"directions": Glossary.directions}  # type: ignore[attr-defined]
        register("glossary", factory)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_hook_subplug_register_translators(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A transcription-only backend gets its Mongolian from the registered translator;
    without it (or for a direction it lacks) the job is refused before any media is read."""
    from subplug.testing.media import speech_clip

    plugin = ScribeWithGlossaryPlugin()
    plugins.register(plugin, name="scribe-plugin")
    assert "glossary" in plugins.translators() and "nllb" in plugins.translators()
    clip = speech_clip(tmp_path / "hi.wav", ["Hello there, friend."]).path
    command = ["generate", "--backend", "scribe", "--source", "en", "--format", "srt", str(clip)]

    assert main(command) == 2
    err = capsys.readouterr().err
    assert "[cannot-translate]" in err and "--translator" in err
    assert main([*command[:-1], "--translator", "glossary", "--source", "mn", str(clip)]) == 2
    assert "[cannot-translate]" in capsys.readouterr().err  # it has no mn → en
    assert not list(tmp_path.glob("*.srt")) and plugin.translators == []

    assert main([*command[:-1], "--translator", "glossary", str(clip)]) == 0, capsys.readouterr()
    english = (tmp_path / "hi.en.srt").read_text(encoding="utf-8")
    mongolian = (tmp_path / "hi.mn.srt").read_text(encoding="utf-8")
    (glossary,) = plugin.translators
    ((texts, source, target),) = glossary.calls
    assert (source, target) == ("en", "mn") and len(texts) == 1
    assert texts[0].split()[0] in english  # it translated the transcription…
    words = [GLOSSARY[w.strip(".").lower()] for w in texts[0].split()]
    assert " ".join(words[:3]) in " ".join(mongolian.split())  # …into the Mongolian file
    assert glossary.closed


def _render_txt(tracks: Tracks, langs: list[str], style: StyleOptions) -> str:
    return "\n".join(cue.text for lang in langs for cue in tracks.tracks[lang].cues)


class TxtFormatPlugin:
    @hookimpl
    def subplug_register_formats(self, register):  # type: ignore[no-untyped-def]
        register(SubtitleFormat("txt", bilingual=False, write=_render_txt))
        # A later registration replaces a default writer.
        register(SubtitleFormat("vtt", bilingual=False, write=_render_txt, extension="vtt"))


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_hook_subplug_register_formats(tmp_path: Path) -> None:
    from subplug.testing import FakeBackendPlugin
    from subplug.testing.media import speech_clip

    plugins.register(TxtFormatPlugin(), name="txt-plugin")
    plugins.register(FakeBackendPlugin(), name="fake-backend")
    assert plugins.formats()["vtt"].write is _render_txt
    assert plugins.formats()["ass"].bilingual
    clip = speech_clip(tmp_path / "hi.wav", ["Hello there, friend."]).path
    assert main(["generate", "--backend", "fake", "--format", "txt,vtt", str(clip)]) == 0
    english = (tmp_path / "hi.en.txt").read_text(encoding="utf-8")
    assert english and not english.startswith("WEBVTT")
    assert (tmp_path / "hi.en.vtt").read_text(encoding="utf-8") == english
    assert any("\u0400" <= ch <= "\u04ff" for ch in (tmp_path / "hi.mn.txt").read_text("utf-8"))


class DemoHost:
    name = "demo"

    def __init__(self, folder: Path) -> None:
        self.marker = folder / "installed"

    def install(self) -> HostStatus:
        self.marker.write_text("yes", encoding="utf-8")
        return self.status()

    def uninstall(self) -> HostStatus:
        self.marker.unlink(missing_ok=True)
        return self.status()

    def status(self) -> HostStatus:
        here = self.marker.exists()
        return HostStatus(here, str(self.marker) if here else None, "1.0", "demo host")


class DemoHostPlugin:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @hookimpl
    def subplug_register_hosts(self, register):  # type: ignore[no-untyped-def]
        register(DemoHost(self.folder))


def test_hook_subplug_register_hosts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plugins.register(DemoHostPlugin(tmp_path), name="demo-host")
    assert {"demo", "vlc", "obs", "kdenlive"} <= set(plugins.hosts())
    assert main(["install", "demo", "--json"]) == 0
    assert (tmp_path / "installed").exists()
    assert main(["status", "demo", "--json"]) == 0
    assert main(["uninstall", "demo", "--json"]) == 0
    install, status, uninstall = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert install["installed"] and status["installed"] and not uninstall["installed"]
    assert status["location"] == str(tmp_path / "installed") and status["version"] == "1.0"
    assert main(["install", "nowhere"]) == 2
    err = capsys.readouterr().err
    assert "[unknown-host]" in err and "demo" in err


class HelloCommandPlugin:
    @hookimpl
    def subplug_register_commands(self, cli: Commands) -> None:
        cli.add(
            "hello",
            help="say hello",
            setup=lambda parser: parser.add_argument("--name", default="world"),
            run=lambda args: print(f"hello {args.name}") or 3,
        )


def test_hook_subplug_register_commands(capsys: pytest.CaptureFixture[str]) -> None:
    plugins.register(HelloCommandPlugin(), name="hello")
    assert main(["hello", "--name", "Бат"]) == 3
    assert capsys.readouterr().out == "hello Бат\n"
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "say hello" in capsys.readouterr().out

    class Clash:
        @hookimpl
        def subplug_register_commands(self, cli: Commands) -> None:
            cli.add("generate", help="again", setup=lambda p: None, run=lambda a: 0)

    plugins.register(Clash(), name="clash")
    assert main(["hello"]) == 2
    assert "[duplicate-command]" in capsys.readouterr().err


class ChecksPlugin:
    @hookimpl
    def subplug_doctor_checks(self, register):  # type: ignore[no-untyped-def]
        register(DoctorCheck("demo-ok", lambda: CheckResult(CheckStatus.OK, "all good"), "demo"))
        register(DoctorCheck("demo-broken", _broken_check, "demo"))


def _broken_check() -> CheckResult:
    raise RuntimeError("the demo check itself is broken")


def test_hook_subplug_doctor_checks(capsys: pytest.CaptureFixture[str]) -> None:
    plugins.register(ChecksPlugin(), name="demo-checks")
    names = [check.name for check in plugins.doctor_checks()]
    assert names[0] == "python"  # defaults first, in registration order
    assert names.index("demo-ok") < names.index("demo-broken")
    assert main(["doctor", "--json"]) == 1
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks["demo-ok"]["status"] == "ok" and checks["demo-ok"]["group"] == "demo"
    broken = checks["demo-broken"]
    assert broken["status"] == "fail"
    assert "RuntimeError: the demo check itself is broken" in broken["summary"]
    assert checks["python"]["status"] == "ok"  # one broken check hides no other


class EventLog:
    def __init__(self) -> None:
        self.events: list[JobEvent] = []

    @hookimpl
    def subplug_job_event(self, event: JobEvent) -> None:
        self.events.append(event)


def test_hook_subplug_job_event(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = EventLog()
    plugins.register(log, name="event-log")
    plugins.register(EchoBackendPlugin(), name="echo-plugin")
    missing = tmp_path / "missing.mp4"
    assert main(["generate", "--backend", "echo", str(missing)]) == 1
    kinds = [e.kind for e in log.events]
    assert kinds == ["job-start", "file-start", "stage", "file-error", "job-done"]
    assert log.events[2].data["stage"] == "probe"
    error = log.events[3]
    assert error.media == missing and error.data["error"]["reference"] == "media-not-found"
    done = log.events[-1].data
    assert (done["ok"], done["failed"], done["exit_code"]) == (0, 1, 1)
    assert all(isinstance(e.data["time"], float) for e in log.events)
    capsys.readouterr()


def test_implementations_may_take_fewer_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    class Quiet:
        calls = 0

        @hookimpl
        def subplug_job_event(self) -> None:  # takes none of the hook's arguments
            Quiet.calls += 1

    plugins.register(Quiet(), name="quiet")
    plugins.job_event(JobEvent("warning", None, {"message": "x"}))
    assert Quiet.calls == 1


def test_a_plugin_with_a_misspelled_hook_is_rejected() -> None:
    class Typo:
        @hookimpl
        def subplug_register_format(self, register):  # type: ignore[no-untyped-def]
            """Missing the final s."""

    with pytest.raises(Exception, match="unknown hook"):
        plugins.register(Typo(), name="typo")


def test_a_plugin_error_in_a_child_process_names_the_module(tmp_path: Path) -> None:
    import subprocess

    env = {"SUBPLUG_PLUGINS": "subplug_no_such_plugin", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "subplug", "doctor"],
        capture_output=True,
        text=True,
        env={**env, "SUBPLUG_HOME": str(tmp_path)},
        timeout=60,
    )
    assert result.returncode == 2
    assert "[plugin-not-importable]" in result.stderr and "Traceback" not in result.stderr
    assert "subplug_no_such_plugin" in result.stderr


def test_errors_render_their_reference_and_hint() -> None:
    error = SubplugError("demo-error", "Something went wrong.", "Do this instead.")
    assert str(error) == "Something went wrong. [demo-error]\nhint: Do this instead."
    assert error.to_dict()["hint"] == "Do this instead."
