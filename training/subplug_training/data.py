"""Training data: the four public sources and our JSON-lines manifest, read from local copies.

Sources (``--data KIND=PATH``; see docs/training.md for the folder layouts):

==================  ==============================================================
``mbspeech``        ``bilguun/mbspeech``: Mongolian Bible readings, ``sentence_orig``
                    is the text; 10 % held out (seed 42).
``ted``             ``bilguun/ted_talks_en_mn_split``: both splits, as ``ted-en`` and
                    ``ted-mn``.
``ted-en``          its ``en`` split: English talks with ``text_en`` and ``text_mn``.
``ted-mn``          its ``mn`` split: TEDxUlaanbaatar, Mongolian audio with ``text_mn``
                    and a machine-translated ``text_en``.
``common-voice``    Common Voice 17 ``mn`` (``sentence``): ``train`` + ``validation``
                    for training, ``test`` for evaluation.
``manifest``        our JSON-lines manifest (:func:`read_manifest`), for your own
                    recordings.
==================  ==============================================================

A dataset folder may be a ``datasets`` ``save_to_disk`` folder, a folder of parquet files
(a clone of the Hub repository), an audio folder with ``metadata.csv``, or for Common
Voice the folder of Mozilla's release (``train.tsv``, ``dev.tsv``, ``test.tsv``,
``clips/``). Audio is decoded with PyAV to 16 kHz (:mod:`subplug_training.audio`).

Every row is checked once (:func:`scan`): rows with no usable text, audio that cannot be
decoded, and clips outside the recipe's 0.5–30 s are dropped, counted by reason and
reported; they never stop the run. The seed's splits are reproduced (``datasets``'
``train_test_split(test_size=0.1, seed=42)``, computed here the same way).
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from subplug.errors import SubplugError
from subplug.types import LANGUAGES, SAMPLE_RATE

from subplug_training.audio import AudioError, decode_bytes, decode_file
from subplug_training.recipe import DataSettings

#: Source kinds ``--data`` accepts; ``ted`` stands for ``ted-en`` and ``ted-mn``.
KINDS = ("mbspeech", "ted", "ted-en", "ted-mn", "common-voice", "manifest")
#: The seed's order of sources (instruction draws and the concatenated training set).
SEED_ORDER = ("mbspeech", "ted-en", "ted-mn", "common-voice", "manifest")
SPLITS = ("train", "test")

#: A row of a source: (part, index), where part is a split of the stored dataset.
RowId = tuple[str, int]

_TEST_NAMES = frozenset({"test", "eval", "evaluation", "validation", "valid", "dev", "holdout"})


# ---------------------------------------------------------------------- data specs


@dataclass(frozen=True)
class DataSpec:
    """One ``--data`` argument: a source kind and where its local copy is."""

    kind: str
    path: Path

    @property
    def label(self) -> str:
        return f"{self.kind}={self.path}"


def parse_data_spec(text: str) -> DataSpec:
    """``KIND=PATH``, or a bare ``PATH`` ending in ``.jsonl`` (a manifest)."""
    kind, sep, rest = text.partition("=")
    kind = kind.strip()
    if sep and kind in KINDS:
        path = Path(rest.strip()).expanduser()
    elif sep and re.fullmatch(r"[A-Za-z][\w-]*", kind):
        raise SubplugError(
            "bad-data",
            f"--data {text!r}: there is no data source kind {kind!r}.",
            f"Kinds: {', '.join(KINDS)}.",
        )
    elif text.endswith((".jsonl", ".json")):
        kind, path = "manifest", Path(text).expanduser()
    else:
        raise SubplugError(
            "bad-data",
            f"--data {text!r}: say which source it is, as KIND=PATH.",
            f"Kinds: {', '.join(KINDS)} (a path ending in .jsonl is a manifest).",
        )
    if not path.exists():
        raise SubplugError(
            "data-not-found",
            f"--data {text}: there is nothing at {path}.",
            "Give the folder of the local copy (docs/training.md shows how to make one).",
        )
    return DataSpec(kind, path)


# ----------------------------------------------------------------------- records


@dataclass(frozen=True)
class Record:
    """What a row says, before its audio is decoded."""

    key: str
    """``source/part/index``: names the row in reports."""
    audio_language: str
    texts: Mapping[str, str]
    """Non-empty texts by language (``en``, ``mn``), stripped."""
    audio_bytes: bytes | None = field(default=None, repr=False)
    audio_path: Path | None = None
    start: float | None = None
    end: float | None = None


class RowError(Exception):
    """A row that cannot be used; the message is the reason counted in the report."""


@dataclass(frozen=True, eq=False)
class Source:
    """One source of utterances with the seed's train/test split of its rows.

    ``parts`` are the stored dataset's splits, each a sequence of row mappings (a
    ``datasets.Dataset`` or a list of dicts); ``splits`` maps ``train``/``test`` to the
    rows in the order the seed visits them.
    """

    name: str
    parts: Mapping[str, Any]
    splits: Mapping[str, list[RowId]]
    language: str | None
    """The audio language of every row, or ``None`` to read it from ``audio_language``."""
    text_columns: Mapping[str, str]
    """Language → column holding that language's text."""
    base_dir: Path
    """Relative audio paths are relative to this folder."""
    line_numbers: Sequence[int] | None = None
    """For a manifest: the file's line number of each row (blank lines are skipped), so
    reports name rows as the file numbers them (``manifest:mine/line/4``)."""
    split_problem: SubplugError | None = None
    """Why the seed's split cannot be made (too few rows to hold any out). Such a source
    lists every row for training so they are still checked and reported; the problem is
    raised after the report (:func:`split_problems`)."""

    def key(self, row: RowId) -> str:
        """How reports name ``row``: ``source/part/index``, or ``source/line/N`` for a
        manifest (N counted from 1, as editors number lines)."""
        part, index = row
        if self.line_numbers is not None:
            return f"{self.name}/line/{self.line_numbers[index]}"
        return f"{self.name}/{part}/{index}"

    def record(self, row: RowId) -> Record:
        """Read row ``row``; raises :class:`RowError` when it is unusable."""
        part, index = row
        data = self.parts[part][index]
        key = self.key(row)
        if data is None or not isinstance(data, Mapping):
            raise RowError(str(data) if isinstance(data, str) else "not a JSON object")
        language = self.language or data.get("audio_language")
        if language is None or language == "":
            raise RowError("no audio_language (en or mn)")
        if language not in LANGUAGES:
            raise RowError(f"audio_language is {language!r}, not en or mn")
        texts = {}
        for lang, column in self.text_columns.items():
            value = data.get(column)
            if value is None:
                continue
            if not isinstance(value, str):
                raise RowError(f"{column} is not text")
            if value.strip():
                texts[lang] = value.strip()
        audio_bytes, audio_path = self._audio(data.get("audio"))
        start, end = _seconds(data.get("start")), _seconds(data.get("end"))
        if start is not None and end is not None and end <= start:
            raise RowError("end is not after start")
        return Record(key, str(language), texts, audio_bytes, audio_path, start, end)

    def _audio(self, value: Any) -> tuple[bytes | None, Path | None]:
        if isinstance(value, Mapping):
            data, path = value.get("bytes"), value.get("path")
            if data:
                return bytes(data), None
            value = path
        if isinstance(value, str) and value:
            path = Path(value).expanduser()
            return None, path if path.is_absolute() else self.base_dir / path
        raise RowError("no audio")


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise RowError(f"start/end must be seconds, not {value!r}")
    return float(value)


