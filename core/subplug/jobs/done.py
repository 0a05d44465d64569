"""Finished files of earlier jobs, so a rerun skips them.

Just before a job writes a file's subtitles it leaves a record under the cache
(``<home>/journal/done/<key>.json``) naming the files it writes; the files are what
makes it count, so a crash in between never makes a file look done. The key hashes what the
journal's key hashes (media fingerprint, model contents, source, targets, speech and
chunk settings) and also what shapes the files (formats, output paths, cue and style
options), so a changed setting makes the file not done. A file is done when its record
is there and every file it names still is: deleting a subtitle file makes the next run
redo that media (its journal, if any, still saves the model's work).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from subplug.files import replace_atomic
from subplug.journal import journal_key


def done_dir() -> Path:
    """``<home>/journal/done``."""
    from subplug.cache import journal_dir

    return journal_dir() / "done"


def done_key(fingerprint: str, settings: Mapping[str, Any], shape: Mapping[str, Any]) -> str:
    """The record's key: the journal's ``settings`` plus what shapes the files."""
    return journal_key(fingerprint, {"done": dict(shape), **settings})


def outputs_of(key: str) -> list[Path] | None:
    """The files a finished run wrote for ``key`` when they are all still there (an
    empty list for a file that needed none: no speech); ``None`` otherwise."""
    try:
        record = json.loads((done_dir() / f"{key}.json").read_text(encoding="utf-8"))
        outputs = [Path(p) for p in record["outputs"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return outputs if all(p.is_file() for p in outputs) else None


def mark_done(key: str, media: Path, outputs: Sequence[Path]) -> None:
    """Record that ``media`` is finished with ``outputs`` written (atomic)."""
    folder = done_dir()
    folder.mkdir(parents=True, exist_ok=True)
    record = {"media": str(media), "outputs": [str(p) for p in outputs]}
    # ASCII JSON: a name that is not UTF-8 (lone surrogates) is kept as \udcXX escapes.
    replace_atomic(folder / f"{key}.json", json.dumps(record).encode())


def forget(key: str) -> None:
    """Drop the record (``--overwrite`` redoes the file)."""
    with contextlib.suppress(FileNotFoundError):
        (done_dir() / f"{key}.json").unlink()
