"""``Engine.generate(media, options) -> Tracks``: the whole pipeline for one file.

decode (PyAV) → speech regions (silero-vad) → chunk plan (≤ 30 s, cut at pauses) →
backend (batched, journaled) → parse → cue shaping → writers. Progress and lifecycle
events go to ``subplug_job_event`` implementations (or a callable given to the engine).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from subplug import __version__, files, plugins
from subplug.errors import Cancelled, SubplugError
from subplug.journal import (
    Journal,
    JournalEntry,
    journal_key,
    media_fingerprint,
)
from subplug.languages import LANGUAGE_NAMES, LANGUAGES, MAX_AUDIO_SECONDS, SOURCES
from subplug.types import (
    SAMPLE_RATE,
    AudioChunk,
    Backend,
    ChunkSpan,
    GenerateOptions,
    JobEvent,
    SubtitleFormat,
    Track,
    Tracks,
    Transcript,
)

EventSink = Callable[[JobEvent], None]
#: Seconds between two progress events while a batch decodes.
PARTIAL_PROGRESS_EVERY = 0.25


@dataclass(frozen=True, eq=False)
class PreparedMedia:
    """A file decoded and planned (:meth:`Engine.prepare_media`): what the model stage
    and cue shaping need."""

    media: Path
    stream: int
    """The audio stream used, counted among the file's audio streams."""
    samples: Any = field(repr=False)
    """16 kHz mono float32 sound of the whole file."""
    plan: tuple[ChunkSpan, ...]
    duration: float
    warnings: tuple[str, ...] = ()
    """Messages of the warnings already emitted (``no-speech``)."""

    def chunk(self, span: ChunkSpan) -> AudioChunk:
        """The samples of one planned chunk."""
        return _chunk(self.samples, span)


@dataclass(frozen=True)
class PlannedOutput:
    """One file ``write`` will produce."""

    path: Path
    format: SubtitleFormat
    langs: tuple[str, ...]


def validate(options: GenerateOptions) -> GenerateOptions:
    """Check options before any media or model is touched; return them normalised."""
    if options.source not in SOURCES:
        raise SubplugError(
            "bad-source",
            f"Unknown source language {options.source!r}.",
            f"Use one of: {', '.join(SOURCES)}.",
        )
    targets = tuple(dict.fromkeys(t.strip().lower() for t in options.targets if t.strip()))
    unknown = [t for t in targets if t not in LANGUAGES]
    if unknown or not targets:
        raise SubplugError(
            "bad-targets",
            f"Unknown target language(s): {', '.join(unknown) or '(none given)'}.",
            "Targets are a comma-separated list of: en, mn (for example --targets en,mn).",
        )
    fmts = tuple(dict.fromkeys(f.strip().lower() for f in options.formats if f.strip()))
    known = plugins.formats()
    bad = [f for f in fmts if f not in known]
    if bad or not fmts:
        raise SubplugError(
            "bad-format",
            f"Unknown subtitle format(s): {', '.join(bad) or '(none given)'}.",
            f"Formats are a comma-separated list of: {', '.join(sorted(known))}.",
        )
    if not 1.0 <= options.max_chunk <= MAX_AUDIO_SECONDS:
        raise SubplugError(
            "bad-chunk-length",
            f"Chunk length {options.max_chunk:g} s is outside 1–30 s.",
            "Gemma 3n hears at most 30 s of audio at a time: use --max-chunk 1 to 30.",
        )
    narrow = {lang: n for lang, n in options.cues.max_chars.items() if not 10 <= n <= 100}
    if narrow:
        lang, n = next(iter(narrow.items()))
        raise SubplugError(
            "bad-max-chars",
            f"--max-chars must be between 10 and 100, not {n}.",
            "42 is the usual limit for English subtitles (Netflix), 39 for Cyrillic.",
        )
    if options.audio_stream is not None and options.audio_stream < 0:
        raise SubplugError(
            "bad-audio-stream",
            f"--audio-stream must be 0 or more, not {options.audio_stream}.",
            "Audio streams are counted from 0; leave it out to use the default stream.",
        )
    from subplug import choice, runtime

    runtime.validate_options(options.backend_options)
    backend = choice.choose_backend(options.backend, options.backend_options.model)
    plugins.backend_factory(backend)  # unknown-backend, before any media
    return replace(options, targets=targets, formats=fmts, backend=backend)


