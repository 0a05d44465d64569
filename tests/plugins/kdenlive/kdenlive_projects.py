"""Small but complete Kdenlive projects around one media clip, for tests.

Two shapes, modelled on Kdenlive's own files (tests/dataset in KDE/kdenlive, copied to
``tests/fixtures/kdenlive``):

* ``legacy``: Kdenlive 22.x, document version 1.04 — the main tractor (black track,
  one audio and one video track) is the last element of the file;
* ``sequences``: Kdenlive 24.08, document version 1.1 — the timeline is a sequence
  tractor named by its UUID, wrapped by a ``kdenlive:projectTractor``.

The clip appears on the audio track (audio part) and on the video track (video part),
like a clip dropped on a Kdenlive timeline, starting at ``position`` frames.
"""

from __future__ import annotations

import difflib
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

SEQUENCE_UUID = "{5b1c9a52-7d1e-4c55-9f1e-0b7c3e0a2d11}"


def make_speech_clip(
    folder: Path,
    text: str = "Hello world. This is a subtitle test.",
    *,
    seconds: float = 4.0,
    size: tuple[int, int] = (320, 180),
    name: str = "clip.mp4",
) -> Path:
    """A video of a plain colour with espeak-ng speech as its audio (needs ffmpeg)."""
    folder.mkdir(parents=True, exist_ok=True)
    wav = folder / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, capture_output=True)
    clip = folder / name
    subprocess.run(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"color=c=0x336699:s={size[0]}x{size[1]}:r=25:d={seconds}",
            "-i",
            str(wav),
            "-af",
            "apad",
            "-t",
            str(seconds),
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            str(clip),
        ],
        check=True,
        capture_output=True,
    )
    wav.unlink()
    return clip


def tools_present() -> bool:
    """ffmpeg and espeak-ng are on PATH."""
    return bool(shutil.which("ffmpeg") and shutil.which("espeak-ng"))


def _tc(frames: int, fps: int = 25) -> str:
    seconds = frames / fps
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{int(hours):02d}:{int(minutes):02d}:{secs:06.3f}"


def _producer(pid: str, resource: str, frames: int, extra: str = "") -> str:
    return f""" <producer id="{pid}" in="00:00:00.000" out="{_tc(frames - 1)}">
  <property name="length">{frames}</property>
  <property name="eof">pause</property>
  <property name="resource">{resource}</property>
  <property name="audio_index">1</property>
  <property name="video_index">0</property>
  <property name="mlt_service">avformat-novalidate</property>
  <property name="seekable">1</property>
  <property name="kdenlive:clipname">{Path(resource).name}</property>
  <property name="kdenlive:folderid">-1</property>
  <property name="kdenlive:id">2</property>
  <property name="kdenlive:clip_type">0</property>
{extra} </producer>
"""


def _track_tractors(frames: int, position: int, first: int) -> tuple[str, list[str]]:
    """An audio track and a video track holding the clip at ``position``."""
    blank = f'  <blank length="{position}"/>\n' if position else ""
    entry = (
        f'  <entry producer="{{pid}}" in="00:00:00.000" out="{_tc(frames - 1)}">\n'
        '   <property name="kdenlive:id">2</property>\n  </entry>\n'
    )
    out = []
    names = []
    for i, (kind, pid) in enumerate((("audio", "producer1"), ("video", "producer2"))):
        pl, pl2, tr = f"playlist{first + 2 * i}", f"playlist{first + 2 * i + 1}", f"tractor{i}"
        names.append(tr)
        audio = kind == "audio"
        prop = '  <property name="kdenlive:audio_track">1</property>\n' if audio else ""
        out.append(f""" <playlist id="{pl}">
{prop}{blank}{entry.replace("{pid}", pid)} </playlist>
 <playlist id="{pl2}">
{prop} </playlist>
 <tractor id="{tr}" in="00:00:00.000">
{prop}  <property name="kdenlive:trackheight">67</property>
  <property name="kdenlive:timeline_active">1</property>
  <track hide="{"video" if audio else "audio"}" producer="{pl}"/>
  <track hide="{"video" if audio else "audio"}" producer="{pl2}"/>
 </tractor>
""")
    return "".join(out), names


def _transitions(tracks: list[str], start: int = 0) -> str:
    return f"""  <transition id="transition{start}">
   <property name="a_track">0</property>
   <property name="b_track">1</property>
   <property name="mlt_service">mix</property>
   <property name="kdenlive_id">mix</property>
   <property name="internal_added">237</property>
   <property name="always_active">1</property>
   <property name="accepts_blanks">1</property>
   <property name="sum">1</property>
  </transition>
  <transition id="transition{start + 1}">
   <property name="a_track">0</property>
   <property name="b_track">2</property>
   <property name="mlt_service">composite</property>
   <property name="kdenlive_id">composite</property>
   <property name="internal_added">237</property>
   <property name="always_active">1</property>
  </transition>
"""


