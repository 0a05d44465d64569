"""What a job subtitles: media paths, folders (``--recursive``), globs and manifests,
turned into :class:`JobFile` s in a stable order.

Outputs go beside each media file, or under ``--out ROOT`` mirroring the input tree: a
file found at ``DIR/a/b.mp4`` (from ``DIR``, a glob ``DIR/**/*.mp4`` or a manifest in
``DIR``) gets its subtitles in ``ROOT/a/``. A manifest holds one media path per line, or
JSON objects with per-file options (``{"media": …, "source": "mn", "out": …}``);
relative paths count from the manifest's folder. Mistakes in what was asked (a glob
matching nothing, a bad manifest line) are one :class:`SubplugError` before any work;
a path that is missing or not media stays in the list and fails as that file's error.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from subplug.errors import SubplugError
from subplug.languages import SOURCES

#: File name endings a folder walk takes as media (any case). A glob or a manifest
#: takes whatever it names.
# fmt: off
MEDIA_EXTENSIONS = frozenset({
    "3g2", "3gp", "aac", "ac3", "aif", "aifc", "aiff", "amr", "ape", "au", "avi", "caf",
    "dts", "eac3", "f4v", "flac", "flv", "m2t", "m2ts", "m4a", "m4b", "m4v", "mka", "mkv",
    "mov", "mp2", "mp3", "mp4", "mpa", "mpeg", "mpg", "mts", "mxf", "nut", "oga", "ogg",
    "ogv", "opus", "ra", "rm", "rmvb", "spx", "ts", "tta", "vob", "w64", "wav", "weba",
    "webm", "wma", "wmv", "wv",
})
# fmt: on
_GLOB_CHARS = frozenset("*?[")
_MANIFEST_KEYS = frozenset({"media", "source", "out"})


@dataclass(frozen=True)
class JobFile:
    """One media file of a job and where its subtitles go."""

    media: Path
    out_dir: Path | None = None
    """Folder for its subtitles; ``None``: beside the media."""
    source: str | None = None
    """Its spoken language from a manifest (``auto``, ``en``, ``mn``); ``None``: the
    job's ``--source``."""


def is_glob(text: str) -> bool:
    """Whether ``text`` holds glob characters (``*``, ``?``, ``[``)."""
    return any(ch in _GLOB_CHARS for ch in text)


def expand(
    paths: Sequence[Path | str],
    *,
    recursive: bool = False,
    manifest: Path | None = None,
    out: Path | None = None,
) -> list[JobFile]:
    """The files of a job, in order: each path as given (a folder with ``recursive``:
    its media files, sorted, sub-folders included; a pattern that names no existing
    file: the files it matches), then the manifest's entries. A file named twice is
    kept once, at its first place."""
    found: list[JobFile] = []
    for item in paths:
        text = str(item)
        path = Path(text).expanduser()
        if path.is_dir() and recursive:
            found.extend(_mirrored(path, media, out) for media in walk(path))
        elif not path.exists() and is_glob(text):
            found.extend(_from_glob(text, out))
        else:
            found.append(JobFile(path, out))
    if manifest is not None:
        found.extend(read_manifest(manifest, out))
    return _unique(found)


def walk(folder: Path) -> list[Path]:
    """Media files under ``folder`` (by :data:`MEDIA_EXTENSIONS`), sorted; hidden files
    and folders are left out."""
    result: list[Path] = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            if name.rsplit(".", 1)[-1].lower() in MEDIA_EXTENSIONS and "." in name:
                result.append(Path(root) / name)
    return sorted(result)


def _from_glob(pattern: str, out: Path | None) -> list[JobFile]:
    matches = sorted(Path(m) for m in glob.glob(os.path.expanduser(pattern), recursive=True))
    files = [m for m in matches if m.is_file()]
    if not files:
        raise SubplugError(
            "no-media-found",
            f"No file matches {pattern}.",
            "Check the pattern; quote it so that subplug expands it (** reaches into "
            "sub-folders), or give a folder with --recursive.",
        )
    base = _glob_base(pattern)
    return [_mirrored(base, media, out) for media in files]


def _glob_base(pattern: str) -> Path:
    """The folder part of ``pattern`` before its first glob character."""
    parts = Path(os.path.expanduser(pattern)).parts
    fixed: list[str] = []
    for part in parts[:-1]:
        if is_glob(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _mirrored(base: Path, media: Path, out: Path | None) -> JobFile:
    """``media`` found under ``base``: its subtitles go under ``out`` at the same
    relative place (beside it without ``out``)."""
    if out is None:
        return JobFile(media)
    try:
        relative = media.parent.relative_to(base)
    except ValueError:
        relative = Path()
    return JobFile(media, out / relative)


def read_manifest(manifest: Path, out: Path | None = None) -> list[JobFile]:
    """The entries of a manifest file (module docstring)."""
    manifest = manifest.expanduser()
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SubplugError(
            "manifest-not-found",
            f"No such manifest: {manifest}",
            "Give a text file with one media path per line (or JSON lines) to --manifest.",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SubplugError(
            "bad-manifest",
            f"Cannot read the manifest {manifest}: {exc}.",
            "A manifest is a UTF-8 text file with one media path per line (or JSON lines).",
        ) from None
    base = manifest.parent
    files: list[JobFile] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("{"):
            files.append(_manifest_entry(_json_line(manifest, number, line), base, out))
        else:
            files.append(_mirrored(base, _resolve(base, line), out))
        where = f"{manifest}:{number}"
        if files[-1].source is not None and files[-1].source not in SOURCES:
            raise SubplugError(
                "bad-manifest",
                f"{where}: unknown source language {files[-1].source!r}.",
                f"Use one of: {', '.join(SOURCES)}.",
            )
    return files


def _json_line(manifest: Path, number: int, line: str) -> dict[str, Any]:
    where = f"{manifest}:{number}"
    try:
        item = json.loads(line)
    except json.JSONDecodeError as exc:
        raise SubplugError(
            "bad-manifest",
            f"{where}: not valid JSON ({exc.msg}).",
            'Write one object per line, like {"media": "talks/a.mp4", "source": "mn"}.',
        ) from None
    if not isinstance(item, dict) or not isinstance(item.get("media"), str):
        raise SubplugError(
            "bad-manifest",
            f'{where}: an object with a "media" path is needed.',
            'Write one object per line, like {"media": "talks/a.mp4", "source": "mn"}.',
        )
    unknown = sorted(set(item) - _MANIFEST_KEYS)
    wrong = [k for k in ("source", "out") if k in item and not isinstance(item[k], str)]
    if unknown or wrong:
        raise SubplugError(
            "bad-manifest",
            f"{where}: unknown or mistyped key(s): {', '.join(unknown + wrong)}.",
            'The keys are "media", "source" (auto, en, mn) and "out" (a folder), all text.',
        )
    return item


def _manifest_entry(item: dict[str, Any], base: Path, out: Path | None) -> JobFile:
    media = _resolve(base, item["media"])
    entry = _mirrored(base, media, out)
    out_dir = _resolve(base, item["out"]) if "out" in item else entry.out_dir
    return JobFile(media, out_dir, item.get("source"))


def _resolve(base: Path, text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else base / path


def _unique(files: Iterable[JobFile]) -> list[JobFile]:
    seen: set[Path] = set()
    result = []
    for item in files:
        key = Path(os.path.abspath(item.media))
        if key not in seen:
            seen.add(key)
            result.append(item)
    return result
