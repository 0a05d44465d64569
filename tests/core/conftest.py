"""Fixtures of the core tests that more than one module uses."""

from __future__ import annotations

import shutil

import pytest
from archive_media import Archive, build


@pytest.fixture(scope="session")
def archive_source(tmp_path_factory: pytest.TempPathFactory) -> Archive:
    """The job tests' archive (tests/core/archive.py), built once."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (apt install espeak-ng)")
    return build(tmp_path_factory.mktemp("archive") / "archive")
