"""Jobs of many files on one machine: folders, globs and manifests; cross-file batching
that mixes files in one model call and writes every file exactly as a one-by-one run
does; hostile files as failed rows; reruns that skip finished files and resume
interrupted ones without redoing a journaled chunk. The fake backend is a real plugin;
which file a model request came from is told by the hash of its samples."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from archive_media import Archive, copy, tree
from subplug import plugins
from subplug.cli import main
from subplug.errors import SubplugError
from subplug.hookspecs import hookimpl
from subplug.jobs.inputs import JobFile, expand, read_manifest, walk
from subplug.testing import FakeBackend, FakeBackendPlugin
from subplug.testing.fake import chunk_digest
from subplug.types import GenerateOptions

COMMON = ["--backend", "fake", "--source", "en", "--max-chunk", "3", "--format", "ass,srt"]


class _Sized(FakeBackend):
    """The fake backend with a batch size of its own, as the real one has; with
    ``interrupt_at`` its N-th call is a Ctrl-C."""

    batch_size = 4
    interrupt_at: int | None = None

    def generate(self, requests, **kwargs):  # type: ignore[no-untyped-def]
        if self.interrupt_at is not None and len(self.calls) + 1 == self.interrupt_at:
            raise KeyboardInterrupt
        return super().generate(requests, **kwargs)


class SizedPlugin(FakeBackendPlugin):
    """Registers backend ``fake`` as :class:`_Sized`."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        super().__init__()
        self.interrupt_at = interrupt_at

    @hookimpl
    def subplug_register_backends(self, register: Callable[..., None]) -> None:
        def factory(options):  # type: ignore[no-untyped-def]
            backend = _Sized(options, self.script)
            backend.interrupt_at = self.interrupt_at
            self.instances.append(backend)
            return backend

        register("fake", factory)


@pytest.fixture
def archive(archive_source: Archive, tmp_path: Path) -> Archive:
    return copy(archive_source, tmp_path / "archive")


@pytest.fixture
def sized() -> SizedPlugin:
    plugin = SizedPlugin()
    plugins.register(plugin, name="sized-fake")
    return plugin


def _digests(backend: FakeBackend) -> list[list[str]]:
    return [[chunk_digest(r.chunk.samples) for r in call] for call in backend.calls]


def _one_by_one(archive: Archive, out: Path, sized: SizedPlugin) -> dict[str, str]:
    """Each good file run alone (the engine's single-file path), its subtitles under
    ``out`` at the file's relative place; returns chunk digest → file."""
    owner: dict[str, str] = {}
    for media in archive.good:
        relative = media.relative_to(archive.root)
        before = len(sized.instances)
        code = main(["generate", *COMMON, "--out", str(out / relative.parent), str(media)])
        assert code == 0
        for call in _digests(sized.instances[before]):
            for digest in call:
                owner[digest] = str(relative)
    return owner


# ------------------------------------------------------------------- inputs


def test_a_folder_walk_takes_media_files_sorted_and_leaves_out_others(tmp_path: Path) -> None:
    for name in (
        "b/2.MP4",
        "b/1.wav",
        "a.mkv",
        ".hidden.mp4",
        ".cache/x.mp4",
        "notes.txt",
        "sub.srt",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in walk(tmp_path)] == [
        "a.mkv",
        "b/1.wav",
        "b/2.MP4",
    ]