def load_audio(record: Record) -> np.ndarray:
    """The record's audio as 16 kHz mono float32 (raises :class:`AudioError`)."""
    if record.audio_bytes is not None:
        return decode_bytes(record.audio_bytes, record.start, record.end)
    assert record.audio_path is not None
    if not record.audio_path.is_file():
        raise AudioError(f"audio file missing: {record.audio_path}")
    return decode_file(record.audio_path, record.start, record.end)


# ------------------------------------------------------------------------ splits


def seed_split(count: int, holdout: float, seed: int) -> tuple[list[int], list[int]]:
    """Train and test row positions as ``datasets``' ``train_test_split(test_size=holdout,
    seed=seed)`` makes them: a PCG64 permutation, the first ``ceil(holdout × n)`` rows
    held out. ``holdout == 0`` keeps every row for training, in order."""
    if holdout <= 0 or count == 0:
        return list(range(count)), []
    order = np.random.default_rng(seed).permutation(count)
    n_test = math.ceil(holdout * count)
    if n_test >= count:
        raise SubplugError(
            "data-too-small",
            f"Holding out {holdout:.0%} of {count} row(s) leaves nothing to train on.",
            "Add rows, or pass --set data.holdout=0 (and give evaluation data separately).",
        )
    return [int(i) for i in order[n_test:]], [int(i) for i in order[:n_test]]


