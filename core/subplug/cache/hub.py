"""The remote side: the models subplug knows by name and the downloaders that fetch them.

:data:`KNOWN_MODELS` is the registry ``subplug models pull`` downloads from;
:class:`HubDownloader` fetches from the Hugging Face Hub (``huggingface_hub`` is imported
only when it runs), and tests inject other :class:`Downloader` s. Putting what was
fetched into the cache is :mod:`subplug.cache.pull`.
"""

from __future__ import annotations

import errno
import fnmatch
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from subplug.cache.manifest import ModelKind

#: The model used when none is named (``generate`` without ``--model``, ``models pull``).
DEFAULT_MODEL = "gemma3n-en-mn"


@dataclass(frozen=True)
class KnownModel:
    """One entry of the registry of models ``subplug models pull`` can download."""

    name: str
    """Cache name it is stored under."""
    repo_id: str
    """Hugging Face repository."""
    description: str
    kind: ModelKind = "full"
    base: str | None = None
    """For adapters: the registry name of the base model (pulled first, stored once)."""
    revision: str | None = None
    """Pinned commit. ``None``: the pull takes the current ``main`` and records the commit
    it got in the manifest; a later forced pull of that entry reuses that commit."""
    backend: str = "gemma3n"
    """The backend (or text translator) that runs it: what ``--backend auto`` picks."""
    files: tuple[str, ...] = ()
    """Shell patterns of the repository files to fetch (``()``: all of them). A
    ``.bin`` weight file is left out when its ``.safetensors`` twin is fetched."""


#: The files a transformers model needs, without other frameworks' weights.
_TRANSFORMERS_FILES = ("*.json", "*.txt", "*.model", "*.jinja", "*.safetensors", "*.bin")

#: Models ``subplug models pull NAME`` knows. The default adapter's base is its own entry,
#: so other adapters on the same base share it. Only the Gemma 3n entries were made for
#: subplug; the others are the public models docs/models.md compares it with. None pins a
#: commit (none could be checked from the machines this was built on): a pull records the
#: commit it got.
KNOWN_MODELS: Mapping[str, KnownModel] = {
    model.name: model
    for model in (
        KnownModel(
            name="gemma-3n-e2b-it",
            repo_id="google/gemma-3n-E2B-it",
            description="Gemma 3n E2B instruction-tuned (base model, gated: accept its license)",
        ),
        KnownModel(
            name="gemma3n-en-mn",
            repo_id="bilguun/gemma-3n-E2B-it-audio-en-mn",
            kind="adapter",
            base="gemma-3n-e2b-it",
            description="English/Mongolian speech LoRA adapter for Gemma 3n E2B",
        ),
        KnownModel(
            name="whisper-small",
            repo_id="openai/whisper-small",
            description="Whisper small (transcribes English and Mongolian, "
            "translates into English)",
            backend="whisper",
            files=_TRANSFORMERS_FILES,
        ),
        KnownModel(
            name="mms-1b-all",
            repo_id="facebook/mms-1b-all",
            description="MMS 1B wav2vec2 CTC with per-language adapters (English, Mongolian kept)",
            backend="ctc",
            # The repository holds an adapter for each of its 1,162 languages; ours only.
            files=(
                "*.json",
                "model.safetensors",
                "pytorch_model.bin",
                *(
                    f"adapter.{code}.{ext}"
                    for code in ("eng", "mon", "khk")
                    for ext in ("safetensors", "bin")
                ),
            ),
        ),
        KnownModel(
            name="nllb-200-distilled-600m",
            repo_id="facebook/nllb-200-distilled-600M",
            description="NLLB-200 600M text translator (eng_Latn <-> khk_Cyrl), for --translator",
            backend="nllb",
            files=_TRANSFORMERS_FILES,
        ),
        KnownModel(
            name="qwen3-asr-1.7b",
            # The transformers-format copy (transformers 5.24's qwen3_asr names the -hf repos).
            repo_id="Qwen/Qwen3-ASR-1.7B-hf",
            description="Qwen3-ASR 1.7B (transcribes English; fine-tunes translate)",
            backend="qwen3-asr",
            files=_TRANSFORMERS_FILES,
        ),
        KnownModel(
            name="seamless-m4t-v2-large",
            repo_id="facebook/seamless-m4t-v2-large",
            description="SeamlessM4T v2 large (speech translation English <-> Halh Mongolian)",
            backend="seamless",
            files=_TRANSFORMERS_FILES,
        ),
        KnownModel(
            name="gemma-3-4b-speech",
            repo_id="junnei/gemma-3-4b-it-speech",
            description="Gemma 3 4B with a speech LoRA (own model code: --trust-remote-code)",
            backend="remote-code",
            files=(*_TRANSFORMERS_FILES, "*.py"),
        ),
        KnownModel(
            name="tiny-audio",
            repo_id="mazesmazes/tiny-audio",
            description="Tiny Audio: HuBERT + projector + SmolLM3, English (own code: "
            "--trust-remote-code)",
            backend="remote-code",
            files=(*_TRANSFORMERS_FILES, "*.py"),
        ),
    )
}