def check_model(options: GenerateOptions) -> dict[str, Any]:
    """The backend's fail-fast check of the model (present and intact; nothing loaded)
    and of its translator, and whether they can give the targets for the source
    (:func:`subplug.loading.check`), before any media is decoded: their facts
    (``contents`` keys the journal)."""
    from subplug import loading

    return loading.check(
        options.backend, options.backend_options, source=options.source, targets=options.targets
    )


def write_records() -> Path:
    """Where the engine records the subtitle files it is putting in place, so a rerun
    after a crash completes the set (:func:`subplug.files.write_files`)."""
    from subplug.cache import writes_dir

    return writes_dir()


def planned_outputs(media: Path, options: GenerateOptions) -> list[PlannedOutput]:
    """The files ``write`` will produce for ``media``, in a stable order."""
    from subplug import formats as formats_module

    known = plugins.formats()
    result = []
    for name in options.formats:
        fmt = known[name]
        groups = [options.targets] if fmt.bilingual else [(lang,) for lang in options.targets]
        for langs in groups:
            path = formats_module.output_path(media, options.out_dir, fmt, langs)
            result.append(PlannedOutput(path, fmt, tuple(langs)))
    return result


class Engine:
    """Turns media files into subtitle tracks. One engine keeps one loaded backend.

    ``events`` receives every :class:`JobEvent`; by default they go to the
    ``subplug_job_event`` hook. ``backend`` injects an already-loaded backend.
    """

    def __init__(self, *, events: EventSink | None = None, backend: Backend | None = None) -> None:
        self._emit_to = events or plugins.job_event
        self._backend = backend
        self._backend_key: tuple[Any, ...] | None = None if backend is None else ("given",)
        self._started = time.monotonic()
        self._job: dict[str, Any] = {"files": 1, "index": 0}
        self._journals: dict[Path, Journal] = {}
        self._model_facts: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._last_partial = 0.0
        self._resumed: dict[Path, int] = {}
        """Chunks each file took from the journal of an earlier run."""

    # ----------------------------------------------------------------- events

    def emit(self, kind: str, media: Path | None = None, **data: Any) -> None:
        data.setdefault("time", round(time.monotonic() - self._started, 3))
        self._emit_to(JobEvent(kind, media, data))

    # ---------------------------------------------------------------- backend

    def backend(self, options: GenerateOptions) -> Backend:
        """The loaded backend for ``options`` (loaded on first use, then kept)."""
        key = (options.backend, options.backend_options)
        if self._backend is not None and self._backend_key in (key, ("given",)):
            return self._backend
        self.close()
        self.emit("stage", None, stage="model-load", backend=options.backend)
        from subplug import loading

        self._backend = loading.load(options.backend, options.backend_options)
        self._backend_key = key
        return self._backend

    def close(self) -> None:
        """Release the backend."""
        if self._backend is not None and self._backend_key != ("given",):
            self._backend.close()
            self._backend = None
            self._backend_key = None

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- running

    def run(self, media_files: Sequence[Path], options: GenerateOptions) -> list[Tracks | None]:
        """Generate and write subtitles for each file; a failing file does not stop the
        others (its error is reported as a ``file-error`` event). Returns one entry per
        file: the written tracks, or ``None`` for a failure."""
        options = self.prepare(options)
        self._started = time.monotonic()
        self.emit("job-start", None, files=[str(m) for m in media_files], version=__version__)
        results: list[Tracks | None] = []
        failed = 0
        audio = 0.0
        for index, media in enumerate(media_files):
            self._job = {"files": len(media_files), "index": index}
            self.emit("file-start", media, index=index, total_files=len(media_files))
            try:
                self.check_outputs(Path(media), options)
                tracks = self.write(self._generate(Path(media), options), options)
            except SubplugError as error:
                if isinstance(error, Cancelled):
                    raise
                failed += 1
                results.append(None)
                self.emit("file-error", media, error=error.to_dict())
                continue
            results.append(tracks)
            audio += tracks.duration or 0.0
        exit_code = 0 if not failed else 1
        self.emit(
            "job-done",
            None,
            ok=len(media_files) - failed,
            failed=failed,
            exit_code=exit_code,
            audio_seconds=round(audio, 3),
            seconds=round(time.monotonic() - self._started, 3),
        )
        return results

    def prepare(self, options: GenerateOptions) -> GenerateOptions:
        """Validate ``options`` and check the model (:func:`check_model`: present and
        intact, nothing loaded) before any media is touched; the options normalised."""
        options = validate(options)
        key = _model_key(options)
        if key not in self._model_facts:
            self._model_facts[key] = check_model(options)
        caps = self._model_facts[key].get("capabilities")
        if caps is not None and caps.max_seconds < options.max_chunk:
            options = replace(options, max_chunk=caps.max_seconds)  # the model hears less
        return options

    def generate(self, media: Path, options: GenerateOptions) -> Tracks:
        """Subtitle tracks for ``media``; writes nothing but the journal, and looks at
        no output file (a host that writes the tracks its own way — a Kdenlive project
        — calls this; :meth:`run` checks the outputs and writes them)."""
        return self._generate(Path(media), self.prepare(options))

    def _generate(self, media: Path, options: GenerateOptions) -> Tracks:
        """:meth:`generate` with options already prepared."""
        prepared = self.prepare_media(media, options)
        journal = self.journal_for(media, prepared.stream, options)
        transcripts = self._transcribe(media, prepared.samples, prepared.plan, options, journal)
        return self.shape(prepared, transcripts, options)

    def prepare_media(self, media: Path, options: GenerateOptions) -> PreparedMedia:
        """The CPU stage of one file: probe, decode, find speech and plan the chunks
        (``stage``, ``decode-progress``, ``vad-progress`` events; a ``no-speech``
        warning). Nothing reaches the model; options must be prepared."""
        from subplug import media as media_module
        from subplug import segment

        self.emit("stage", media, stage="probe")
        info = media_module.probe(media)
        stream = media_module.select_stream(info, options.audio_stream)

        self.emit("stage", media, stage="decode")
        samples = media_module.load_pcm(
            media,
            stream.index,
            on_progress=lambda done, total: self.emit(
                "decode-progress", media, seconds=round(done, 2), total=total
            ),
        )
        duration = len(samples) / SAMPLE_RATE

        self.emit("stage", media, stage="vad")
        scores = segment.speech_probabilities(
            samples,
            on_progress=lambda done, total: self.emit(
                "vad-progress", media, seconds=round(done, 2), total=round(total, 2)
            ),
        )
        regions = segment.regions_from_scores(scores, threshold=options.vad_threshold)
        plan = segment.plan_chunks(
            regions, total=duration, max_chunk=options.max_chunk, scores=scores
        )
        warnings: list[str] = []
        if not plan:
            message = "No speech found; no subtitles were made."
            warnings.append(message)
            self.emit("warning", media, reference="no-speech", message=message)
        return PreparedMedia(media, stream.index, samples, tuple(plan), duration, tuple(warnings))

    def shape(
        self, prepared: PreparedMedia, transcripts: Sequence[Transcript], options: GenerateOptions
    ) -> Tracks:
        """Cue shaping of a file's transcripts (one per planned chunk, in plan order)
        into its :class:`Tracks`, with a ``warning`` event for each way they fall short."""
        from subplug import cues

        media, warnings = prepared.media, list(prepared.warnings)
        tracks = {
            lang: cues.shape_track(transcripts, lang, options.cues) for lang in options.targets
        }
        for reference, message, data in _track_warnings(
            tracks, len(prepared.plan), options.targets
        ):
            warnings.append(message)
            self.emit("warning", media, reference=reference, message=message, **data)
        detected = {t.source_lang for t in transcripts if t.source_lang}
        return Tracks(
            media=media,
            source_lang=detected.pop() if len(detected) == 1 else None,
            tracks=tracks,
            transcripts=tuple(transcripts),
            duration=prepared.duration,
            warnings=tuple(warnings),
        )

    def check_outputs(self, media: Path, options: GenerateOptions) -> list[PlannedOutput]:
        """Fail before any work when an output exists (without overwrite; the files of an
        interrupted write of this run's outputs may: :func:`write_records`) or the output
        folder cannot be written."""

        outputs = planned_outputs(media, options)
        paths = [o.path for o in outputs]
        ours = files.unfinished_writes(paths, write_records())
        files.check_writable(paths, overwrite=options.overwrite, ours=ours)
        return outputs

    def outputs_for(self, tracks: Tracks, options: GenerateOptions) -> list[PlannedOutput]:
        """The files :meth:`write` writes for ``tracks``: those with cues to hold."""
        has_cues = {lang for lang, track in tracks.tracks.items() if track.cues}
        return [
            o
            for o in planned_outputs(tracks.media, options)
            if (bool(has_cues & set(o.langs)) if o.format.bilingual else set(o.langs) <= has_cues)
        ]

    def write(
        self, tracks: Tracks, options: GenerateOptions, *, resumed: int | None = None
    ) -> Tracks:
        """Write the planned files for ``tracks`` atomically; returns them with
        ``outputs`` filled. ``resumed`` (chunks taken from an earlier run's journal, for
        ``file-done``) defaults to what :meth:`run` counted for the file.

        A file is written only when it has cues: a one-language file (``.srt``,
        ``.vtt``) is skipped for a language without any, a bilingual one when no
        language has any. When nothing at all is written, a ``no-output`` warning says
        so unless ``tracks`` already carries a warning explaining why (no speech, no
        text)."""

        if resumed is None:
            resumed = self._resumed.get(tracks.media, 0)
        outputs = self.outputs_for(tracks, options)
        if not outputs:
            if not tracks.warnings:
                message = "No subtitle file was written: there were no cues to write."
                self.emit("warning", tracks.media, reference="no-output", message=message)
                tracks = replace(tracks, warnings=(message,))
            self._finish_journal(tracks.media)
            self.emit(
                "file-done", tracks.media, outputs=[], cues={}, source_lang=None,
                duration=tracks.duration, resumed=resumed,
            )  # fmt: skip
            return tracks
        self.emit("stage", tracks.media, stage="write")
        rendered = [(o.path, o.format.write(tracks, o.langs, options.style)) for o in outputs]
        written = files.write_files(rendered, overwrite=options.overwrite, records=write_records())
        done = replace(tracks, outputs=tuple(written))
        self._finish_journal(tracks.media)
        self.emit(
            "file-done",
            tracks.media,
            outputs=[
                {"path": str(o.path), "format": o.format.name, "langs": list(o.langs)}
                for o in outputs
            ],
            cues={lang: len(track.cues) for lang, track in tracks.tracks.items()},
            source_lang=tracks.source_lang,
            duration=tracks.duration,
            resumed=resumed,
        )
        return done

    # -------------------------------------------------------------- internals

    def _finish_journal(self, media: Path) -> None:
        """A file is done: its journal has served its purpose."""
        journal = self._journals.pop(media, None)
        if journal is not None:
            journal.remove()

    def settings(self, stream: int | None, options: GenerateOptions) -> dict[str, Any]:
        """Every setting that changes the model's output (the journal key's part besides
        the media): options must be prepared (the model's contents fingerprint)."""
        backend_options = options.backend_options
        return {
            "stream": stream,
            "backend": options.backend,
            "model": backend_options.model,
            "model_contents": self._model_facts.get(_model_key(options), {}).get(
                "contents", f"{options.backend}:{backend_options.model}"
            ),
            "source": options.source,
            "targets": list(options.targets),
            "vad": options.vad_threshold,
            "max_chunk": options.max_chunk,
        }

    def journal_for(self, media: Path, stream: int, options: GenerateOptions) -> Journal | None:
        """The journal of ``media`` for these (prepared) options, or ``None`` without
        ``resume``; removed once the file is written (:meth:`write`)."""
        if not options.resume:
            return None
        from subplug.cache import journal_dir

        key = journal_key(media_fingerprint(media), self.settings(stream, options))
        journal = Journal.open(journal_dir(), key)
        self._journals[media] = journal
        return journal

    def _transcribe(
        self,
        media: Path,
        samples: Any,
        plan: Sequence[ChunkSpan],
        options: GenerateOptions,
        journal: Journal | None,
    ) -> list[Transcript]:
        """Transcripts for every planned chunk: from the journal where an earlier run
        finished them, else from the backend, in groups of the backend's batch size with
        the longest chunks (the longest answers) together, so a batch does not decode
        many steps for one long answer while the others wait."""
        from subplug.transcribe import batch_size_of, transcribe

        results = resumed_transcripts(journal, plan)
        resumed = len(results)
        self._resumed[media] = resumed
        todo = [span for span in plan if span.index not in results]
        self._progress(media, len(results), len(plan), resumed)
        if todo:
            backend = self.backend(options)
            self.emit("stage", media, stage="transcribe", chunks=len(todo), resumed=resumed)
            group = batch_size_of(backend, options.backend_options.batch_size)
            todo.sort(key=lambda span: (-span.duration, span.index))
            try:
                for batch in _batches(todo, group):
                    finished = len(results)
                    chunks = [_chunk(samples, span) for span in batch]

                    def moved(
                        fraction: float, finished: int = finished, size: int = len(batch)
                    ) -> None:
                        self._progress(media, finished, len(plan), resumed, partial=fraction * size)

                    new = transcribe(
                        backend, chunks, options.source, options.targets, progress=moved
                    )
                    record(journal, new)
                    for transcript in new:
                        results[transcript.chunk.index] = transcript
                    self._progress(media, len(results), len(plan), resumed)
            except KeyboardInterrupt:
                raise Cancelled(
                    f"Interrupted after {len(results)} of {len(plan)} chunks; "
                    "finished chunks are kept."
                ) from None
        return [results[span.index] for span in plan]

    def _progress(
        self, media: Path, done: int, total: int, resumed: int, *, partial: float = 0.0
    ) -> None:
        """A ``progress`` event: ``done`` whole chunks, ``percent`` of the whole job with
        the ``partial`` chunks of the batch in work (tokens generated so far)."""
        files, index = self._job["files"], self._job["index"]
        share = (done + partial) / total if total else 1.0
        fraction = (index + min(1.0, share)) / max(files, 1)
        self.emit(
            "progress",
            media,
            done=done,
            total=total,
            percent=round(100 * fraction, 1),
            fraction=round(min(1.0, share), 4),
            resumed=resumed,
        )