def seed_shuffle(count: int, seed: int) -> list[int]:
    """The order ``datasets``' ``Dataset.shuffle(seed=seed)`` gives ``count`` rows."""
    return [int(i) for i in np.random.default_rng(seed).permutation(count)]


# ---------------------------------------------------------------------- opening


def open_sources(spec: DataSpec, settings: DataSettings) -> list[Source]:
    """The source(s) one ``--data`` argument names (``ted`` gives two)."""
    if spec.kind == "manifest":
        return [read_manifest(spec.path, settings)]
    if spec.kind == "common-voice" and (spec.path / "test.tsv").is_file():
        return [_mozilla_common_voice(spec.path)]
    parts = _open_dataset(spec)
    if spec.kind == "mbspeech":
        stored = _one_part(parts, spec, ("train",))
        _need_columns(stored[1], ("audio", "sentence_orig"), spec)
        return [_held_out_source("mbspeech", stored, settings, spec, "mn", {"mn": "sentence_orig"})]
    if spec.kind in ("ted", "ted-en", "ted-mn"):
        wanted = ("en", "mn") if spec.kind == "ted" else (spec.kind[-2:],)
        sources = []
        for lang in wanted:
            if lang not in parts:
                raise SubplugError(
                    "data-columns",
                    f"{spec.path} has no split named {lang!r} (it has: {', '.join(parts)}).",
                    "Give the local copy of bilguun/ted_talks_en_mn_split (splits en and mn).",
                )
            _need_columns(parts[lang], ("audio", "text_en", "text_mn", "audio_language"), spec)
            sources.append(
                _held_out_source(
                    f"ted-{lang}",
                    (lang, parts[lang]),
                    settings,
                    spec,
                    None,
                    {"en": "text_en", "mn": "text_mn"},
                )
            )
        return sources
    if spec.kind == "common-voice":
        return [_hf_common_voice(parts, spec)]
    raise AssertionError(spec.kind)


def _open_dataset(spec: DataSpec) -> dict[str, Any]:
    """The stored splits of a local dataset copy, audio left undecoded."""
    import datasets
    from subplug.cache import subplug_home

    path = spec.path
    folder_parts = _audio_folder(path)
    if folder_parts is not None:
        return folder_parts
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            loaded = datasets.load_from_disk(str(path))
        else:
            # Parquet files or an audio folder are converted to Arrow once; the
            # conversion is kept under subplug's home, not in the Hugging Face cache.
            cache_dir = subplug_home() / "training" / "datasets-cache"
            loaded = datasets.load_dataset(str(path), cache_dir=str(cache_dir))
    except Exception as error:  # datasets raises many types for unreadable folders
        cause = error.__cause__ or error
        raise SubplugError(
            "data-unreadable",
            f"Cannot read {spec.label} as a dataset.",
            "Give a folder made by datasets' save_to_disk, a folder of parquet files, or "
            "an audio folder with metadata.csv (docs/training.md).",
            context=f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}",
        ) from None
    finally:
        if bars:
            datasets.enable_progress_bars()
    parts = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
    for name, part in parts.items():
        if "audio" in part.column_names:
            parts[name] = part.cast_column("audio", datasets.Audio(decode=False))
    return parts


