"""``subplug install kdenlive``: the "Generate EN/MN subtitles" clip job.

Kdenlive is not installed here, and Debian 12's Kdenlive (22.12) predates custom clip
jobs, so the installed version is given by a stand-in ``kdenlive`` program on PATH that
answers ``--version`` the way Kdenlive does (``kdenlive 24.08.1``). The job file is then
read and run the way Kdenlive's ``CustomJobTask`` does (KDE/kdenlive
``src/jobs/customjobtask.cpp``): parameters split on spaces, ``{source}`` and
``{output}`` replaced, progress parsed from stderr lines holding ``percentage:``.
``tests/plugins/kdenlive/kdenlive_gui.py`` checks the same in a real Kdenlive 24.12.
"""

from __future__ import annotations

import configparser
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pysubs2
import pytest
from kdenlive_projects import make_speech_clip
from melt_render import changed, render_frames
from subplug_kdenlive.host import JOB_ID, JOB_NAME

OTHER_JOBS = """[Binary]
{0b9e1c7e-0000-4000-8000-000000000001}=/usr/bin/ffmpeg

[Ids]
{0b9e1c7e-0000-4000-8000-000000000001}=Make proxy by hand

[Output]
{0b9e1c7e-0000-4000-8000-000000000001}=.proxy.mov

[Parameters]
{0b9e1c7e-0000-4000-8000-000000000001}=-i {source} -c copy {output}
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh HOME with its own XDG data folder."""
    home = tmp_path / "home"
    (home / ".local" / "share").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    return home


def stand_in_kdenlive(folder: Path, version: str | None) -> Path:
    """A folder for PATH holding a ``kdenlive`` that prints its version (none if
    ``version`` is None)."""
    folder.mkdir(parents=True, exist_ok=True)
    if version is not None:
        program = folder / "kdenlive"
        program.write_text(f'#!/bin/sh\necho "kdenlive {version}"\n', encoding="utf-8")
        program.chmod(0o755)
    return folder