def test_out_mirrors_the_tree_of_a_folder_a_glob_and_a_manifest(tmp_path: Path) -> None:
    root, out = tmp_path / "in", tmp_path / "out"
    for name in ("x.mp4", "d/y.wav", "d/e/z.mp3"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    expected = [
        JobFile(root / "d/e/z.mp3", out / "d/e"),
        JobFile(root / "d/y.wav", out / "d"),
        JobFile(root / "x.mp4", out),
    ]
    assert expand([root], recursive=True, out=out) == expected
    assert expand([f"{root}/**/*.*"], out=out) == expected
    manifest = tmp_path / "in" / "list.txt"
    manifest.write_text(
        "# a comment\n\nd/e/z.mp3\n"
        '{"media": "d/y.wav", "source": "mn"}\n'
        f'{{"media": "{root / "x.mp4"}", "out": "elsewhere"}}\n'
        "d/y.wav\n",
        encoding="utf-8",
    )
    assert expand([], manifest=manifest, out=out) == [
        JobFile(root / "d/e/z.mp3", out / "d/e"),
        JobFile(root / "d/y.wav", out / "d", "mn"),
        JobFile(root / "x.mp4", root / "elsewhere"),
    ]
    # Without --out the subtitles go beside the media; a folder without --recursive
    # stays a path (its error says to add --recursive).
    assert expand([root / "x.mp4", root / "d"]) == [JobFile(root / "x.mp4"), JobFile(root / "d")]


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ('{"media": "a.mp4", "source": "fr"}', "unknown source language 'fr'"),
        ('{"media": "a.mp4", "outdir": "x"}', "outdir"),
        ('{"file": "a.mp4"}', '"media" path'),
        ('{"media": "a.mp4",}', "not valid JSON"),
    ],
)
def test_a_bad_manifest_line_is_one_clear_error(tmp_path: Path, line: str, words: str) -> None:
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("ok.mp4\n" + line + "\n", encoding="utf-8")
    with pytest.raises(SubplugError) as caught:
        read_manifest(manifest)
    assert caught.value.reference == "bad-manifest"
    assert f"{manifest}:2" in caught.value.message and words in caught.value.message
    assert caught.value.hint


def test_usage_mistakes_stop_before_any_work(
    tmp_path: Path, fake_backend: FakeBackendPlugin, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["-r", str(empty)], "no-media-found"),
        ([str(tmp_path / "*.mp4"), str(tmp_path / "x.wav")], "no-media-found"),
        (["--manifest", str(tmp_path / "nope.txt")], "manifest-not-found"),
        ([], "no-media-given"),
        (["--workers", "0", "a.mp4", "b.mp4"], "bad-workers"),
    ]
    for argv, reference in cases:
        assert main(["generate", "--backend", "fake", *argv]) == 2
        err = capsys.readouterr().err
        assert f"[{reference}]" in err and "hint:" in err and "Traceback" not in err
    assert fake_backend.instances == []


# -------------------------------------------------------- the archive job