def _audio_folder(path: Path) -> dict[str, Any] | None:
    """An audio folder (Hugging Face's layout): ``metadata.csv`` or ``metadata.jsonl``
    with a ``file_name`` column, at the top (one ``train`` split) or in one subfolder
    per split. Read here: ``datasets``' own audio-folder loader needs torchcodec."""
    found: dict[str, Path] = {}
    for name in ("metadata.csv", "metadata.jsonl"):
        if (path / name).is_file():
            found["train"] = path / name
        for child in sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else ():
            if (child / name).is_file():
                found.setdefault(child.name, child / name)
    if not found:
        return None
    parts: dict[str, Any] = {}
    for split, metadata in found.items():
        rows: list[Any] = []
        if metadata.suffix == ".csv":
            with metadata.open(encoding="utf-8", newline="") as handle:
                rows = [dict(row) for row in csv.DictReader(handle)]
        else:
            for line in metadata.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as error:
                        rows.append(f"{metadata.name}: a line is not valid JSON ({error.msg})")
        for row in rows:
            if isinstance(row, dict) and "file_name" in row:
                row["audio"] = str(metadata.parent.relative_to(path) / str(row["file_name"]))
        parts[split] = _Rows(rows)
    return parts


class _Rows(list):  # type: ignore[type-arg]
    """Rows read from a table file, with the ``column_names`` a ``datasets.Dataset`` has."""

    @property
    def column_names(self) -> list[str]:
        names: dict[str, None] = {}
        for row in self:
            if isinstance(row, dict):
                names.update(dict.fromkeys(row))
        return list(names)


def _one_part(parts: Mapping[str, Any], spec: DataSpec, names: Sequence[str]) -> tuple[str, Any]:
    for name in names:
        if name in parts:
            return name, parts[name]
    if len(parts) == 1:
        return next(iter(parts.items()))
    raise SubplugError(
        "data-columns",
        f"{spec.path} has several splits ({', '.join(parts)}) and none named {' or '.join(names)}.",
        "Give the folder of the dataset as published.",
    )


def _need_columns(part: Any, columns: Sequence[str], spec: DataSpec) -> None:
    have = set(part.column_names)
    missing = [c for c in columns if c not in have]
    if missing:
        raise SubplugError(
            "data-columns",
            f"{spec.label} has no column(s) {', '.join(missing)} "
            f"(columns: {', '.join(sorted(have))}).",
            f"Is this the {spec.kind} dataset? docs/training.md lists the expected columns.",
        )


def _held_out_source(
    name: str,
    stored: tuple[str, Any],
    settings: DataSettings,
    spec: DataSpec,
    language: str | None,
    text_columns: Mapping[str, str],
) -> Source:
    part_name, part = stored
    train, test, problem = _split_rows(name, len(part), settings)
    return Source(
        name=name,
        parts={part_name: part},
        splits={
            "train": [(part_name, i) for i in train],
            "test": [(part_name, i) for i in test],
        },
        language=language,
        text_columns=text_columns,
        base_dir=spec.path,
        split_problem=problem,
    )


def _split_rows(
    name: str, count: int, settings: DataSettings
) -> tuple[list[int], list[int], SubplugError | None]:
    """:func:`seed_split` of a source's rows; when no row can be held out without
    leaving nothing to train on, every row is listed for training and the problem is
    returned, to be raised once the rows have been checked and reported."""
    try:
        train, test = seed_split(count, settings.holdout, settings.seed)
    except SubplugError as error:
        problem = SubplugError(
            error.reference, f"{name}: {error.message[0].lower()}{error.message[1:]}", error.hint
        )
        return list(range(count)), [], problem
    return train, test, None


