"""Fixtures for the training package's tests: the tiny Gemma 3n in a model cache, espeak-ng
speech clips, a manifest, and (once per session) a LoRA adapter trained on them with
``subplug train``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from training_setup import (
    ADAPTER_NAME,
    BASE_NAME,
    CLIPS,
    ROUND_TRIP_RECIPE,
    Trained,
    need_espeak,
    write_manifest,
)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Gemma 3n (real processor and architecture), built once."""
    from subplug.testing.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def speech_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``en.wav`` (English voice) and ``mn.wav`` (Russian voice reading Mongolian)."""
    need_espeak()
    from subplug.testing.media import speech_wav

    folder = tmp_path_factory.mktemp("clips")
    return {
        lang: speech_wav(folder / f"{lang}.wav", clip[f"text_{lang}"], clip["voice"])
        for lang, clip in CLIPS.items()
    }


@pytest.fixture(scope="session")
def trained(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_model_dir: Path,
    speech_clips: dict[str, Path],
) -> Iterator[Trained]:
    """Train the round-trip adapter with ``subplug train`` (in this process) into a model
    cache of its own, once per session."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    import torch
    from subplug import cache, plugins
    from subplug.cli import main

    home = tmp_path_factory.mktemp("trained-home")
    folder = tmp_path_factory.mktemp("round-trip")
    manifest = write_manifest(folder / "clips.jsonl", speech_clips)
    recipe = folder / "round-trip.toml"
    recipe.write_text(ROUND_TRIP_RECIPE, encoding="utf-8")
    threads = torch.get_num_threads()
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SUBPLUG_HOME", str(home))
        plugins.reset_plugin_manager()
        cache.import_model(tiny_model_dir, name=BASE_NAME)
        try:
            with redirect_stdout(out), redirect_stderr(out):
                code = main(
                    [
                        "train",
                        "--recipe",
                        str(recipe),
                        "--data",
                        f"manifest={manifest}",
                        "--name",
                        ADAPTER_NAME,
                        "--device",
                        "cpu",
                        # One thread: on a loaded 2-core machine two threads can be
                        # many times slower than one.
                        "--threads",
                        "1",
                    ]
                )
        finally:
            torch.set_num_threads(threads)
            plugins.reset_plugin_manager()
    clips = {lang: folder / path.name for lang, path in speech_clips.items()}
    yield Trained(home, folder, manifest, clips, code, out.getvalue())


@pytest.fixture
def trained_home(trained: Trained, monkeypatch: pytest.MonkeyPatch) -> Trained:
    """The trained adapter's model cache as this test's ``SUBPLUG_HOME``."""
    assert trained.exit_code == 0, trained.output
    monkeypatch.setenv("SUBPLUG_HOME", str(trained.home))
    return trained
