"""``subplug generate --ray`` on a real local Ray cluster (2 CPUs, one per test module):
the same subtitle files as one-by-one runs, hostile files as failed rows, batches that
mix files; a model actor killed mid-batch and a driver killed mid-job, after which the
job (or its rerun) finishes with every file written once and no journaled chunk
computed again; a rerun of a finished job does no model work. The fake backend runs in
the actors (``SUBPLUG_PLUGINS``) and logs every answered request
(``SUBPLUG_FAKE_LOG``): process, call and the hash of the chunk's samples; with
``SUBPLUG_FAKE_DIE_AT`` an actor's process kills itself in the middle of a batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from archive_media import Archive, copy, tree
from subplug import plugins
from subplug.cli import main
from subplug.jobs.cluster import prepare_remote
from subplug.types import GenerateOptions

COMMON = ["--backend", "fake", "--source", "en", "--max-chunk", "3", "--format", "ass,srt"]
BATCH = ["--batch-size", "4"]
#: Longest wait for a condition in these tests (a loaded CI machine is slow).
PATIENCE = 240.0

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """A local Ray cluster for this module: 2 CPUs, a small object store."""
    ray.init(
        num_cpus=2,
        object_store_memory=200 * 2**20,
        include_dashboard=False,
        log_to_driver=False,
    )
    yield
    ray.shutdown()


@pytest.fixture
def archive(archive_source: Archive, tmp_path: Path) -> Archive:
    return copy(archive_source, tmp_path / "archive")


@pytest.fixture
def fake_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backend ``fake`` in this process and, through the job's environment, in the
    cluster's workers."""
    monkeypatch.setenv("SUBPLUG_PLUGINS", "subplug.testing.fake")
    plugins.reset_plugin_manager()


def _log(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line]


