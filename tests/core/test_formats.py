"""Subtitle writers (ASS with two styles, SRT, WebVTT) and safe file output: atomic
writes, no clobbering without --overwrite, backups when overwriting."""

from __future__ import annotations

import os
from pathlib import Path

import pysubs2
import pytest
from subplug import files, formats, plugins
from subplug.errors import SubplugError
from subplug.types import Cue, StyleOptions, SubtitleFormat, Track, Tracks

EN = (
    Cue(1.0, 3.25, ("Hello there,", "my friend.")),
    Cue(4.0, 6.5, ("How are you today?",)),
)
MN = (
    Cue(1.0, 3.25, ("Сайн байна уу,", "найз минь.")),
    Cue(4.0, 6.5, ("Өнөөдөр ямар байна?",)),
)


def _tracks(media: str = "talk.mp4") -> Tracks:
    return Tracks(
        media=Path(media),
        source_lang="en",
        tracks={"en": Track("en", EN), "mn": Track("mn", MN)},
    )


def _load(text: str, fmt: str) -> pysubs2.SSAFile:
    return pysubs2.SSAFile.from_string(text, format_=fmt)


# ---------------------------------------------------------------------------- ASS


def test_ass_has_a_style_per_language_mongolian_at_the_bottom() -> None:
    subs = _load(formats.render_ass(_tracks(), ["en", "mn"], StyleOptions()), "ass")
    assert set(subs.styles) == {"EN", "MN"}
    mn, en = subs.styles["MN"], subs.styles["EN"]
    assert mn.alignment == en.alignment == pysubs2.Alignment.BOTTOM_CENTER
    assert mn.fontsize == 52 and en.fontsize == 44
    # English sits above the Mongolian: raised past two lines of the bottom style.
    assert en.marginv > mn.marginv + 2 * mn.fontsize
    assert mn.fontname == en.fontname == "DejaVu Sans"
    assert subs.info["PlayResX"] == "1920" and subs.info["PlayResY"] == "1080"
    events = [(e.style, e.start, e.end, e.plaintext) for e in subs]
    assert ("EN", 1000, 3250, "Hello there,\nmy friend.") in events
    assert ("MN", 1000, 3250, "Сайн байна уу,\nнайз минь.") in events
    assert ("MN", 4000, 6500, "Өнөөдөр ямар байна?") in events
    assert len(events) == 4


def test_ass_placement_is_configurable() -> None:
    style = StyleOptions(bottom="en", second_position="top")
    subs = _load(formats.render_ass(_tracks(), ["en", "mn"], style), "ass")
    assert subs.styles["EN"].alignment == pysubs2.Alignment.BOTTOM_CENTER
    assert subs.styles["EN"].fontsize == 52
    assert subs.styles["MN"].alignment == pysubs2.Alignment.TOP_CENTER
    with pytest.raises(ValueError, match="second_position"):
        formats.render_ass(_tracks(), ["en", "mn"], StyleOptions(second_position="left"))


def test_ass_of_one_language_has_one_style() -> None:
    subs = _load(formats.render_ass(_tracks(), ["mn"], StyleOptions(bottom="en")), "ass")
    assert set(subs.styles) == {"MN"}
    assert subs.styles["MN"].marginv < 100
    assert [e.plaintext for e in subs] == ["Сайн байна уу,\nнайз минь.", "Өнөөдөр ямар байна?"]


def test_text_cannot_inject_ass_overrides() -> None:
    tricky = Tracks(Path("x.mp4"), "en", {"en": Track("en", (Cue(0, 1, (r"{\an8}up \N no",)),))})
    subs = _load(formats.render_ass(tricky, ["en"], StyleOptions()), "ass")
    (event,) = subs
    assert "{" not in event.text and "\\an8" not in event.text
    assert event.plaintext.count("\n") == 0
    assert "up" in event.plaintext and "no" in event.plaintext


# ------------------------------------------------------------------- SRT and VTT


@pytest.mark.parametrize("lang", ["en", "mn"])
def test_srt_round_trips(lang: str) -> None:
    subs = _load(formats.render_srt(_tracks(), [lang]), "srt")
    cues = EN if lang == "en" else MN
    assert [(e.start, e.end, e.plaintext) for e in subs] == [
        (round(c.start * 1000), round(c.end * 1000), "\n".join(c.lines)) for c in cues
    ]


def test_srt_holds_one_language() -> None:
    with pytest.raises(ValueError, match="one language"):
        formats.render_srt(_tracks(), ["en", "mn"])


def test_vtt_round_trips_and_escapes_markup() -> None:
    text = formats.render_vtt(_tracks(), ["mn"])
    assert text.startswith("WEBVTT")
    subs = _load(text, "vtt")
    assert [e.plaintext for e in subs] == ["Сайн байна уу,\nнайз минь.", "Өнөөдөр ямар байна?"]
    odd = Tracks(Path("x.mp4"), "en", {"en": Track("en", (Cue(0, 1, ("Tom & <Jerry>",)),))})
    assert "Tom &amp; &lt;Jerry&gt;" in formats.render_vtt(odd, ["en"])


def test_default_formats_are_registered_plugins() -> None:
    known = plugins.formats()
    assert known["ass"].bilingual and known["ass"].write is formats.render_ass
    assert not known["srt"].bilingual and not known["vtt"].bilingual


@pytest.mark.parametrize(
    ("name", "bilingual", "langs", "expected"),
    [
        ("ass", True, ["en", "mn"], "film.en-mn.ass"),
        ("srt", False, ["en"], "film.en.srt"),
        ("vtt", False, ["mn"], "film.mn.vtt"),
    ],
)
def test_output_names(
    tmp_path: Path, name: str, bilingual: bool, langs: list[str], expected: str
) -> None:
    fmt = SubtitleFormat(name, bilingual, formats.render_srt)
    media = tmp_path / "in" / "film.mp4"
    assert formats.output_path(media, None, fmt, langs) == tmp_path / "in" / expected
    assert formats.output_path(media, tmp_path / "out", fmt, langs) == tmp_path / "out" / expected