def split_problems(results: Iterable[ScanResult]) -> SubplugError | None:
    """The first source whose split could not be made (see ``Source.split_problem``)."""
    for result in results:
        if result.source.split_problem is not None:
            return result.source.split_problem
    return None


def _hf_common_voice(parts: Mapping[str, Any], spec: DataSpec) -> Source:
    for name in ("train", "test"):
        if name not in parts:
            raise SubplugError(
                "data-columns",
                f"{spec.path} has no {name!r} split (it has: {', '.join(parts)}).",
                "Give a Common Voice copy with train, validation and test splits.",
            )
    used = {name: parts[name] for name in ("train", "validation", "test") if name in parts}
    for part in used.values():
        _need_columns(part, ("audio", "sentence"), spec)
    train: list[RowId] = [
        (n, i) for n in ("train", "validation") if n in used for i in range(len(used[n]))
    ]
    return Source(
        name="common-voice",
        parts=used,
        splits={"train": train, "test": [("test", i) for i in range(len(used["test"]))]},
        language="mn",
        text_columns={"mn": "sentence"},
        base_dir=spec.path,
    )


def _mozilla_common_voice(folder: Path) -> Source:
    """Mozilla's release layout: ``train.tsv``, ``dev.tsv``, ``test.tsv`` and ``clips/``."""
    parts: dict[str, list[Any]] = {}
    for name, file in (("train", "train.tsv"), ("validation", "dev.tsv"), ("test", "test.tsv")):
        path = folder / file
        if not path.is_file():
            continue
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
            if reader.fieldnames is None or not {"path", "sentence"} <= set(reader.fieldnames):
                raise SubplugError(
                    "data-columns",
                    f"{path} has no path and sentence columns.",
                    "Give the folder of a Common Voice release (with clips/).",
                )
            parts[name] = [
                {"audio": str(Path("clips") / row["path"]), "sentence": row["sentence"]}
                for row in reader
            ]
    train: list[RowId] = [
        (n, i) for n in ("train", "validation") if n in parts for i in range(len(parts[n]))
    ]
    return Source(
        name="common-voice",
        parts=parts,
        splits={"train": train, "test": [("test", i) for i in range(len(parts.get("test", [])))]},
        language="mn",
        text_columns={"mn": "sentence"},
        base_dir=folder,
    )


# ---------------------------------------------------------------------- manifest


