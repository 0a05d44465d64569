"""Subtitle writers (ASS, SRT, WebVTT over pysubs2) and safe, atomic file output.

* :func:`render_ass` puts every language in one file with a named style per language
  (``EN``, ``MN``): :attr:`StyleOptions.bottom` at the bottom (Alignment 2) in the main
  font size, the other in the smaller second size, raised just above the bottom
  language's tallest cue (``second_position="above"``) or at the top of the frame
  (``"top"``, Alignment 8). DejaVu Sans (has Cyrillic), white and pale-yellow text,
  black outline and a soft shadow, sizes in the script's PlayRes pixels.
* :func:`render_srt` / :func:`render_vtt` write one language per file; :func:`srt_text`
  writes given cues (hosts that merge languages into one cue).
* :func:`output_path` names files ``NAME.en-mn.ass``, ``NAME.en.srt``, ``NAME.mn.vtt``.
* :func:`write_files` writes UTF-8 (no byte-order mark) through a temporary file in the
  target folder and ``os.replace``. Every target is checked before anything is written;
  an existing file is only replaced with ``overwrite``, and then it is kept as
  ``NAME.ext.bak`` (``.bak.1``, ``.bak.2`` … when that exists too).
* :func:`replace_atomic` swaps in a file subplug owns, without checks or backup.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import pysubs2

from subplug.errors import SubplugError
from subplug.types import Cue, StyleOptions, SubtitleFormat, Tracks

#: Text colour per role (pysubs2 colours are RGBA with 0 = opaque).
_MAIN_COLOUR = pysubs2.Color(255, 255, 255, 0)
_SECOND_COLOUR = pysubs2.Color(255, 236, 150, 0)
_OUTLINE_COLOUR = pysubs2.Color(0, 0, 0, 0)
_SHADOW_COLOUR = pysubs2.Color(0, 0, 0, 128)
#: Line height of DejaVu Sans as a share of the font size (ascent + descent ≈ 1.16).
_LINE_HEIGHT = 1.2


def style_name(lang: str) -> str:
    """The ASS style of a language: ``EN``, ``MN``…"""
    return lang.upper()


def _safe_text(lines: Sequence[str]) -> str:
    """Cue lines as ASS event text. Braces would start override blocks, in ASS and in
    pysubs2's SRT/VTT writers alike, so they become parentheses. A backslash stays a
    backslash, followed by an invisible WORD JOINER (U+2060), so ``\\N``, ``\\h`` or
    ``\\i1`` in the text are never read as codes (a look-alike such as U+FF3C is missing
    from common fonts, DejaVu Sans included, and would show as a box)."""
    cleaned = (line.replace("\\", "\\\u2060").replace("{", "(").replace("}", ")") for line in lines)
    return r"\N".join(cleaned)


def _events(cues: Iterable[Cue], style: str) -> list[pysubs2.SSAEvent]:
    return [
        pysubs2.SSAEvent(
            start=round(cue.start * 1000),
            end=round(cue.end * 1000),
            text=_safe_text(cue.lines),
            style=style,
        )
        for cue in cues
    ]


def _cues(tracks: Tracks, lang: str) -> tuple[Cue, ...]:
    track = tracks.tracks.get(lang)
    return track.cues if track is not None else ()


def render_ass(tracks: Tracks, langs: Sequence[str], style: StyleOptions) -> str:
    """One ASS script holding ``langs``, each in its own style (see the module doc)."""
    if not langs:
        raise ValueError("render_ass needs at least one language")
    if style.second_position not in ("above", "top"):
        raise ValueError(f"second_position must be 'above' or 'top', not {style.second_position!r}")
    width, height = style.play_res
    bottom = style.bottom if style.bottom in langs else langs[0]
    outline = max(1.0, round(height / 360, 1))
    shadow = max(0.5, round(height / 1080, 1))
    margin_v = round(height * 0.045)
    margin_h = round(width * 0.05)

    subs = pysubs2.SSAFile()
    subs.info.update(
        {
            "Title": tracks.media.name,
            "PlayResX": str(width),
            "PlayResY": str(height),
            "ScaledBorderAndShadow": "yes",
            "WrapStyle": "0",
        }
    )
    subs.styles.clear()
    bottom_lines = max((len(c.lines) for c in _cues(tracks, bottom)), default=1) or 1
    raised = round(
        margin_v + bottom_lines * style.font_size * _LINE_HEIGHT + 0.4 * style.second_font_size
    )
    for lang in langs:
        main = lang == bottom
        top = not main and style.second_position == "top"
        subs.styles[style_name(lang)] = pysubs2.SSAStyle(
            fontname=style.font,
            fontsize=style.font_size if main else style.second_font_size,
            primarycolor=_MAIN_COLOUR if main else _SECOND_COLOUR,
            secondarycolor=_MAIN_COLOUR if main else _SECOND_COLOUR,
            outlinecolor=_OUTLINE_COLOUR,
            backcolor=_SHADOW_COLOUR,
            borderstyle=1,
            outline=outline,
            shadow=shadow,
            alignment=pysubs2.Alignment.TOP_CENTER if top else pysubs2.Alignment.BOTTOM_CENTER,
            marginl=margin_h,
            marginr=margin_h,
            marginv=margin_v if main or top else raised,
            encoding=1,
        )
    events = []
    for lang in langs:
        events.extend(_events(_cues(tracks, lang), style_name(lang)))
    # Same start: the bottom language first, so players that stack collisions agree.
    order = {style_name(lang): index for index, lang in enumerate([bottom, *langs])}
    events.sort(key=lambda e: (e.start, order[e.style], e.end))
    subs.events = events
    return subs.to_string("ass")


def _single(langs: Sequence[str], name: str) -> str:
    if len(langs) != 1:
        raise ValueError(f"{name} holds one language per file, got {list(langs)}")
    return langs[0]


def render_srt(tracks: Tracks, langs: Sequence[str], style: StyleOptions | None = None) -> str:
    """SubRip text of the one language in ``langs`` (``style`` is unused)."""
    return srt_text(_cues(tracks, _single(langs, "SRT")))


def srt_text(cues: Iterable[Cue]) -> str:
    """SubRip text of ``cues`` as given, their text made safe like every subtitle subplug
    writes. :func:`render_srt` uses it; a host that puts several languages in one cue
    (Kdenlive before 24.08 has one subtitle track) calls it with its merged cues."""
    subs = pysubs2.SSAFile()
    subs.events = sorted(_events(cues, "Default"), key=lambda e: e.start)
    return subs.to_string("srt")


def _vtt_escape(cue: Cue) -> Cue:
    lines = tuple(
        line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") for line in cue.lines
    )
    return Cue(cue.start, cue.end, lines)


def render_vtt(tracks: Tracks, langs: Sequence[str], style: StyleOptions | None = None) -> str:
    """WebVTT text of the one language in ``langs``; ``&``, ``<`` and ``>`` are written
    as character references, as WebVTT requires (``style`` is unused)."""
    lang = _single(langs, "WebVTT")
    subs = pysubs2.SSAFile()
    cues = (_vtt_escape(cue) for cue in _cues(tracks, lang))
    subs.events = sorted(_events(cues, "Default"), key=lambda e: e.start)
    return subs.to_string("vtt")


# ------------------------------------------------------------------------- files


def output_path(
    media: Path, out_dir: Path | None, fmt: SubtitleFormat, langs: Sequence[str]
) -> Path:
    """Where a subtitle file for ``media`` goes: ``NAME.en-mn.ass``, ``NAME.en.srt``…
    next to the media, or in ``out_dir``."""
    media = Path(media)
    folder = Path(out_dir) if out_dir is not None else media.parent
    return folder / f"{media.stem}.{'-'.join(langs)}.{fmt.extension}"


def backup_path(path: Path) -> Path:
    """The first free backup name for ``path``: ``NAME.ext.bak``, then ``.bak.1``…"""
    candidate = path.with_name(path.name + ".bak")
    number = 0
    while candidate.exists() or candidate.is_symlink():
        number += 1
        candidate = path.with_name(f"{path.name}.bak.{number}")
    return candidate


def check_writable(paths: Iterable[Path], *, overwrite: bool) -> None:
    """Fail before any work when a target exists (without ``overwrite``), is a folder,
    or its folder cannot be created or written. Raises :class:`SubplugError`
    ``output-exists`` or ``output-not-writable``."""
    paths = [Path(p) for p in paths]
    probed: set[Path] = set()
    for path in paths:
        if path.is_dir():
            raise SubplugError(
                "output-not-writable",
                f"Cannot write {path}: a folder has that name.",
                "Move the folder away or choose another output folder with --out DIR.",
            )
        folder = path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir() or (folder not in probed and not _can_create_in(folder)):
            raise SubplugError(
                "output-not-writable",
                f"Cannot write {path}: {folder} is not a writable folder.",
                "Choose another output folder with --out DIR, or fix its permissions.",
            )
        probed.add(folder)
    existing = [path for path in paths if path.exists() or path.is_symlink()]
    if existing and not overwrite:
        names = ", ".join(str(p) for p in existing)
        raise SubplugError(
            "output-exists",
            f"Subtitle file{'s' if len(existing) > 1 else ''} already there: {names}.",
            "Pass --overwrite to replace them (each old file is kept as NAME.bak).",
        )


def _can_create_in(folder: Path) -> bool:
    """Whether a file can be created in ``folder``, found by creating (and removing) an
    empty one: permission bits do not tell the whole story (root, ACLs, read-only
    mounts, network shares)."""
    try:
        handle, name = tempfile.mkstemp(dir=folder, prefix=".subplug-probe-")
    except OSError:
        return False
    os.close(handle)
    with contextlib.suppress(OSError):
        os.unlink(name)
    return True


def _os_error(exc: OSError, path: Path) -> SubplugError:
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return SubplugError(
            "disk-full",
            f"No space left to write {path}.",
            "Free some disk space or choose another output folder with --out DIR.",
        )
    return SubplugError(
        "output-not-writable",
        f"Cannot write {path}: {exc.strerror or exc}.",
        "Choose another output folder with --out DIR, or fix its permissions.",
    )


def _new_file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_files(items: Sequence[tuple[Path, str]], *, overwrite: bool) -> list[Path]:
    """Write each ``(path, text)`` atomically as UTF-8; return the paths.

    All targets are checked first (:func:`check_writable`), then every text goes to a
    temporary file beside its target; only when all are on disk are they moved into
    place. A failure before that removes the temporary files and leaves the targets as
    they were. With ``overwrite`` an existing target is first kept as a backup
    (:func:`backup_path`); without it a target that appeared meanwhile is never
    replaced.
    """
    items = [(Path(path), text) for path, text in items]
    check_writable([path for path, _ in items], overwrite=overwrite)
    temps: list[Path] = []
    current = items[0][0] if items else Path()
    try:
        for path, text in items:
            current = path
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            temps.append(Path(name))
            with os.fdopen(handle, "wb") as stream:
                stream.write(text.encode("utf-8"))
                stream.flush()
                os.fsync(stream.fileno())
            os.chmod(name, _new_file_mode())
        written = []
        for (path, _), temp in zip(items, temps, strict=True):
            current = path
            _commit(temp, path, overwrite=overwrite)
            written.append(path)
        return written
    except OSError as exc:
        raise _os_error(exc, current) from exc
    finally:
        for temp in temps:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()


def _commit(temp: Path, path: Path, *, overwrite: bool) -> None:
    if overwrite and (path.exists() or path.is_symlink()):
        backup = backup_path(path)
        try:
            os.link(path, backup, follow_symlinks=False)
        except OSError:
            shutil.copy2(path, backup, follow_symlinks=False)
        with contextlib.suppress(OSError):
            shutil.copymode(path, temp)
        os.replace(temp, path)
        return
    try:
        os.link(temp, path)  # fails if the target appeared since the check: no clobbering
    except FileExistsError:
        raise SubplugError(
            "output-exists",
            f"{path} appeared while subtitles were being written; it was left alone.",
            "Pass --overwrite to replace it (the old file is kept as NAME.bak).",
        ) from None
    except OSError:
        if path.exists():
            raise
        os.replace(temp, path)  # file systems without hard links
    else:
        temp.unlink()


def write_atomic(path: Path, text: str, *, overwrite: bool) -> Path:
    """Write one file the way :func:`write_files` does; returns its path."""
    return write_files([(Path(path), text)], overwrite=overwrite)[0]


def replace_atomic(path: Path, data: bytes) -> None:
    """Put ``data`` in ``path`` at once: a temporary file beside it, flushed to disk,
    then one ``os.replace``.

    Unlike :func:`write_files` there is no check and no backup: this is for files
    subplug owns (cache manifests, the files it installs into host programs). The
    folder must exist. An ``OSError`` is raised as it is, once the temporary file is
    removed.
    """
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temp, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
