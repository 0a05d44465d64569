"""The VLC adapter in the real VLC: the headless interface script runs the same bridge
module as the menu extension, generates subtitles with the tiny model, adds them to the
playing media and selects them; a transcode with ``soverlay`` shows VLC draws them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pysubs2
import pytest
from vlc_session import MEDIA_NAME, VlcRun, VlcSession

pytestmark = [pytest.mark.host, pytest.mark.slow]

#: Transcode every frame with the subtitles drawn in (x264, no sound).
SOUT = (
    "#transcode{{vcodec=h264,venc=x264{{preset=ultrafast}},acodec=none,soverlay}}"
    ":std{{access=file,mux=mp4,dst={dst}}}"
)
#: A pixel counts as changed when a channel moved by more than this (x264 noise is less).
PIXEL_THRESHOLD = 40
#: Share of pixels that may differ without subtitles: the encoder spends its bits a
#: little differently when part of the picture changes (seen: a few dozen pixels).
NOISE = 0.0005


def frames(path: Path) -> dict[float, np.ndarray]:
    """Every picture of ``path`` by time (s, rounded to ms), as RGB arrays."""
    import av

    out: dict[float, np.ndarray] = {}
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            out[round(float(frame.time), 3)] = frame.to_ndarray(format="rgb24")
    return out


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mask of the pixels that differ between two pictures."""
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=2) > PIXEL_THRESHOLD


def cue_spans(subtitle: Path) -> list[tuple[float, float]]:
    """(start, end) in seconds of every event of a subtitle file."""
    return [(e.start / 1000, e.end / 1000) for e in pysubs2.load(str(subtitle)) if e.text]


def check_drawn(with_subs: Path, without: Path, subtitle: Path) -> tuple[np.ndarray, list[float]]:
    """Compare two transcodes of the same media: pictures differ only while a cue is on,
    only in the lower part of the picture (beyond encoder noise), and some do. Returns
    the frame that changed most and the times of the frames that changed."""
    a, b = frames(with_subs), frames(without)
    assert a.keys() == b.keys() and len(a) > 50
    spans = cue_spans(subtitle)
    assert spans
    height, width = next(iter(a.values())).shape[:2]
    drawn, best, best_count = [], None, 0
    for time, picture in a.items():
        mask = changed(picture, b[time])
        count = int(mask.sum())
        during = any(start - 0.1 <= time <= end + 0.1 for start, end in spans)
        upper = int(mask[: int(height * 0.4)].sum())
        assert upper <= NOISE * height * width, f"{upper} upper pixels changed at {time} s"
        if not during:
            assert count <= NOISE * height * width, f"{count} pixels changed at {time} s"
        elif count > 0.002 * height * width:
            drawn.append(time)
            if count > best_count:
                best, best_count = picture, count
    assert len(drawn) >= 3, f"subtitles drawn on {len(drawn)} frames only"
    assert best is not None
    return best, drawn


