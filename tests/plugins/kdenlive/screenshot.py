"""Make the README pictures of Kdenlive subtitles: one frame rendered by melt from a
project that ``apply.write`` put English/Mongolian subtitles into.

    python tests/plugins/kdenlive/screenshot.py docs/images

The speech is the JFK clip from ``tests/fixtures/audio/en``. The subtitle text is
typed in here (the known English words and a Mongolian translation), because no trained
model runs on the machines that build this project; timing comes from subplug's VAD on
the clip, line breaks from subplug's line breaker, and everything from the project file
to the pixels is what ``subplug kdenlive apply`` writes and melt renders.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[2] / "fixtures"
SIZE = (1280, 720)
FPS = 25
FRAME = 150  # 6.0 s: the second sentence

LINES = [
    ("And so, my fellow Americans,", "Тиймээс, эрхэм америкчууд минь,"),
    (
        "ask not what your country can do for you,",
        "улс орон тань та нарын төлөө юу хийж чадахыг бүү асуу,",
    ),
    (
        "ask what you can do for your country.",
        "харин та нар улс орныхоо төлөө юу хийж чадахаа асуу.",
    ),
]


def make_clip(folder: Path) -> Path:
    """11 s of a soft gradient with the JFK speech as sound."""
    clip = folder / "jfk.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"gradients=s={SIZE[0]}x{SIZE[1]}:c0=0x1d3557:c1=0x5b8fa8:speed=0.002:r={FPS}:d=11",
            "-i",
            str(SHARED / "audio" / "en" / "jfk.flac"),
            "-shortest",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            str(clip),
        ],
        check=True,
    )
    return clip


def tracks_for(clip: Path) -> dict:
    """The three sentences, timed by subplug's VAD (the second sentence spans two
    regions: "ask not" and the rest), wrapped by subplug's line breaker."""
    from subplug import media, segment
    from subplug.cues import wrap
    from subplug.types import Cue, Track

    samples = media.load_pcm(clip, media.select_stream(media.probe(clip), None).index)
    regions = segment.speech_regions(samples)
    spans = [(regions[0].start, regions[0].end), (regions[1].start, regions[2].end)]
    spans.append((regions[3].start, regions[-1].end))
    tracks = {}
    for index, lang in enumerate(("en", "mn")):
        cues = []
        for (start, end), texts in zip(spans, LINES, strict=True):
            lines = wrap(texts[index], lang, max_chars=42, max_lines=2) or (texts[index],)
            cues.append(Cue(round(start, 3), round(end + 0.3, 3), tuple(lines)))
        tracks[lang] = Track(lang, tuple(cues))
    return tracks


def render_frame(project: Path, frame: int, out: Path) -> None:
    raw = project.with_suffix(".rgb")
    subprocess.run(
        [
            "melt",
            f"xml:{project}",
            f"in={frame}",
            f"out={frame}",
            "-consumer",
            f"avformat:{raw}",
            "f=rawvideo",
            "vcodec=rawvideo",
            "pix_fmt=rgb24",
            "an=1",
            "real_time=-1",
        ],
        check=True,
        capture_output=True,
    )
    pixels = np.fromfile(raw, dtype=np.uint8).reshape(-1, SIZE[1], SIZE[0], 3)[0]
    Image.fromarray(pixels).save(out, optimize=True)


def main(target: Path) -> None:
    sys.path.insert(0, str(HERE))
    from kdenlive_projects import make_project
    from subplug_kdenlive import apply
    from subplug_kdenlive.project import KdenliveProject

    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        clip = make_clip(Path(folder))
        tracks = tracks_for(clip)
        for shape, version, name in (
            ("legacy", "22.12.3", "kdenlive-22.12-srt.png"),
            ("sequences", "24.08.1", "kdenlive-24.08-ass.png"),
        ):
            project = make_project(
                Path(folder) / f"{shape}.kdenlive",
                clip,
                shape=shape,
                version=version,
                frames=11 * FPS,
                size=SIZE,
            )
            apply.write(KdenliveProject.load(project), tracks)
            render_frame(project, FRAME, target / name)
            print(f"wrote {target / name}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/images"))