def _track_warnings(
    tracks: Mapping[str, Track], chunks: int, targets: Sequence[str]
) -> list[tuple[str, str, dict[str, Any]]]:
    """(reference, message, extra event data) for every way the shaped tracks fall
    short of what was asked: a language with no text at all (``no-text``), cues that
    could not fit in time (``cues-dropped``). Nothing is said when there was no speech
    (``no-speech`` covers it)."""
    found: list[tuple[str, str, dict[str, Any]]] = []
    if not chunks:
        return found
    empty = [lang for lang in targets if not tracks[lang].cues]
    if empty:
        chunk_words = (
            "the only speech chunk" if chunks == 1 else f"any of the {chunks} speech chunks"
        )
        if len(empty) == len(targets):
            message = (
                f"The model gave no usable text for {chunk_words}; no subtitle file was written."
            )
        else:
            names = " or ".join(LANGUAGE_NAMES.get(lang, lang) for lang in empty)
            message = (
                f"The model gave no {names} text for {chunk_words}; "
                f"no {names} subtitles were written."
            )
        found.append(("no-text", message, {"langs": empty}))
    for lang in targets:
        dropped = tracks[lang].dropped
        if dropped:
            words = sum(len(line.split()) for cue in dropped for line in cue.lines)
            name = LANGUAGE_NAMES.get(lang, lang)
            message = (
                f"{len(dropped)} {name} subtitle{'s' if len(dropped) != 1 else ''} "
                f"({words} word{'s' if words != 1 else ''}) did not fit in the time of "
                "their speech and were left out (the model gave more text than the "
                "audio could hold)."
            )
            found.append(("cues-dropped", message, {"lang": lang, "count": len(dropped)}))
    return found