def test_an_archive_job_writes_what_one_by_one_runs_write_and_mixes_files_in_batches(
    archive: Archive, sized: SizedPlugin, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    owner = _one_by_one(archive, tmp_path / "alone", sized)
    capsys.readouterr()
    runs = len(sized.instances)
    report = tmp_path / "report.csv"
    argv = ["generate", *COMMON, "-r", str(archive.root), "--out", str(tmp_path / "job")]
    code = main([*argv, "--report", str(report), "--jsonl"])
    assert code == 1, "three hostile files failed"

    # Byte-identical subtitles for every good file, nothing for the hostile ones.
    assert tree(tmp_path / "job") == tree(tmp_path / "alone")
    assert len(tree(tmp_path / "job")) == 3 * len(archive.good)

    # One model, whose calls mixed files and computed every chunk exactly once.
    (backend,) = sized.instances[runs:]
    calls = _digests(backend)
    assert sorted(d for call in calls for d in call) == sorted(owner)
    assert all(len(call) <= 4 for call in calls)
    assert any(len({owner[d] for d in call}) > 1 for call in calls)
    assert len(calls) < len(owner) / 2, "batches are mostly full"

    with report.open(encoding="utf-8") as handle:
        rows = {row["media"]: row for row in csv.DictReader(handle)}
    assert len(rows) == len(archive.good) + len(archive.hostile)
    failed = {Path(m).name: r["error"] for m, r in rows.items() if r["status"] == "failed"}
    assert failed == {
        "broken.mp3": "media-unreadable",
        "cut off.mp4": "media-unreadable",
        "silent film.mp4": "media-no-audio",
    }
    assert all(rows[str(m)]["status"] == "done" for m in archive.good)

    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    last = events[-1]
    assert last["event"] == "job-done" and last["exit_code"] == 1
    assert (last["ok"], last["failed"], last["skipped"]) == (12, 3, 0)
    done = [e["media"] for e in events if e["event"] == "file-done"]
    assert sorted(done) == sorted(str(m) for m in archive.good), "each file written once"
    progress = [e for e in events if e["event"] == "job-progress"]
    assert progress[-1]["files_done"] == 15 and progress[-1]["audio_seconds"] > 20
    documented = (Path(__file__).resolve().parents[2] / "docs" / "jsonl.md").read_text("utf-8")
    for kind in {e["event"] for e in events}:
        assert f"| `{kind}` |" in documented, f"event {kind} is not in docs/jsonl.md"

    # A rerun skips every finished file without loading the model; the hostile ones
    # fail again.
    rerun = main([*argv, "--jsonl"])
    assert rerun == 1
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(sized.instances) == runs + 1, "no model loaded"
    skipped = sorted(e["media"] for e in events if e["event"] == "file-skipped")
    assert skipped == sorted(str(m) for m in archive.good)
    assert not any(e["event"] == "stage" and e["media"] in skipped for e in events)
    assert tree(tmp_path / "job") == tree(tmp_path / "alone")


def test_an_interrupted_job_resumes_without_redoing_a_journaled_chunk(
    archive: Archive, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C at the third model call; the rerun computes exactly the chunks whose
    results were not journaled (the third call's among them) and writes every file."""
    interrupted = SizedPlugin(interrupt_at=3)
    plugins.register(interrupted, name="sized-fake")
    argv = ["generate", *COMMON, "-r", str(archive.root), "--out", str(tmp_path / "job")]
    assert main([*argv, "--jsonl"]) == 130
    first = [d for call in _digests(interrupted.instances[0]) for d in call]
    assert len(first) == 8, "two full calls were answered and journaled"
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[-1]["event"] == "job-done" and events[-1]["error"]["reference"] == "interrupted"
    written = {e["media"] for e in events if e["event"] == "file-done"}
    assert not [p for p in (tmp_path / "job").rglob("*") if ".tmp" in p.name]

    plugins.unregister(interrupted)
    again = SizedPlugin()
    plugins.register(again, name="sized-fake-2")
    assert main([*argv, "--jsonl"]) == 1
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    second = [d for call in _digests(again.instances[0]) for d in call]
    assert set(second).isdisjoint(first), "no journaled chunk was computed again"
    assert sorted(first + second) == sorted(_all_chunks(archive)), "each chunk once"
    skipped = {e["media"] for e in events if e["event"] == "file-skipped"}
    done = {e["media"] for e in events if e["event"] == "file-done"}
    assert skipped == written and skipped | done == {str(m) for m in archive.good}
    resumed: dict[str, int] = {}
    for e in events:
        if e["event"] == "progress":
            resumed[e["media"]] = max(resumed.get(e["media"], 0), e["resumed"])
    assert sum(resumed.values()) == 8 - _chunks_in(written, archive)


def _plans(archive: Archive) -> dict[str, list[str]]:
    """Chunk digests of each good file, from the engine's own CPU stage."""
    from subplug.engine import Engine

    options = GenerateOptions(backend="fake", source="en", max_chunk=3.0)
    with Engine(events=lambda event: None) as engine:
        options = engine.prepare(options)
        plans = {}
        for media in archive.good:
            prepared = engine.prepare_media(media, options)
            plans[str(media)] = [chunk_digest(prepared.chunk(s).samples) for s in prepared.plan]
    return plans


def _all_chunks(archive: Archive) -> list[str]:
    return [d for digests in _plans(archive).values() for d in digests]


def _chunks_in(files: set[str], archive: Archive) -> int:
    plans = _plans(archive)
    return sum(len(plans[f]) for f in files)


def test_per_file_source_and_out_from_a_manifest(
    archive: Archive, sized: SizedPlugin, tmp_path: Path
) -> None:
    manifest = tmp_path / "jobs.jsonl"
    a, b = archive.good[0], archive.good[1]
    manifest.write_text(
        json.dumps({"media": str(a), "source": "mn", "out": str(tmp_path / "mn")})
        + "\n"
        + json.dumps({"media": str(b)})
        + "\n",
        encoding="utf-8",
    )
    report = tmp_path / "report.jsonl"
    code = main(["generate", *COMMON, "--manifest", str(manifest), "--report", str(report)])
    assert code == 0
    rows = {r["media"]: r for r in map(json.loads, report.read_text("utf-8").splitlines())}
    assert rows[str(a)]["source_lang"] == "mn" and rows[str(b)]["source_lang"] == "en"
    assert sorted(p.name for p in (tmp_path / "mn").iterdir()) == [
        f"{a.stem}.en-mn.ass",
        f"{a.stem}.en.srt",
        f"{a.stem}.mn.srt",
    ]
    assert (b.parent / f"{b.stem}.en-mn.ass").is_file()
    (backend,) = sized.instances
    sources = {r.source for call in backend.calls for r in call}
    assert sources == {"en", "mn"}
    assert all(len({r.source for r in call}) == 1 for call in backend.calls)


def test_clashing_outputs_and_overwrite(
    archive: Archive, sized: SizedPlugin, tmp_path: Path
) -> None:
    """Two files with one name in one folder cannot both write NAME.en.srt: the second
    fails; --overwrite redoes finished files, keeping the old ones as .bak."""
    a = archive.good[1]  # talks/weather.wav
    twin = a.with_suffix(".flac")
    twin.write_bytes(a.read_bytes())
    report = tmp_path / "r.jsonl"
    argv = ["generate", *COMMON, "--report", str(report)]
    assert main([*argv, str(a), str(twin)]) == 1
    rows = [json.loads(line) for line in report.read_text("utf-8").splitlines()]
    assert [(Path(r["media"]).name, r["status"]) for r in rows] == [
        ("weather.flac", "failed"),
        ("weather.wav", "done"),
    ]
    assert rows[0]["error"]["reference"] == "output-clash"
    before = os.stat(a.with_name("weather.en.srt")).st_mtime_ns
    assert main([*argv, "--overwrite", str(a), str(archive.good[2])]) == 0
    assert a.with_name("weather.en.srt.bak").is_file()
    assert os.stat(a.with_name("weather.en.srt")).st_mtime_ns >= before


def test_files_without_an_output_folder_take_the_options_own(
    archive: Archive, sized: SizedPlugin, tmp_path: Path
) -> None:
    """``run_job`` with ``out_dir`` in the options and files that name none (as
    bench/archive.py calls it): the subtitles go to ``out_dir``, not beside the media;
    a file's own folder still wins."""
    from subplug.jobs.run import run_job

    out, own = tmp_path / "out", tmp_path / "own"
    a, b = archive.good[1], archive.good[3]  # talks/weather.wav, talks/short.mp3
    options = GenerateOptions(backend="fake", source="en", max_chunk=3.0, out_dir=out)
    state, code = run_job(options, [JobFile(a), JobFile(b, own)], events=lambda event: None)
    assert code == 0 and [row.status for row in state.report.rows] == ["done", "done"]
    assert sorted(p.name for p in out.iterdir()) == [
        "weather.en-mn.ass",
        "weather.en.srt",
        "weather.mn.srt",
    ]
    assert sorted(p.name for p in own.iterdir()) == [
        "short.en-mn.ass",
        "short.en.srt",
        "short.mn.srt",
    ]
    assert not list(a.parent.glob("*.srt"))


def test_a_report_keeps_names_that_are_not_utf8(tmp_path: Path) -> None:
    """JSON lines escape the name (read back as the same name); CSV keeps its bytes."""
    from subplug.jobs.report import DONE, FileRow, Report

    odd = str(tmp_path / os.fsdecode(b"bad\xff.mp4"))
    report = Report()
    report.add(FileRow(odd, DONE, outputs=(odd[:-4] + ".en.srt",), duration=1.0))
    report.add(FileRow(str(tmp_path / "ok.mp4"), DONE))
    jsonl, table = report.write(tmp_path / "r.jsonl"), report.write(tmp_path / "r.csv")
    rows = [json.loads(line) for line in jsonl.read_text("utf-8").splitlines()]
    assert [r["media"] for r in rows] == sorted([odd, str(tmp_path / "ok.mp4")])
    assert os.fsencode(odd) in table.read_bytes()
