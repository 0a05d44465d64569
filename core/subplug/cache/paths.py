"""Where the model cache lives, and the names it uses.

Layout (``<home>`` is :func:`subplug_home`)::

    <home>/models/<name>/                 one complete model (Hugging Face folder layout)
    <home>/models/<name>/manifest.json    sha256 + size of every file, kind, base, source
    <home>/models/.partial-<name>-<pid>/  work in progress; never a complete model
    <home>/models/.trash-<name>-<pid>/    an entry being replaced or removed
    <home>/locks/                         one lock file per model name + one for the folder
    <home>/journal/                       per-chunk journals of the engine

Nothing here creates or reads anything on disk: these are locations and naming rules.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from subplug.errors import SubplugError

#: Name of the manifest inside every cache entry (and every exported model).
MANIFEST_NAME = "manifest.json"
#: Work folders: ``<prefix><name>-<pid>`` under the models folder.
PARTIAL_PREFIX = ".partial-"
TRASH_PREFIX = ".trash-"
#: Inside a partial folder: which operation made it (and, for a pull, what it fetches).
PARTIAL_MARKER = ".subplug-partial.json"
# Never copied into an entry: our own bookkeeping, git metadata, huggingface_hub's
# local-dir metadata (``.cache/huggingface``).
RESERVED_TOP = frozenset({MANIFEST_NAME, PARTIAL_MARKER, ".git", ".cache"})
#: What a cache entry may be called.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def subplug_home() -> Path:
    """subplug's data folder: ``$SUBPLUG_HOME`` if set, else the platform's *user data*
    folder for "subplug" (``~/.local/share/subplug`` on Linux, ``~/Library/Application
    Support/subplug`` on macOS, ``%LOCALAPPDATA%\\subplug`` on Windows).

    The data folder rather than the cache folder: models are big, slow to fetch and must
    not be wiped by cache cleaners. Nothing is created by this call.
    """
    env = os.environ.get("SUBPLUG_HOME")
    if env:
        return Path(env).expanduser().absolute()
    from platformdirs import user_data_path

    return user_data_path("subplug", appauthor=False)


def models_dir() -> Path:
    """``<home>/models``: one folder per cache entry (not created by this call)."""
    return subplug_home() / "models"


def journal_dir() -> Path:
    """``<home>/journal``: where the engine keeps per-chunk journals (not created here)."""
    return subplug_home() / "journal"


def writes_dir() -> Path:
    """``<home>/writes``: records of subtitle files being put in place, so a rerun after
    a crash completes the set (:func:`subplug.files.write_files`; not created here)."""
    return subplug_home() / "writes"


def locks_dir() -> Path:
    """``<home>/locks``: the cache's lock files (not created here)."""
    return subplug_home() / "locks"


def check_name(name: str) -> None:
    """Raise ``invalid-model-name`` unless ``name`` can name a cache entry."""
    if not NAME_RE.match(name):
        raise SubplugError(
            "invalid-model-name",
            f"{name!r} cannot be a model name.",
            "Use letters, digits, '.', '_' and '-', starting with a letter or digit "
            "(at most 100 characters).",
        )


def safe_relpath(rel: str) -> bool:
    """True for a relative POSIX path that stays inside its folder (no ``..``, no drive,
    no backslash, no NUL)."""
    if not rel or rel.startswith("/") or "\\" in rel or "\x00" in rel:
        return False
    parts = rel.split("/")
    return all(p not in ("", ".", "..") for p in parts) and not re.match(r"^[A-Za-z]:", rel)
