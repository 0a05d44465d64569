"""subplug: offline bilingual English/Mongolian subtitles with Gemma 3n.

Importing this package is cheap: torch and transformers are imported only by the
backend and training code that needs them.
"""

from __future__ import annotations

__version__ = "0.1.0"

#: Version of the ``--jsonl`` event contract (docs/jsonl.md). Bump on breaking changes.
JSONL_VERSION = 1