def subplug(*args: str, path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The ``subplug`` command with PATH limited to ``path`` (so no other Kdenlive or
    dpkg is found)."""
    env = dict(os.environ, PATH=str(path), NO_COLOR="1", COLUMNS="300")
    return subprocess.run(
        [sys.executable, "-m", "subplug", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env=env,
    )


def read_kconfig(path: Path) -> configparser.RawConfigParser:
    config = configparser.RawConfigParser(delimiters=("=",), interpolation=None, strict=True)
    config.optionxform = str  # type: ignore[assignment,method-assign]
    config.read(path, encoding="utf-8")
    return config


def test_install_adds_the_clip_job_and_keeps_other_jobs(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = stand_in_kdenlive(tmp_path / "bin", "24.08.1")
    settings = home / ".local" / "share" / "kdenlive" / "clipjobsettings.rc"
    monkeypatch.delenv("SUBPLUG_HOME")

    # A first install creates the file, readable like the files Kdenlive writes.
    os.umask(0o022)
    done = subplug("install", "kdenlive", path=bin_dir, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(settings.stat().st_mode) == 0o644
    settings.write_text(OTHER_JOBS, encoding="utf-8")

    done = subplug("install", "kdenlive", path=bin_dir, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "kdenlive: installed" in done.stdout
    assert f"location: {settings}" in done.stdout
    assert "version:  24.08.1" in done.stdout
    assert "Clip Jobs" in done.stdout

    config = read_kconfig(settings)
    assert config["Ids"][JOB_ID] == JOB_NAME
    binary = Path(config["Binary"][JOB_ID])
    assert binary.is_absolute() and os.access(binary, os.X_OK)
    # No SUBPLUG_HOME when installing: the job uses the default data folder.
    assert config["Parameters"][JOB_ID] == "kdenlive job {source} {output}"
    assert config["Output"][JOB_ID] == ".en-mn.mlt"
    assert config["EnabledTypes"][JOB_ID] == "va"
    other = "{0b9e1c7e-0000-4000-8000-000000000001}"
    assert config["Ids"][other] == "Make proxy by hand"
    assert config["Parameters"][other] == "-i {source} -c copy {output}"

    # Installing again replaces our entries instead of adding a second job.
    again = subplug("install", "kdenlive", path=bin_dir, cwd=tmp_path)
    assert again.returncode == 0
    assert settings.read_text(encoding="utf-8").count(JOB_ID) == 6

    status = subplug("status", "kdenlive", path=bin_dir, cwd=tmp_path)
    assert "kdenlive: installed" in status.stdout and str(binary) in status.stdout

    # A job written by an older subplug (its output a subtitle file, which Kdenlive
    # fails to open as a clip) is reported, with what to do.
    settings.write_text(
        settings.read_text(encoding="utf-8").replace(".en-mn.mlt", ".en-mn.ass"),
        encoding="utf-8",
    )
    old = subplug("status", "kdenlive", path=bin_dir, cwd=tmp_path)
    assert "older subplug" in old.stdout and "subplug install kdenlive" in old.stdout

    removed = subplug("uninstall", "kdenlive", path=bin_dir, cwd=tmp_path)
    assert removed.returncode == 0
    assert "Removed the clip job" in removed.stdout
    text = settings.read_text(encoding="utf-8")
    assert JOB_ID not in text
    config = read_kconfig(settings)
    assert config["Binary"][other] == "/usr/bin/ffmpeg"
    assert config["Output"][other] == ".proxy.mov"


@pytest.mark.parametrize("version", ["22.12.3", None])
def test_older_or_missing_kdenlive_explains_apply(
    home: Path, tmp_path: Path, version: str | None
) -> None:
    bin_dir = stand_in_kdenlive(tmp_path / "bin", version)
    done = subplug("install", "kdenlive", path=bin_dir, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "kdenlive: not installed" in done.stdout
    assert "subplug kdenlive apply PROJECT.kdenlive" in done.stdout
    if version:
        assert "22.12.3 has no custom clip jobs" in done.stdout
    else:
        assert "Kdenlive is not installed" in done.stdout
    assert not (home / ".local" / "share" / "kdenlive").exists()


def kdenlive_output_path(source: Path, extension: str) -> Path:
    """``CustomJobTask::run``: the clip's folder, the file name up to its first dot
    (``QFileInfo::baseName``), the job's extension; ``-0001`` when that exists."""
    if not extension.startswith("."):
        extension = "." + extension
    base = source.name.split(".")[0]
    dest = source.parent / (base + extension)
    if dest.exists():
        dest = source.parent / (base + "-0001" + extension)
    return dest


def kdenlive_progress(stderr: str) -> list[int]:
    """Progress values as Kdenlive reads them from each line of stderr."""
    values = []
    for line in stderr.splitlines():
        if "percentage:" in line:
            words = line.split("percentage:", 1)[1].split()
            values.append(int(words[0]) if words and words[0].isdigit() else 0)
    return values


def kdenlive_job_command(
    config: configparser.RawConfigParser, clip: Path
) -> tuple[list[str], Path]:
    """The command Kdenlive runs for our job on ``clip``, and its ``{output}``."""
    output = kdenlive_output_path(clip, config["Output"][JOB_ID])
    arguments = [
        word.replace("{source}", str(clip)).replace("{output}", str(output))
        for word in config["Parameters"][JOB_ID].split(" ")
        if word
    ]
    return [config["Binary"][JOB_ID], *arguments], output


@pytest.mark.slow
@pytest.mark.host
def test_installed_job_runs_like_kdenlive_runs_it(
    media_tools: None,
    melt: str,
    tiny_model: Path,
    home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Models in a SUBPLUG_HOME with a space in its name, set when installing only:
    # Kdenlive started from the desktop does not have it in its environment.
    models = tmp_path / "subplug home"
    monkeypatch.setenv("SUBPLUG_HOME", str(models))
    os.umask(0o022)
    bin_dir = stand_in_kdenlive(tmp_path / "bin", "24.08.1")
    assert subplug("install", "kdenlive", path=bin_dir, cwd=tmp_path).returncode == 0
    imported = subplug(
        "models", "import", str(tiny_model), "--name", "gemma3n-en-mn", path=bin_dir, cwd=tmp_path
    )
    assert imported.returncode == 0, imported.stderr
    config = read_kconfig(home / ".local" / "share" / "kdenlive" / "clipjobsettings.rc")
    assert "--home " + str(models).replace(" ", "%20") in config["Parameters"][JOB_ID]

    # A clip whose name has spaces, Cyrillic and several dots.
    clip = make_speech_clip(tmp_path / "clips", name="Talk 1 – Яриа.take2.mp4", seconds=3.0)
    env = {k: v for k, v in os.environ.items() if k != "SUBPLUG_HOME"}
    env["PATH"] = str(bin_dir)
    command, output = kdenlive_job_command(config, clip)
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    progress = kdenlive_progress(done.stderr)
    assert progress[0] == 0 and progress[-1] == 100
    assert progress == sorted(progress) and len(set(progress)) >= 4

    # Kdenlive's {output}: the clip with its subtitles, which Kdenlive adds to the bin.
    assert output.name == "Talk 1 – Яриа.en-mn.mlt"
    # The subtitles, named like `subplug generate` names them (the whole file stem).
    ass = clip.with_name("Talk 1 – Яриа.take2.en-mn.ass")
    subs = pysubs2.load(str(ass))
    assert set(subs.styles) == {"EN", "MN"}
    assert any(e.plaintext.strip() for e in subs)
    for path in (output, ass):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    # The tiny model's words are random: a language it gave no text for gets no .srt,
    # and the job says so on stderr (Kdenlive shows it); the others parse, timed in the clip.
    written = []
    for lang, language in (("en", "English"), ("mn", "Mongolian")):
        srt = clip.with_name(f"Talk 1 – Яриа.take2.{lang}.srt")
        if not srt.exists():
            assert f"no {language} text" in " ".join(done.stderr.split()), done.stderr
            continue
        starts = [e.start for e in pysubs2.load(str(srt))]
        assert starts and all(0 <= s < 3000 for s in starts)
        assert stat.S_IMODE(srt.stat().st_mode) == 0o644
        written.append(srt)
    assert written

    # melt (what Kdenlive plays clips with) draws the subtitles on the added clip.
    cues = [(e.start / 1000, e.end / 1000) for e in subs if e.plaintext.strip()]
    middle = round((cues[0][0] + cues[0][1]) / 2 * 25)
    drawn = changed(
        render_frames(clip, middle, (320, 180)), render_frames(output, middle, (320, 180))
    )
    assert drawn[middle, 120:].sum() > 30 and not drawn[middle, :60].any()

    # A rerun: Kdenlive numbers its {output}; the subtitles keep their names and the
    # earlier ones are kept as backups.
    before = ass.read_bytes()
    command, second = kdenlive_job_command(config, clip)
    assert second.name == "Talk 1 – Яриа-0001.en-mn.mlt"
    again = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stderr
    assert second.exists() and ass.exists()
    assert ass.with_name(ass.name + ".bak").read_bytes() == before
    names = sorted(p.name for p in clip.parent.iterdir())
    assert not [n for n in names if "-0001" in n and not n.endswith(".mlt")], names


def test_job_on_a_missing_file_fails_with_a_message_kdenlive_shows(
    home: Path, tmp_path: Path
) -> None:
    # Kdenlive shows the job's stderr when no output file appears.
    done = subplug(
        "kdenlive",
        "job",
        str(tmp_path / "gone.mp4"),
        str(tmp_path / "gone.en-mn.mlt"),
        path=tmp_path,
        cwd=tmp_path,
    )
    assert done.returncode != 0
    assert re.search(r"^error: .*gone\.mp4.*\[media-missing\]", done.stderr, re.M)
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "gone.en-mn.mlt").exists()