def make_project(
    path: Path,
    clip: Path,
    *,
    shape: str = "legacy",
    version: str | None = None,
    frames: int = 100,
    position: int = 0,
    size: tuple[int, int] = (320, 180),
) -> Path:
    """Write a Kdenlive project using ``clip`` (relative to the project's folder when it
    lives there). ``shape`` is ``legacy`` (22.x) or ``sequences`` (24.08)."""
    if shape not in ("legacy", "sequences"):
        raise ValueError(shape)
    version = version or ("22.12.3" if shape == "legacy" else "24.08.0")
    root = path.parent.resolve()
    try:
        resource = str(clip.resolve().relative_to(root))
    except ValueError:
        resource = str(clip.resolve())
    width, height = size
    total = position + frames
    profile = (
        f' <profile frame_rate_num="25" sample_aspect_num="1" display_aspect_den="{height}" '
        f'colorspace="709" progressive="1" description="{width}x{height} 25 fps" '
        f'display_aspect_num="{width}" frame_rate_den="1" width="{width}" height="{height}" '
        'sample_aspect_den="1"/>\n'
    )
    bin_clip = _producer("producer0", resource, frames)
    audio_part = _producer(
        "producer1", resource, frames, '  <property name="set.test_image">1</property>\n'
    )
    video_part = _producer(
        "producer2", resource, frames, '  <property name="set.test_audio">1</property>\n'
    )
    tracks, names = _track_tractors(frames, position, 0)
    black = f""" <producer id="black_track" in="00:00:00.000" out="{_tc(total - 1)}">
  <property name="length">2147483647</property>
  <property name="eof">continue</property>
  <property name="resource">black</property>
  <property name="aspect_ratio">1</property>
  <property name="mlt_service">color</property>
  <property name="kdenlive:playlistid">black_track</property>
  <property name="mlt_image_format">rgba</property>
  <property name="set.test_audio">0</property>
 </producer>
"""
    doc_version = "1.04" if shape == "legacy" else "1.1"
    doc_props = f"""  <property name="kdenlive:docproperties.audioChannels">2</property>
  <property name="kdenlive:docproperties.documentid">1700000000000</property>
  <property name="kdenlive:docproperties.kdenliveversion">{version}</property>
  <property name="kdenlive:docproperties.profile">custom</property>
  <property name="kdenlive:docproperties.version">{doc_version}</property>
"""
    header = (
        f"<?xml version='1.0' encoding='utf-8'?>\n"
        f'<mlt LC_NUMERIC="C" producer="main_bin" version="7.12.0" root="{root}">\n'
    )
    if shape == "legacy":
        main = f""" <playlist id="main_bin">
{doc_props}  <property name="kdenlive:documentnotes"/>
  <property name="xml_retain">1</property>
  <entry producer="producer0" in="00:00:00.000" out="{_tc(frames - 1)}"/>
 </playlist>
"""
        timeline = f""" <tractor id="tractor2" in="00:00:00.000" out="{_tc(total - 1)}">
  <track producer="black_track"/>
  <track producer="{names[0]}"/>
  <track producer="{names[1]}"/>
{_transitions(names)} </tractor>
"""
        body = bin_clip + main + black + audio_part + video_part + tracks + timeline
    else:
        uuid = SEQUENCE_UUID
        sequence = f""" <tractor id="{uuid}" in="00:00:00.000" out="{_tc(total - 1)}">
  <property name="kdenlive:uuid">{uuid}</property>
  <property name="kdenlive:clipname">Sequence 1</property>
  <property name="kdenlive:producer_type">17</property>
  <property name="kdenlive:id">3</property>
  <property name="kdenlive:sequenceproperties.documentuuid">{uuid}</property>
  <property name="kdenlive:sequenceproperties.tracksCount">2</property>
  <track producer="black_track"/>
  <track producer="{names[0]}"/>
  <track producer="{names[1]}"/>
{_transitions(names)} </tractor>
"""
        main = f""" <playlist id="main_bin">
{doc_props}  <property name="kdenlive:docproperties.uuid">{uuid}</property>
  <property name="kdenlive:docproperties.opensequences">{uuid}</property>
  <property name="kdenlive:docproperties.activetimeline">{uuid}</property>
  <property name="kdenlive:documentnotes"/>
  <property name="xml_retain">1</property>
  <entry producer="producer0" in="00:00:00.000" out="{_tc(frames - 1)}"/>
  <entry producer="{uuid}" in="00:00:00.000" out="00:00:00.000"/>
 </playlist>
"""
        project_tractor = f""" <tractor id="tractor9" in="00:00:00.000" out="{_tc(total - 1)}">
  <property name="kdenlive:projectTractor">1</property>
  <track producer="{uuid}" in="00:00:00.000" out="{_tc(total - 1)}"/>
 </tractor>
"""
        body = (
            bin_clip + black + audio_part + video_part + tracks + sequence + main + project_tractor
        )
    path.write_text(header + profile + body + "</mlt>\n", encoding="utf-8")
    return path


# ------------------------------------------------------------ tree comparison


def tree(data: bytes) -> ET.Element:
    return ET.fromstring(data)


def canonical(element: ET.Element) -> tuple:
    """An element as comparable data (tag, attributes, stripped text, children)."""
    return (
        element.tag,
        tuple(sorted(element.attrib.items())),
        (element.text or "").strip(),
        tuple(canonical(child) for child in element),
    )


def without_subplug(element: ET.Element) -> ET.Element:
    """A copy of ``element`` without what ``apply`` adds: our subtitle filter and the
    ``subtitlesList`` property."""
    copy = ET.Element(element.tag, element.attrib)
    copy.text = element.text
    for child in element:
        props = {p.get("name"): p.text for p in child.findall("property")}
        if child.tag == "filter" and "subplug:generated" in props:
            continue
        if child.tag == "property" and child.get("name") == (
            "kdenlive:sequenceproperties.subtitlesList"
        ):
            continue
        copy.append(without_subplug(child))
    return copy


def only_insertions(original: bytes, new: bytes) -> bool:
    """``new`` is ``original`` with whole lines inserted: no line changed or removed
    (Kdenlive writes one element per line, and subplug inserts whole elements)."""
    before = original.splitlines(keepends=True)
    after = new.splitlines(keepends=True)
    opcodes = difflib.SequenceMatcher(None, before, after, autojunk=False).get_opcodes()
    return {op for op, *_ in opcodes} == {"equal", "insert"}