def save_png(picture: np.ndarray, name: str, tmp_path: Path) -> Path:
    """Keep a frame for people: in the test's folder and in ``$SUBPLUG_ARTIFACTS``."""
    from PIL import Image

    path = tmp_path / name
    Image.fromarray(picture).save(path)
    folder = os.environ.get("SUBPLUG_ARTIFACTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(folder) / name)
    return path


def transcode_args(session: VlcSession, media: Path, dst: Path) -> list[str]:
    """Arguments for a transcode with only the subtitles subplug adds (none found by
    VLC itself next to the media)."""
    return [
        "--no-sub-autodetect-file",
        "--play-and-exit",
        "--no-sout-audio",
        "--sout",
        SOUT.format(dst=dst),
        str(media),
    ]


@pytest.fixture(scope="module")
def baseline(vlc_session: VlcSession) -> Path:
    """The media transcoded by VLC with no subtitles."""
    home = vlc_session.home("plain")
    dst = home / "without.mp4"
    run = vlc_session.run_vlc(
        home, ["-I", "dummy", *transcode_args(vlc_session, vlc_session.media, dst)], timeout=120
    )
    assert run.returncode == 0 and dst.exists(), run.output[-3000:]
    return dst


@pytest.fixture(scope="module")
def generated(vlc_session: VlcSession) -> Iterator[tuple[VlcSession, Path, Path, VlcRun]]:
    """One headless run with the tiny model while the media plays (looping, as a
    short clip would end before the model is done)."""
    home = vlc_session.home("tiny", settings={"model": str(vlc_session.model)})
    media = vlc_session.folder("generated")
    report = home / "generate.jsonl"
    args = [
        *vlc_session.intf_args(report, quit=True),
        "--vout",
        "dummy",
        "--aout",
        "dummy",
        "--input-repeat",
        "1000",
        str(media),
    ]
    run = vlc_session.run_vlc(home, args, report=report, timeout=400)
    yield vlc_session, home, media, run


def test_generate_adds_and_selects_the_bilingual_track(generated) -> None:  # type: ignore[no-untyped-def]
    session, home, media, run = generated
    result = run.result
    assert result["ok"] is True, run.output[-3000:]
    assert result["vlc"].startswith(("3.", "4."))
    assert result["reused"] is False and result["fallback"] is False
    # The path went through the shell intact: spaces, quotes and Cyrillic letters.
    assert result["media"] == str(media)
    assert result["args"][-1] == str(media)
    assert result["args"][result["args"].index("--model") + 1] == str(session.model)
    subtitle = media.with_name(media.stem + ".en-mn.ass")
    assert result["subtitle"] == str(subtitle) and subtitle.is_file()
    assert media.with_name(media.stem + ".en.srt").is_file()
    ass = pysubs2.load(str(subtitle))
    # Both languages' styles; the tiny model's random words may leave one language empty.
    assert {"EN", "MN"} <= set(ass.styles) and any(e.text for e in ass)
    # VLC has the track and it is the selected one.
    tracks = {t["id"]: t for t in result["tracks"]}
    assert result["track"] in tracks and tracks[result["track"]]["selected"] is True
    assert [t["id"] for t in result["tracks"] if t["selected"]] == [result["track"]]
    if "spu_es" in result:
        assert result["spu_es"] == result["track"]
    assert (
        "[subplug] Transcribing and translating" in run.output or "Loading the model" in run.output
    )


def test_vlc_draws_the_selected_track(generated, baseline: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    session, home, media, first = generated
    assert first.result["ok"] is True
    subtitle = Path(first.result["subtitle"])
    report = home / "transcode.jsonl"
    dst = home / "with.mp4"
    # Paused at the start, the bridge finds the existing .ass, adds and selects it, then
    # resumes: every frame is transcoded with the track chosen by the bridge.
    args = [
        *session.intf_args(report, play=True),
        "--start-paused",
        *transcode_args(session, media, dst),
    ]
    run = session.run_vlc(home, args, report=report, timeout=120)
    result = run.result
    assert result["ok"] is True and result["reused"] is True, run.output[-3000:]
    assert result["subtitle"] == str(subtitle)
    tracks = [t for t in result["tracks"] if t["selected"]]
    assert [t["id"] for t in tracks] == [result["track"]]
    best, drawn = check_drawn(dst, baseline, subtitle)
    save_png(best, "vlc-tiny-model-frame.png", tmp_path)


def test_read_only_folder_uses_the_cache_and_draws(
    vlc_session: VlcSession, baseline: Path, tmp_path: Path
) -> None:
    """Media in a folder the user cannot write: the subtitles go to VLC's cache folder.
    This run uses the deterministic test backend, so the frame shows readable English and
    Mongolian (it is kept for the docs)."""
    home = vlc_session.home(
        "fake-backend",
        config={
            "env": {"SUBPLUG_PLUGINS": "subplug.testing.fake"},
            "extra_args": ["--backend", "fake"],
        },
    )
    media = vlc_session.folder("read-only", writable=False)
    report = home / "report.jsonl"
    dst = home / "fallback.mp4"
    args = [
        *vlc_session.intf_args(report, play=True),
        "--start-paused",
        *transcode_args(vlc_session, media, dst),
    ]
    run = vlc_session.run_vlc(home, args, report=report, timeout=240)
    result = run.result
    assert result["ok"] is True, run.output[-3000:]
    assert result["fallback"] is True
    cache = home / ".cache" / "vlc" / "subplug"
    assert result["out_dir"] == str(cache)
    subtitle = cache / (Path(MEDIA_NAME).stem + ".en-mn.ass")
    assert result["subtitle"] == str(subtitle) and subtitle.is_file()
    assert sorted(p.name for p in media.parent.iterdir()) == [MEDIA_NAME]
    assert [t["id"] for t in result["tracks"] if t["selected"]] == [result["track"]]
    text = " ".join(e.plaintext for e in pysubs2.load(str(subtitle)))
    assert any("\u0400" <= ch <= "\u04ff" for ch in text) and any("a" <= ch <= "z" for ch in text)
    best, _ = check_drawn(dst, baseline, subtitle)
    save_png(best, "vlc-subtitles.png", tmp_path)


def test_stop_ends_the_engine_and_writes_nothing(vlc_session: VlcSession) -> None:
    """Stop while the engine works: it ends and writes nothing. The engine runs the test
    backend slowed to 30 s a request, so the stop always lands mid-run (the tiny model
    can finish a short clip before the stop on a quiet machine)."""
    home = vlc_session.home(
        "slow-backend",
        config={
            "env": {"SUBPLUG_PLUGINS": "subplug.testing.fake", "SUBPLUG_FAKE_DELAY": "30"},
            "extra_args": ["--backend", "fake"],
        },
    )
    media = vlc_session.folder("stopped")
    report = home / "stop.jsonl"
    args = [
        *vlc_session.intf_args(report, quit=True, stop_after=2, overwrite=True),
        "--vout",
        "dummy",
        "--aout",
        "dummy",
        "--start-paused",
        str(media),
    ]
    run = vlc_session.run_vlc(home, args, report=report, timeout=120)
    result = run.result
    assert result["ok"] is False and result["cancelled"] is True, run.output[-3000:]
    assert "Stopped" in result["message"]
    pid = result["pid"]
    assert isinstance(pid, int)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert sorted(p.name for p in media.parent.iterdir()) == [MEDIA_NAME]


def test_engine_errors_reach_the_user(vlc_session: VlcSession) -> None:
    """A video without sound: the engine's own message and hint come back."""
    from subplug.testing.media import video_only

    home = vlc_session.home("tiny", settings={"model": str(vlc_session.model)})
    folder = vlc_session.root / "silent film"
    folder.mkdir()
    media = video_only(folder / "no sound.mp4", seconds=2.0)
    vlc_session.user.chown(folder)
    report = home / "error.jsonl"
    args = [
        *vlc_session.intf_args(report, quit=True),
        "--vout",
        "dummy",
        "--aout",
        "dummy",
        "--start-paused",
        str(media),
    ]
    run = vlc_session.run_vlc(home, args, report=report, timeout=120)
    result = run.result
    assert result["ok"] is False and result["cancelled"] is False
    assert "audio" in result["message"].lower(), result
    assert result["hint"] and result["reference"]
    assert not result.get("subtitle")


def test_a_missing_model_points_to_the_settings_dialog(vlc_session: VlcSession) -> None:
    """The engine's hint names commands; in VLC the Settings dialog can fix it too."""
    home = vlc_session.home("no-model", settings={"model": str(vlc_session.root / "no model")})
    media = vlc_session.folder("no-model")
    report = home / "no-model.jsonl"
    args = [
        *vlc_session.intf_args(report, quit=True),
        "--vout",
        "dummy",
        "--aout",
        "dummy",
        "--start-paused",
        str(media),
    ]
    run = vlc_session.run_vlc(home, args, report=report, timeout=120)
    result = run.result
    assert result["ok"] is False and result["reference"] == "model-not-found", result
    assert result["hint"].endswith("In VLC: View > Generate EN/MN subtitles > Settings… (Model).")
    assert sorted(p.name for p in media.parent.iterdir()) == [MEDIA_NAME]
