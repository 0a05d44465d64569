"""The project model and the writing of subtitles into real Kdenlive project files."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pysubs2
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kdenlive_projects import canonical, make_project, only_insertions, tree, without_subplug
from subplug import __version__
from subplug.errors import SubplugError
from subplug.types import Cue, Track
from subplug_kdenlive import apply, subtitle_track
from subplug_kdenlive.project import KdenliveProject, format_clock, parse_time, parse_version
from subplug_kdenlive.subtitle_track import Layout, choose_layout

EXPECTED = {
    # name: (kdenliveversion, timeline id, layout)
    "av.kdenlive": ((22, 7, 70), "tractor4", Layout.SRT),
    "test-mix.kdenlive": ((22, 11, 70), "tractor4", Layout.SRT),
    "test-nesting.kdenlive": ((24, 1, 95), "{dd00b816-3573-457d-b702-eb49e7ad8924}", Layout.SRT),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reads_real_projects(fixture_copy, name: str) -> None:
    project = KdenliveProject.load(fixture_copy(name))
    version, timeline, layout = EXPECTED[name]
    assert project.kdenlive_version == version
    assert project.timeline().id == timeline
    assert choose_layout(project.kdenlive_version) is layout
    assert project.has_sequences is (name == "test-nesting.kdenlive")
    assert project.profile.fps == Fraction(25)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_apply_adds_only_the_subtitle_track(fixture_copy, hand_tracks, name: str) -> None:
    path = fixture_copy(name)
    original = path.read_bytes()
    result = apply.write(KdenliveProject.load(path), hand_tracks)
    new = path.read_bytes()

    # The backup is the original, byte for byte, under the core's backup name.
    assert result.backup == path.with_name(f"{name}.bak")
    assert result.backup.read_bytes() == original
    # Every change is an insertion: no byte of the original was altered or removed.
    assert only_insertions(original, new)
    # Without our additions the element trees are identical.
    assert canonical(without_subplug(tree(new))) == canonical(tree(original))

    edited = KdenliveProject.load(path)
    timeline = edited.timeline()
    filters = subtitle_track.subtitle_filters(edited, timeline)
    assert len(filters) == 1
    props = edited.properties(filters[0])
    assert props["internal_added"] == "237"
    srt = path.with_name(f"{name}.srt")
    assert props["av.filename"] == str(srt)
    assert result.files == (srt,)
    events = pysubs2.load(str(srt))
    assert [e.start for e in events] == [1000, 3000]
    assert events[0].plaintext.splitlines() == ["Hello world.", "Сайн байна уу."]


def test_second_apply_replaces_its_own_track(fixture_copy, hand_tracks) -> None:
    path = fixture_copy("test-mix.kdenlive")
    first = apply.write(KdenliveProject.load(path), hand_tracks)
    once = path.read_bytes()
    later = {
        "en": Track("en", (Cue(5.0, 6.0, ("Later.",)),)),
        "mn": Track("mn", (Cue(5.0, 6.0, ("Дараа.",)),)),
    }
    result = apply.write(KdenliveProject.load(path), later)
    # Earlier backups are never overwritten: the next free name is taken.
    assert first.backup == path.with_name("test-mix.kdenlive.bak")
    assert result.backup == path.with_name("test-mix.kdenlive.bak.1")
    assert result.replaced == (path.with_name("test-mix.kdenlive.srt.bak"),)
    assert first.backup.read_bytes() != result.backup.read_bytes()
    edited = KdenliveProject.load(path)
    assert len(subtitle_track.subtitle_filters(edited, edited.timeline())) == 1
    # Same filter, same place: the project is byte-identical to the first run's.
    assert path.read_bytes() == once
    assert [e.start for e in pysubs2.load(str(result.files[0]))] == [5000]


def test_sequences_24_08_get_three_ass_tracks(tmp_path: Path, hand_tracks) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")
    path = make_project(tmp_path / "edit.kdenlive", clip, shape="sequences", version="24.08.1")
    project = KdenliveProject.load(path)
    result = apply.write(project, hand_tracks)
    assert result.layout is Layout.ASS
    names = [p.name for p in result.files]
    assert names == ["edit.kdenlive.ass", "edit.kdenlive-1.ass", "edit.kdenlive-2.ass"]

    edited = KdenliveProject.load(path)
    timeline = edited.timeline()
    listing = json.loads(edited.properties(timeline)[subtitle_track.SUBTITLES_LIST])
    assert listing == [
        {"file": str(tmp_path / "edit.kdenlive.ass"), "id": 0, "name": "EN + MN"},
        {"file": str(tmp_path / "edit.kdenlive-1.ass"), "id": 1, "name": "English"},
        {"file": str(tmp_path / "edit.kdenlive-2.ass"), "id": 2, "name": "Mongolian"},
    ]
    props = edited.properties(subtitle_track.subtitle_filters(edited, timeline)[0])
    assert props["av.filename"] == str(tmp_path / "edit.kdenlive.ass")
    assert props["av.alpha"] == "1"

    both = pysubs2.load(str(result.files[0]))
    assert set(both.styles) == {"EN", "MN"}
    # One layer per language (Kdenlive keys events on layer and start), bottom first.
    assert {(e.style, e.layer) for e in both} == {("MN", 0), ("EN", 1)}
    assert both.info["PlayResY"] == "180"
    # Sized like Kdenlive's own subtitles: frame height / 15 for the bottom language.
    assert both.styles["MN"].fontsize == 12 and both.styles["EN"].fontsize < 12
    english = pysubs2.load(str(result.files[1]))
    assert [e.plaintext for e in english] == ["Hello world.", "Second line."]
    mongolian = pysubs2.load(str(result.files[2]))
    assert [e.plaintext for e in mongolian] == ["Сайн байна уу.", "Хоёр дахь мөр."]


def test_kdenlive_version_override_and_boundaries() -> None:
    assert choose_layout((24, 5, 2)) is Layout.SRT
    assert choose_layout((24, 8, 0)) is Layout.ASS
    assert choose_layout((25, 4)) is Layout.ASS
    assert choose_layout(None) is Layout.SRT
    assert parse_version("24.08.70") == (24, 8, 70)
    assert parse_version("") is None


def test_other_sequence_subtitle_names_carry_the_uuid(fixture_copy) -> None:
    project = KdenliveProject.load(fixture_copy("test-nesting.kdenlive"))
    other = project.by_id("{9228b6f1-e900-4ae9-8591-3cd674dbae98}")
    assert other is not None
    path = subtitle_track.subtitle_path(project, other, 1, Layout.ASS)
    assert path.name == "test-nesting.kdenlive{9228b6f1-e900-4ae9-8591-3cd674dbae98}-1.ass"
    main = subtitle_track.subtitle_path(project, project.timeline(), 0, Layout.SRT)
    assert main.name == "test-nesting.kdenlive.srt"


@pytest.mark.parametrize(
    ("content", "reference"),
    [
        (b"<?xml version='1.0'?>\n<mlt><tractor id='t'><track producer='x'/>", "kdenlive-not-xml"),
        (b"not xml at all", "kdenlive-not-xml"),
        (b"<?xml version='1.0'?><playlist id='main_bin'/>", "kdenlive-not-mlt"),
        (b"<mlt><producer id='p'/><playlist id='main_bin'/></mlt>", "kdenlive-no-timeline"),
        (b"", "kdenlive-not-xml"),
    ],
)
def test_damaged_project_is_refused_and_left_untouched(
    tmp_path: Path, hand_tracks, content: bytes, reference: str
) -> None:
    path = tmp_path / "broken.kdenlive"
    path.write_bytes(content)
    request = apply.ApplyRequest(project=path)
    with pytest.raises(SubplugError) as caught:
        apply.prepare(request)
    assert caught.value.reference == reference
    assert caught.value.hint
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.kdenlive"]


def test_missing_project_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SubplugError) as caught:
        KdenliveProject.load(tmp_path / "nope.kdenlive")
    assert caught.value.reference == "kdenlive-project-missing"


def test_user_subtitles_need_force_and_are_backed_up(fixture_copy, hand_tracks) -> None:
    path = fixture_copy("av.kdenlive")
    srt = path.with_name("av.kdenlive.srt")
    srt.write_text("1\n00:00:00,000 --> 00:00:01,000\nmine\n", encoding="utf-8")
    text = path.read_text(encoding="utf-8")
    users_filter = (
        '  <filter id="filter99">\n   <property name="mlt_service">avfilter.subtitles</property>\n'
        '   <property name="internal_added">237</property>\n'
        f'   <property name="av.filename">{srt}</property>\n  </filter>\n </tractor>\n</mlt>'
    )
    head, _, _ = text.rpartition(" </tractor>")
    path.write_text(head + users_filter + "\n", encoding="utf-8")
    before = path.read_bytes()
    project = KdenliveProject.load(path)

    with pytest.raises(SubplugError) as caught:
        apply.write(project, hand_tracks)
    assert caught.value.reference == "kdenlive-has-subtitles"
    assert path.read_bytes() == before
    assert srt.read_text(encoding="utf-8").endswith("mine\n")

    result = apply.write(project, hand_tracks, force=True)
    assert result.replaced[0].read_text(encoding="utf-8").endswith("mine\n")
    edited = KdenliveProject.load(path)
    filters = subtitle_track.subtitle_filters(edited, edited.timeline())
    assert [edited.properties(f).get("subplug:generated") for f in filters] == [__version__]
    assert filters[0].id == "filter99"


def test_project_changed_meanwhile_is_not_overwritten(fixture_copy, hand_tracks) -> None:
    path = fixture_copy("av.kdenlive")
    project = KdenliveProject.load(path)
    path.write_bytes(path.read_bytes() + b"\n")
    with pytest.raises(SubplugError) as caught:
        apply.write(project, hand_tracks)
    assert caught.value.reference == "kdenlive-project-changed"
    assert not path.with_name("av.kdenlive.srt").exists()


def test_clip_placements_follow_the_timeline(tmp_path: Path) -> None:
    clip = tmp_path / "media" / "talk.mp4"
    clip.parent.mkdir()
    clip.write_bytes(b"")
    path = make_project(tmp_path / "p.kdenlive", clip, shape="legacy", position=50, frames=75)
    project = KdenliveProject.load(path)
    clips = project.bin_clips()
    assert [(c.clip_id, c.resource) for c in clips] == [("2", clip.resolve())]
    placements = project.placements("2")
    # The audio and the video part sit at the same place: counted once.
    assert [(p.position, p.clip_in, p.clip_out) for p in placements] == [(50, 0, 74)]
    with pytest.raises(SubplugError) as caught:
        apply.find_clip(project, "7")
    assert caught.value.reference == "kdenlive-unknown-clip"


@given(st.integers(min_value=0, max_value=10_000_000))
def test_clock_times_round_trip(millis: int) -> None:
    seconds = millis / 1000
    assert parse_time(format_clock(seconds), Fraction(1000)) == millis


def test_time_forms() -> None:
    fps = Fraction(25)
    assert parse_time("125", fps) == 125
    assert parse_time("00:00:05.000", fps) == 125
    assert parse_time("00:00:04.960", fps) == 124
    assert parse_time("00:00:05:03", fps) == 128
    assert parse_time("00:00:05,000", fps) == 125
