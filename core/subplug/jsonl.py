"""Writing the JSON-lines contract (docs/jsonl.md, docs/live.md): one home for both
``generate --jsonl`` and ``subplug live``.

Every line is a JSON object whose first keys are ``v`` (:data:`subplug.JSONL_VERSION`),
``event`` and ``time``; it is written whole and flushed at once, from any thread. When
the reader has gone (a closed pipe), nothing more is written and :attr:`broken` says
so, so a producer can stop instead of working for nobody.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import IO, Any

from subplug import JSONL_VERSION


def header(event: str, time: float) -> dict[str, Any]:
    """The first keys of every line."""
    return {"v": JSONL_VERSION, "event": event, "time": round(time, 3)}


def _encodable(text: str, stream: IO[str]) -> bool:
    try:
        text.encode(getattr(stream, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


class JsonLinesWriter:
    """Writes one JSON object per line to ``stream``, flushed, thread-safe."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.broken = False
        self._lock = threading.Lock()

    def write(self, data: Mapping[str, Any]) -> bool:
        """Write ``data`` as one line; False once the reader is gone (nothing written)."""
        text = json.dumps(data, ensure_ascii=False, default=str) + "\n"
        if not _encodable(text, self.stream):
            # A file name that is not UTF-8: escape it (\udcff is valid JSON) rather than fail.
            text = json.dumps(data, ensure_ascii=True, default=str) + "\n"
        with self._lock:
            if self.broken:
                return False
            try:
                self.stream.write(text)
                self.stream.flush()
            except (BrokenPipeError, ValueError, OSError):
                self.broken = True
                return False
        return True