# ------------------------------------------------------------------------- files


def _no_temp_files(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_write_files_writes_utf8_without_bom(tmp_path: Path) -> None:
    target = tmp_path / "film.mn.srt"
    written = files.write_files([(target, "1\nСайн\n")], overwrite=False)
    assert written == [target]
    assert target.read_bytes() == "1\nСайн\n".encode()
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask
    _no_temp_files(tmp_path)


def test_an_existing_file_is_never_replaced_without_overwrite(tmp_path: Path) -> None:
    mine = tmp_path / "film.en.srt"
    mine.write_text("my own careful subtitles", encoding="utf-8")
    other = tmp_path / "film.mn.srt"
    with pytest.raises(SubplugError) as info:
        files.write_files([(other, "new mn"), (mine, "new en")], overwrite=False)
    assert info.value.reference == "output-exists"
    assert "--overwrite" in (info.value.hint or "")
    assert mine.read_text(encoding="utf-8") == "my own careful subtitles"
    assert not other.exists(), "nothing is written when one target is refused"
    _no_temp_files(tmp_path)


def test_overwrite_keeps_numbered_backups(tmp_path: Path) -> None:
    target = tmp_path / "film.en.srt"
    target.write_text("first", encoding="utf-8")
    files.write_atomic(target, "second", overwrite=True)
    files.write_atomic(target, "third", overwrite=True)
    assert target.read_text(encoding="utf-8") == "third"
    assert (tmp_path / "film.en.srt.bak").read_text(encoding="utf-8") == "first"
    assert (tmp_path / "film.en.srt.bak.1").read_text(encoding="utf-8") == "second"
    _no_temp_files(tmp_path)


def test_a_folder_in_the_way_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "film.en.srt").mkdir()
    with pytest.raises(SubplugError) as info:
        files.write_atomic(tmp_path / "film.en.srt", "x", overwrite=True)
    assert info.value.reference == "output-not-writable"


def test_a_file_where_the_folder_should_be_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("not a folder", encoding="utf-8")
    with pytest.raises(SubplugError) as info:
        files.write_atomic(tmp_path / "out" / "film.en.srt", "x", overwrite=False)
    assert info.value.reference == "output-not-writable"
    assert (tmp_path / "out").read_text(encoding="utf-8") == "not a folder"


def test_missing_folders_are_created(tmp_path: Path) -> None:
    target = tmp_path / "new" / "deeper" / "film.en.srt"
    files.write_atomic(target, "x", overwrite=False)
    assert target.read_text(encoding="utf-8") == "x"


def test_a_file_that_appears_meanwhile_is_left_alone(tmp_path: Path) -> None:
    """A target created after the check (another program, a second subplug) is not
    replaced: the final link refuses to clobber it."""
    target = tmp_path / "film.en.srt"
    temp = tmp_path / ".film.en.srt.x.tmp"
    temp.write_text("ours", encoding="utf-8")
    target.write_text("theirs", encoding="utf-8")
    with pytest.raises(SubplugError) as info:
        files._commit(temp, target, overwrite=False)
    assert info.value.reference == "output-exists"
    assert target.read_text(encoding="utf-8") == "theirs"


def test_ass_lays_the_second_language_out_per_cue_and_libass_draws_it_so(tmp_path: Path) -> None:
    """English sits just above the Mongolian shown with it: higher over two lines than
    over one, and at the bottom margin when no Mongolian is shown. Checked on frames
    libass draws (ffmpeg's subtitles filter): the English (pale yellow) text's lowest
    row moves down from frame to frame."""
    import shutil
    import subprocess

    import numpy as np
    from PIL import Image

    en = (Cue(0.2, 1.8, ("Two lines below",)), Cue(2.2, 3.8, ("One line below",)),
          Cue(4.2, 5.8, ("Nothing below",)))  # fmt: skip
    mn = (Cue(0.2, 1.8, ("Хоёр мөр", "доор нь")), Cue(2.2, 3.8, ("Нэг мөр",)))
    tracks = Tracks(Path("t.mp4"), "en", {"en": Track("en", en), "mn": Track("mn", mn)})
    style = StyleOptions(play_res=(640, 360), font_size=24, second_font_size=20)
    text = formats.render_ass(tracks, ["en", "mn"], style)
    subs = _load(text, "ass")
    margins = [e.marginv for e in subs if e.style == "EN"]
    bottom = subs.styles["MN"].marginv
    assert margins[0] > margins[1] > margins[2] == bottom, margins
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is needed to draw the frames (Debian package ffmpeg)")
    script = tmp_path / "t.ass"
    script.write_text(text, encoding="utf-8")
    lowest = []
    for at in (1.0, 3.0, 5.0):
        frame = tmp_path / f"{at}.png"
        subprocess.run(
            ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=black:s=640x360:d=6",
             "-ss", str(at), "-vf", f"subtitles={script}", "-frames:v", "1", str(frame)],
            check=True, timeout=60,
        )  # fmt: skip
        pixels = np.asarray(Image.open(frame).convert("RGB")).astype(int)
        r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
        yellow = (r > 200) & (g > 190) & (b < 190) & (g - b > 40)
        rows = np.nonzero(yellow.any(axis=1))[0]
        assert rows.size, f"no English text drawn at {at} s"
        lowest.append(int(rows.max()))
    assert lowest[0] < lowest[1] < lowest[2], lowest
