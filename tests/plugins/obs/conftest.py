"""Fixtures for the OBS adapter's tests: the tiny model, and the tiny model taught to
caption one spoken phrase (built once, then kept in pytest's cache)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from taught_model import PHRASE, teach_tiny_model

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The random tiny Gemma 3n (subplug.testing.tiny), built offline."""
    from subplug.testing.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


def _recipe_key() -> str:
    """Changes whenever anything that shapes the taught model changes."""
    import subplug.testing.tiny as tiny
    import transformers

    digest = hashlib.sha256()
    for path in (Path(tiny.__file__), HERE / "taught_model.py"):
        digest.update(path.read_bytes())
    digest.update(repr(PHRASE).encode("utf-8"))
    digest.update(transformers.__version__.encode())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def taught_model(
    request: pytest.FixtureRequest, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The tiny model taught to answer :data:`PHRASE`'s audio with its captions.

    Teaching takes a minute or two on two cores, so the result is kept in pytest's cache
    under a key made of everything that shapes it; ``pytest --cache-clear`` rebuilds it.
    With the cache plugin off (``-p no:cacheprovider``) it is built for this run only.
    """
    key = f"subplug-obs-taught-{_recipe_key()}"
    pytest_cache = getattr(request.config, "cache", None)
    cache = Path(pytest_cache.mkdir(key)) if pytest_cache else tmp_path_factory.mktemp(key)
    model = cache / "model"
    if (model / "model.safetensors").is_file() and (model / "tokenizer.json").is_file():
        return model
    work = cache / f"building-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    teach_tiny_model(tiny_model, work, [PHRASE])
    try:
        os.replace(work, model)
    except OSError:  # another run finished first: use its copy
        shutil.rmtree(work, ignore_errors=True)
    return model