def _reference(
    archive: Archive, out: Path, log: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Each good file alone on this machine; returns chunk digest → file."""
    owner: dict[str, str] = {}
    for media in archive.good:
        relative = media.relative_to(archive.root)
        monkeypatch.setenv("SUBPLUG_FAKE_LOG", str(log))
        assert main(["generate", *COMMON, "--out", str(out / relative.parent), str(media)]) == 0
        for line in _log(log):
            owner.setdefault(str(line["digest"]), str(relative))
    monkeypatch.delenv("SUBPLUG_FAKE_LOG")
    return owner


def _journaled(home: Path) -> int:
    """Chunks in the journals of unfinished files."""
    return sum(len(p.read_text("utf-8").splitlines()) for p in (home / "journal").glob("*.jsonl"))


def _events(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


# ----------------------------------------------------------------------- tests


def test_without_ray_installed_ray_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    code = main(["generate", "--backend", "fake", "--ray", str(tmp_path / "a.mp4")])
    assert code == 2
    err = capsys.readouterr().err
    assert "[ray-not-installed]" in err and 'pip install "subplug[cluster]"' in err


def test_media_a_worker_cannot_see_is_named_as_not_shared(tmp_path: Path) -> None:
    missing = str(tmp_path / "only on the head.mp4")
    options = GenerateOptions(backend="fake")
    elsewhere = prepare_remote(missing, options, head="head-node-that-is-not-this-one")
    assert elsewhere.error is not None and elsewhere.error["reference"] == "media-not-shared"
    assert "same path" in str(elsewhere.error["hint"])
    import socket

    here = prepare_remote(missing, options, head=socket.gethostname())
    assert here.error is not None and here.error["reference"] == "media-not-found"


def test_a_job_on_ray_writes_what_one_by_one_runs_write(
    cluster: None,
    fake_everywhere: None,
    archive: Archive,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    owner = _reference(archive, tmp_path / "alone", tmp_path / "alone.log", monkeypatch)
    capsys.readouterr()
    log = tmp_path / "ray.log"
    monkeypatch.setenv("SUBPLUG_FAKE_LOG", str(log))
    argv = ["generate", *COMMON, *BATCH, "--ray", "-r", str(archive.root)]
    argv += ["--out", str(tmp_path / "job"), "--jsonl"]
    assert main(argv) == 1
    events = _events(capsys.readouterr().out)

    assert tree(tmp_path / "job") == tree(tmp_path / "alone")
    answered = _log(log)
    assert sorted(str(a["digest"]) for a in answered) == sorted(owner), "each chunk once"
    assert {a["pid"] for a in answered} != {os.getpid()}, "the model ran in an actor"
    calls: dict[tuple[object, object], set[str]] = {}
    for a in answered:
        calls.setdefault((a["pid"], a["call"]), set()).add(owner[str(a["digest"])])
    assert any(len(files) > 1 for files in calls.values()), "a batch mixed files"
    failed = {
        Path(str(e["media"])).name: e["error"]["reference"]  # type: ignore[index]
        for e in events
        if e["event"] == "file-error"
    }
    assert failed == {
        "broken.mp3": "media-unreadable",
        "cut off.mp4": "media-unreadable",
        "silent film.mp4": "media-no-audio",
    }

    # The rerun skips every good file and starts no model actor.
    assert main(argv) == 1
    events = _events(capsys.readouterr().out)
    assert len(_log(log)) == len(answered), "no model work"
    assert not any(e.get("stage") == "model-load" for e in events)
    skipped = {e["media"] for e in events if e["event"] == "file-skipped"}
    assert skipped == {str(m) for m in archive.good}


def test_a_model_actor_killed_mid_batch_is_replaced_and_the_job_completes(
    cluster: None,
    fake_everywhere: None,
    archive: Archive,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    owner = _reference(archive, tmp_path / "alone", tmp_path / "alone.log", monkeypatch)
    capsys.readouterr()
    log = tmp_path / "ray.log"
    monkeypatch.setenv("SUBPLUG_FAKE_LOG", str(log))
    # The fifth answer is the first of the second batch (batches of 4 are full until
    # the last): the actor's process kills itself (SIGKILL) right after it.
    monkeypatch.setenv("SUBPLUG_FAKE_DIE_AT", "5")
    argv = ["generate", *COMMON, *BATCH, "--ray", "-r", str(archive.root)]
    argv += ["--out", str(tmp_path / "job"), "--jsonl"]
    assert main(argv) == 1, "finished; only the hostile files failed"
    events = _events(capsys.readouterr().out)
    assert Path(f"{log}.died").exists()
    victim = _log(log)[4]["pid"]

    assert tree(tmp_path / "job") == tree(tmp_path / "alone")
    done = Counter(e["media"] for e in events if e["event"] == "file-done")
    assert done == Counter(str(m) for m in archive.good), "every file written once"
    answered = _log(log)
    assert {str(a["digest"]) for a in answered} == set(owner)
    twice = {d for d, n in Counter(str(a["digest"]) for a in answered).items() if n > 1}
    assert len(twice) == 1, "only the killed batch's one answer was lost"
    first_by = {}
    for a in answered:
        first_by.setdefault(str(a["digest"]), a["pid"])
    assert {first_by[d] for d in twice} == {victim}
    assert any(a["pid"] != victim for a in answered), "Ray restarted the actor"


def test_a_killed_job_resumes_from_its_journals(
    cluster: None,
    fake_everywhere: None,
    archive: Archive,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The driver (``subplug generate --ray auto`` joining this cluster) is killed
    with SIGKILL after some files are written; the same command finishes the job, skips
    the written files and computes no chunk the journals hold."""
    owner = _reference(archive, tmp_path / "alone", tmp_path / "alone.log", monkeypatch)
    home = tmp_path / "home"
    command = [sys.executable, "-m", "subplug", "generate", *COMMON, *BATCH, "--ray", "auto"]
    command += ["-r", str(archive.root), "--out", str(tmp_path / "job"), "--jsonl"]
    env = dict(os.environ, SUBPLUG_HOME=str(home), SUBPLUG_PLUGINS="subplug.testing.fake")
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    child = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=dict(env, SUBPLUG_FAKE_LOG=str(first_log), SUBPLUG_FAKE_DELAY="0.1"),
    )
    written: set[str] = set()
    try:
        assert child.stdout is not None
        for line in child.stdout:
            event = json.loads(line)
            if event["event"] == "file-done":
                written.add(str(event["media"]))
            # Stop it with files written and chunks of unfinished files journaled.
            if written and _journaled(home) > 0:
                break
        child.kill()
        child.wait(timeout=PATIENCE)
    finally:
        if child.poll() is None:
            child.kill()
    journaled = _journaled(home)
    first = [str(a["digest"]) for a in _log(first_log)]
    assert written and journaled > 0

    rerun = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=dict(env, SUBPLUG_FAKE_LOG=str(second_log)),
        timeout=PATIENCE,
    )
    assert rerun.returncode == 1, rerun.stderr[-2000:]
    events = _events(rerun.stdout)
    second = [str(a["digest"]) for a in _log(second_log)]

    assert tree(tmp_path / "job") == tree(tmp_path / "alone")
    skipped = {str(e["media"]) for e in events if e["event"] == "file-skipped"}
    assert skipped == written
    assert len(second) == len(set(second)) and set(first) | set(second) == set(owner)
    by_file: dict[str, int] = {}
    for e in events:
        if e["event"] == "progress":
            by_file[str(e["media"])] = max(by_file.get(str(e["media"]), 0), int(e["resumed"]))
    resumed = sum(by_file.values())
    assert resumed == journaled, "every journaled chunk was taken from the journal"
    in_written = sum(1 for d in owner.values() if str(archive.root / d) in written)
    assert len(second) == len(owner) - in_written - journaled, "nothing journaled redone"
