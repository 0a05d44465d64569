"""A media file's outputs are one unit (subplug.files): a kill -9 between two files
leaves a set that the rerun completes without --overwrite, the crashed run's
temporary files are removed, and a file the user made or changed is never replaced."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from subplug import files
from subplug.errors import SubplugError
from subplug.testing.media import speech_clip

PHRASES = ("Hello and welcome.", "This is the second sentence.")

# Runs write_files in a child that kills itself (SIGKILL, no clean-up of any kind) just
# before it moves its second file into place.
CRASHING_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from subplug import files

    commits = []
    original = files._commit

    def commit(temp, path, *, overwrite):
        commits.append(path)
        if len(commits) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        original(temp, path, overwrite=overwrite)

    files._commit = commit
    out, records = Path(sys.argv[1]), Path(sys.argv[2])
    files.write_files(
        [(out / "talk.en.srt", "first run EN\\n"), (out / "talk.mn.srt", "first run MN\\n")],
        overwrite=False,
        records=records,
    )
    """
)


def crash_between_two_files(out: Path, records: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", CRASHING_WRITER, str(out), str(records)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert (out / "talk.en.srt").read_text() == "first run EN\n"
    assert not (out / "talk.mn.srt").exists()


def temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_set_cut_by_kill_9_is_completed_by_the_rerun_without_overwrite(tmp_path: Path) -> None:
    out, records = tmp_path / "out", tmp_path / "records"
    out.mkdir()
    crash_between_two_files(out, records)
    assert len(temps(out)) == 1  # the second file's, left by the killed process

    items = [(out / "talk.en.srt", "rerun EN\n"), (out / "talk.mn.srt", "rerun MN\n")]
    written = files.write_files(items, overwrite=False, records=records)

    assert written == [out / "talk.en.srt", out / "talk.mn.srt"]
    assert (out / "talk.en.srt").read_text() == "rerun EN\n"
    assert (out / "talk.mn.srt").read_text() == "rerun MN\n"
    assert sorted(p.name for p in out.iterdir()) == ["talk.en.srt", "talk.mn.srt"]  # no .bak
    assert list(records.iterdir()) == []
    # Finished: the set is the user's now, and a rerun refuses as always.
    with pytest.raises(SubplugError) as refused:
        files.write_files(items, overwrite=False, records=records)
    assert refused.value.reference == "output-exists"


def test_a_file_the_user_changed_after_the_crash_is_not_replaced(tmp_path: Path) -> None:
    out, records = tmp_path / "out", tmp_path / "records"
    out.mkdir()
    crash_between_two_files(out, records)
    (out / "talk.en.srt").write_text("my own corrections\n")

    items = [(out / "talk.en.srt", "rerun EN\n"), (out / "talk.mn.srt", "rerun MN\n")]
    with pytest.raises(SubplugError) as refused:
        files.write_files(items, overwrite=False, records=records)

    assert refused.value.reference == "output-exists"
    assert (out / "talk.en.srt").read_text() == "my own corrections\n"
    assert not (out / "talk.mn.srt").exists()
    files.write_files(items, overwrite=True, records=records)
    assert (out / "talk.en.srt.bak").read_text() == "my own corrections\n"
    assert (out / "talk.mn.srt").read_text() == "rerun MN\n"


def test_only_the_temporary_files_of_processes_that_are_gone_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "talk.en.srt"
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    gone = int(child.stdout)
    dead = tmp_path / f".talk.en.srt.{gone}.abcd1234.tmp"
    alive = tmp_path / f".talk.en.srt.{os.getppid()}.efgh5678.tmp"
    other = tmp_path / ".talk.en.srt.someone-elses.tmp"
    for path in (dead, alive, other):
        path.write_text("x")

    assert files.remove_stale_temps([target]) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, other.name])


# ---------------------------------------------------------------- generate


@pytest.fixture(scope="module")
def talk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (apt install espeak-ng)")
    return speech_clip(tmp_path_factory.mktemp("clip") / "talk.wav", PHRASES[:2]).path


def generate(media: Path, home: Path, *, crash: bool) -> subprocess.CompletedProcess[str]:
    """``subplug generate`` with the fake backend in a child process; with ``crash``, the
    child kills itself just before it moves its second subtitle file into place."""
    code = textwrap.dedent(
        f"""
        import os, signal, sys
        from subplug import files
        commits = []
        original = files._commit
        def commit(temp, path, *, overwrite):
            commits.append(path)
            if {crash!r} and len(commits) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            original(temp, path, overwrite=overwrite)
        files._commit = commit
        from subplug.cli import main
        sys.exit(main(["generate", "--backend", "fake", "--format", "ass,srt", sys.argv[1]]))
        """
    )
    env = dict(os.environ, SUBPLUG_HOME=str(home), SUBPLUG_PLUGINS="subplug.testing.fake")
    return subprocess.run([sys.executable, "-c", code, str(media)], capture_output=True,
                          text=True, timeout=300, env=env, check=False)  # fmt: skip


def test_generate_killed_between_two_outputs_completes_them_on_the_rerun(
    talk: Path, tmp_path: Path
) -> None:
    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    for folder in (clean, crashed):
        folder.mkdir()
        shutil.copy(talk, folder / "talk.wav")
    assert generate(clean / "talk.wav", tmp_path / "home-clean", crash=False).returncode == 0
    expected = {p.name: p.read_bytes() for p in clean.iterdir() if p.name != "talk.wav"}
    assert len(expected) == 3  # .en-mn.ass, .en.srt, .mn.srt

    killed = generate(crashed / "talk.wav", tmp_path / "home", crash=True)
    assert killed.returncode == -signal.SIGKILL
    assert 0 < len([p for p in crashed.iterdir() if p.suffix in (".ass", ".srt")]) < 3

    rerun = generate(crashed / "talk.wav", tmp_path / "home", crash=False)

    assert rerun.returncode == 0, rerun.stderr
    found = {p.name: p.read_bytes() for p in crashed.iterdir() if p.name != "talk.wav"}
    assert found == expected  # complete, no temporary file, no backup
