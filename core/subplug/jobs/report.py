"""One row per file of a job — done, skipped or failed, with why — and the ``--report``
file: JSON lines, or CSV when its name ends in ``.csv``.

The report is written at the end of the job (also when it is interrupted: the rows so
far), atomically; an earlier report of that name is kept as ``NAME.bak``.
"""

from __future__ import annotations

import csv
import io
import json
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from subplug.errors import SubplugError

DONE, SKIPPED, FAILED = "done", "skipped", "failed"

#: Columns of the CSV form, in order (lists are joined with ``;``).
CSV_COLUMNS = (
    "media",
    "status",
    "outputs",
    "duration",
    "chunks",
    "resumed",
    "source_lang",
    "warnings",
    "error",
    "error_message",
    "error_hint",
)


@dataclass(frozen=True)
class FileRow:
    """What became of one file."""

    media: str
    status: str
    """``done``, ``skipped`` (finished by an earlier run) or ``failed``."""
    outputs: tuple[str, ...] = ()
    duration: float | None = None
    """Seconds of audio (``None`` when not decoded: skipped or failed early)."""
    chunks: int = 0
    """Chunks planned."""
    resumed: int = 0
    """Chunks taken from the journal of an earlier run."""
    source_lang: str | None = None
    warnings: tuple[str, ...] = ()
    """References of the file's warnings (``no-speech``, ``cues-dropped``…)."""
    error: dict[str, Any] | None = None
    """The failure (``reference``, ``message``, ``hint``, ``context``)."""

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["outputs"] = list(self.outputs)
        data["warnings"] = list(self.warnings)
        return data


@dataclass
class Report:
    """The rows of a job, added from any thread."""

    rows: list[FileRow] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, row: FileRow) -> None:
        with self._lock:
            self.rows.append(row)

    def count(self, status: str) -> int:
        return sum(1 for row in self.rows if row.status == status)

    def failed(self) -> list[FileRow]:
        return [row for row in self.rows if row.status == FAILED]

    def audio_seconds(self) -> float:
        """Seconds of audio of the files done in this job."""
        return sum(row.duration or 0.0 for row in self.rows if row.status == DONE)

    def render(self, path: Path) -> bytes:
        """The report's bytes: CSV for a ``.csv`` name, JSON lines otherwise (UTF-8).

        A file name that is not UTF-8 stays the name's own bytes in CSV, and becomes a
        ``\\udcXX`` escape in JSON (read back as the same name by Python)."""
        rows = sorted(self.rows, key=lambda r: r.media)
        if path.suffix.lower() == ".csv":
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(CSV_COLUMNS)
            for row in rows:
                error = row.error or {}
                writer.writerow(
                    [
                        row.media,
                        row.status,
                        ";".join(row.outputs),
                        "" if row.duration is None else f"{row.duration:.3f}",
                        row.chunks,
                        row.resumed,
                        row.source_lang or "",
                        ";".join(row.warnings),
                        error.get("reference") or "",
                        error.get("message") or "",
                        error.get("hint") or "",
                    ]
                )
            return buffer.getvalue().encode("utf-8", "surrogateescape")
        return b"".join(_json_line(r.as_dict()) for r in rows)

    def write(self, path: Path) -> Path:
        """Write the report to ``path`` (module docstring)."""
        from subplug import files

        return files.write_atomic(path, self.render(path), overwrite=True)


def _json_line(data: dict[str, Any]) -> bytes:
    text = json.dumps(data, ensure_ascii=False) + "\n"
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(data) + "\n").encode("ascii")


def error_row(media: Path | str, error: SubplugError) -> FileRow:
    return FileRow(str(media), FAILED, error=error.to_dict())