def resumed_transcripts(
    journal: Journal | None, plan: Sequence[ChunkSpan]
) -> dict[int, Transcript]:
    """The transcripts an earlier run journaled for chunks of ``plan`` (by index; a
    line is reused only when its span matches the plan's exactly)."""
    done = journal.load() if journal is not None else {}
    results: dict[int, Transcript] = {}
    for span in plan:
        entry = done.get(span.index)
        if entry is not None and entry.matches(span):
            results[span.index] = Transcript(span, entry.source_lang, entry.texts, entry.raw)
    return results


def record(journal: Journal | None, transcripts: Iterable[Transcript]) -> None:
    """Journal finished chunks (nothing without a journal)."""
    if journal is not None:
        journal.append(
            (t.chunk, JournalEntry(t.chunk.start, t.chunk.end, t.source_lang, t.texts, t.raw))
            for t in transcripts
        )


def _model_key(options: GenerateOptions) -> tuple[Any, ...]:
    """A hashable key for the backend and its options (``extra`` is a mapping)."""
    return (options.backend, repr(options.backend_options))


def _chunk(samples: Any, span: ChunkSpan) -> AudioChunk:
    start = int(round(span.start * SAMPLE_RATE))
    end = int(round(span.end * SAMPLE_RATE))
    return AudioChunk(span, samples[start:end])


def _batches(items: Sequence[ChunkSpan], size: int) -> Iterator[Sequence[ChunkSpan]]:
    for start in range(0, len(items), max(size, 1)):
        yield items[start : start + size]


def generate_files(
    media: Iterable[Path], options: GenerateOptions, *, events: EventSink | None = None
) -> list[Tracks | None]:
    """Convenience: run an engine over files and close it."""
    with Engine(events=events) as engine:
        return engine.run(list(media), options)