def read_manifest(path: Path, settings: DataSettings) -> Source:
    """Read a JSON-lines manifest (docs/training.md, "Manifest format").

    Each line is an object: ``audio`` (a path, relative to the manifest's folder),
    ``audio_language`` (``en`` or ``mn``), ``text_en`` and/or ``text_mn``, and optionally
    ``start``/``end`` (seconds within the file) and ``split`` (``train`` or ``test``).
    A line that is not a JSON object becomes a bad row (reported, not fatal). When no line
    has a ``split``, the recipe's holdout applies as for the public sources.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise SubplugError(
            "data-unreadable",
            f"Cannot read the manifest {path}: {error}.",
            "A manifest is a UTF-8 text file with one JSON object per line.",
        ) from None
    rows: list[Any] = []
    numbers: list[int] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            rows.append(f"line {number} is not valid JSON ({error.msg})")
        numbers.append(number)
    name = f"manifest:{path.stem}"
    named = [r.get("split") for r in rows if isinstance(r, Mapping) and r.get("split")]
    if named:
        splits: dict[str, list[RowId]] = {"train": [], "test": []}
        for index, row in enumerate(rows):
            wanted = str(row.get("split", "train")).lower() if isinstance(row, Mapping) else ""
            splits["test" if wanted in _TEST_NAMES else "train"].append(("lines", index))
        problem = None
    else:
        train, test, problem = _split_rows(name, len(rows), settings)
        splits = {"train": [("lines", i) for i in train], "test": [("lines", i) for i in test]}
    return Source(
        name=name,
        parts={"lines": rows},
        splits=splits,
        language=None,
        text_columns={"en": "text_en", "mn": "text_mn"},
        base_dir=path.parent.absolute(),
        line_numbers=numbers,
        split_problem=problem,
    )


# ------------------------------------------------------------------------- scan


@dataclass(frozen=True)
class Kept:
    """A usable row: what it says and how long its audio is (the audio itself is read
    again when a batch needs it, so a large dataset is never held in memory)."""

    row: RowId
    key: str
    audio_language: str
    texts: Mapping[str, str]
    seconds: float


@dataclass(frozen=True, eq=False)
class ScanResult:
    """What :func:`scan` found in one source."""

    source: Source
    kept: dict[str, list[Kept]]
    """Split → usable rows, in the seed's order."""
    dropped: Counter[str]
    """Reason → rows dropped."""
    examples: dict[str, list[str]]
    """Reason → the first few row keys, for the report."""

    @property
    def total(self) -> int:
        return sum(len(rows) for rows in self.source.splits.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source.name,
            "rows": self.total,
            "kept": {split: len(rows) for split, rows in self.kept.items()},
            "hours": {
                split: round(sum(k.seconds for k in rows) / 3600, 3)
                for split, rows in self.kept.items()
            },
            "dropped": dict(self.dropped),
            "examples": self.examples,
        }


def scan(
    source: Source,
    settings: DataSettings,
    *,
    on_row: Callable[[], None] | None = None,
    workers: int = 4,
) -> ScanResult:
    """Check every row of ``source``: usable text, decodable audio, length within the
    recipe's bounds. Unusable rows are counted by reason, never raised."""
    from subplug.prompts import eligible_instructions

    kept: dict[str, list[Kept]] = {split: [] for split in SPLITS}
    dropped: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}

    def drop(reason: str, key: str) -> None:
        dropped[reason] += 1
        examples.setdefault(reason, [])
        if len(examples[reason]) < 5:
            examples[reason].append(key)

    def check(row: RowId) -> Kept | tuple[str, str]:
        key = source.key(row)
        try:
            record = source.record(row)
        except RowError as error:
            return str(error), key
        if not eligible_instructions(record.audio_language, record.texts):
            lang = record.audio_language
            return f"no {'English' if lang == 'en' else 'Mongolian'} text for its audio", key
        try:
            seconds = len(load_audio(record)) / SAMPLE_RATE
        except AudioError as error:
            return f"audio unreadable: {error}", key
        if seconds < settings.min_seconds:
            return f"shorter than {settings.min_seconds:g} s", key
        if seconds > settings.max_seconds:
            return f"longer than {settings.max_seconds:g} s", key
        return Kept(row, record.key, record.audio_language, dict(record.texts), seconds)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for split in SPLITS:
            for result in pool.map(check, source.splits.get(split, [])):
                if isinstance(result, Kept):
                    kept[split].append(result)
                else:
                    drop(*result)
                if on_row is not None:
                    on_row()
    return ScanResult(source, kept, dropped, examples)


def ordered(results: Iterable[ScanResult]) -> list[ScanResult]:
    """Scan results in the seed's source order (manifests last, in the order given)."""

    def rank(result: ScanResult) -> int:
        name = result.source.name
        return SEED_ORDER.index("manifest" if name.startswith("manifest:") else name)

    return sorted(results, key=rank)


def iter_kept(results: Sequence[ScanResult], split: str) -> Iterator[tuple[Source, Kept]]:
    """Every usable row of ``split`` across ``results``, in order."""
    for result in results:
        for kept in result.kept.get(split, []):
            yield result.source, kept