def select_files(files: Sequence[RemoteFile], patterns: Sequence[str]) -> tuple[RemoteFile, ...]:
    """The files of a snapshot a known model fetches: those matching ``patterns`` (all
    when there are none), less any ``.bin`` weights whose ``.safetensors`` twin is kept
    (``pytorch_model*.bin`` → ``model*.safetensors``, ``NAME.bin`` → ``NAME.safetensors``)."""
    if not patterns:
        return tuple(files)
    kept = [f for f in files if any(fnmatch.fnmatchcase(f.path, p) for p in patterns)]
    paths = {f.path for f in kept}

    def twin(path: str) -> str:
        folder, _, name = path.rpartition("/")
        stem = name[: -len(".bin")]
        if stem.startswith("pytorch_model"):
            stem = "model" + stem[len("pytorch_model") :]
        return f"{folder}/{stem}.safetensors" if folder else f"{stem}.safetensors"

    return tuple(f for f in kept if not (f.path.endswith(".bin") and twin(f.path) in paths))


def known_models() -> Mapping[str, KnownModel]:
    """The registry ``models pull`` downloads from (name → :class:`KnownModel`)."""
    return KNOWN_MODELS


def same_repo(a: str, b: str) -> bool:
    """True when two Hub repository ids name the same repository (case, slashes)."""
    return a.strip("/").casefold() == b.strip("/").casefold()


@dataclass(frozen=True)
class RemoteFile:
    """A file of a remote snapshot."""

    path: str
    size: int | None
    sha256: str | None = None
    """The Hub's LFS sha256 when it has one (large files); checked after download."""


@dataclass(frozen=True)
class RemoteSnapshot:
    """A repository at one commit: what a :class:`Downloader` resolved."""

    repo_id: str
    commit: str
    files: tuple[RemoteFile, ...]


class DownloadError(Exception):
    """A downloader could not reach or read the remote (network down, 404, gated…)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class Downloader(Protocol):
    """Fetches repositories. :class:`HubDownloader` is the real one; tests inject others.

    Network and remote failures raise :class:`DownloadError` (or ``ConnectionError`` /
    ``TimeoutError``); a full disk raises ``OSError(ENOSPC)``.
    """

    def resolve(self, repo_id: str, revision: str | None) -> RemoteSnapshot:
        """Pin ``revision`` (``None`` = main) to a commit and list its files."""
        ...

    def fetch(self, snapshot: RemoteSnapshot, dest: Path) -> None:
        """Download every file of ``snapshot`` into ``dest``, resuming what is there."""
        ...


class HubDownloader:
    """:class:`Downloader` over ``huggingface_hub`` (token and ``HF_ENDPOINT`` as usual)."""

    def __init__(
        self, *, endpoint: str | None = None, token: str | bool | None = None, max_workers: int = 8
    ) -> None:
        self.endpoint = endpoint
        self.token = token
        self.max_workers = max_workers

    def resolve(self, repo_id: str, revision: str | None) -> RemoteSnapshot:
        """Ask the Hub for the commit of ``revision`` and the files at that commit."""
        from huggingface_hub import HfApi
        from huggingface_hub.hf_api import RepoFile

        api = HfApi(endpoint=self.endpoint, token=self.token)
        with _hub_errors(repo_id):
            info = api.repo_info(repo_id, revision=revision)
            commit = info.sha
            if not commit:
                raise DownloadError(f"the Hub did not say which commit {repo_id} is at")
            files = tuple(
                RemoteFile(f.path, f.size, f.lfs.sha256 if f.lfs is not None else None)
                for f in api.list_repo_tree(repo_id, recursive=True, revision=commit)
                if isinstance(f, RepoFile)
            )
        return RemoteSnapshot(repo_id, commit, files)

    def fetch(self, snapshot: RemoteSnapshot, dest: Path) -> None:
        """``snapshot_download`` into ``dest`` (its ``.incomplete`` files make it resumable)."""
        from huggingface_hub import snapshot_download
        from tqdm.auto import tqdm

        class _Silent(tqdm):  # type: ignore[misc, type-arg]
            # Our own rich bar reports progress; keep huggingface_hub's bars quiet.
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                kwargs.pop("name", None)
                kwargs["disable"] = True
                super().__init__(*args, **kwargs)

        with _hub_errors(snapshot.repo_id):
            snapshot_download(
                snapshot.repo_id,
                revision=snapshot.commit,
                local_dir=dest,
                endpoint=self.endpoint,
                token=self.token,
                max_workers=self.max_workers,
                allow_patterns=[f.path for f in snapshot.files],
                tqdm_class=_Silent,
            )


@contextmanager
def _hub_errors(repo_id: str) -> Iterator[None]:
    """Turn huggingface_hub's network/remote failures into :class:`DownloadError`."""
    import httpx2
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except GatedRepoError as e:
        raise DownloadError(
            f"{repo_id} is gated: {first_line(e)}",
            f"Accept its license on https://huggingface.co/{repo_id} and log in with "
            "`hf auth login` (or set HF_TOKEN), then run the same command again.",
        ) from e
    except RepositoryNotFoundError as e:
        raise DownloadError(f"repository {repo_id} not found (or private)") from e
    except RevisionNotFoundError as e:
        raise DownloadError(f"revision not found in {repo_id}: {first_line(e)}") from e
    except (HfHubHTTPError, EntryNotFoundError, httpx2.HTTPError) as e:
        raise DownloadError(first_line(e)) from e
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        if isinstance(e, (ConnectionError, TimeoutError, FileNotFoundError)) or e.errno is None:
            raise DownloadError(first_line(e)) from e
        raise


def first_line(e: BaseException) -> str:
    """The first line of an error's message (its type name when it has none)."""
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]
