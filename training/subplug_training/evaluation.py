"""``subplug eval``: score models on held-out data, per instruction, and compare them.

Every model runs with the backend that runs it in ``subplug generate`` (``--backend
auto`` picks it; :mod:`subplug_training.eval_runs` says how each is asked): Gemma 3n
gets each sample's own instruction (the exact prompt, greedy decoding, the repetition
guard) and its answer is parsed with :func:`subplug.prompts.parse_output`; the other
families (Whisper, CTC, Qwen3-ASR, SeamlessM4T, remote code) answer what the
instruction asks for through the chunk→texts exchange, with ``--translator`` for the
languages they cannot give. Then, for every output language of the instruction:

* the audio's own language is a **transcription**: WER and CER (jiwer) after
  :func:`normalise` on both sides;
* the other language is a **translation**: BLEU and chrF++ (sacrebleu, corpus level, on
  the texts with whitespace collapsed; sacrebleu tokenises itself).

Scores are given per instruction and over all instructions, for each model, in a JSON
report (with every sample's raw answers and what each run cost) and in Markdown: first
one comparison table (a row per model: WER/CER per language, BLEU/chrF++ per direction,
real-time factor, peak memory, samples not served), then the table per instruction.

A model trained by ``subplug train`` carries how it was trained (``subplug-training.json``:
its data sources and split settings). Before scoring, the rows it was trained on are
found among the samples (:func:`training_overlap`): held-out scores on them would
measure memory, not generalisation, so ``--split test`` refuses them unless asked
(``allow_overlap``), and other splits say how many there are.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from subplug.errors import SubplugError
from subplug.prompts import INSTRUCTIONS, LANGUAGE_NAMES, normalise_whitespace
from subplug.types import Task

from subplug_training.data import DataSpec, RowId, Source, load_audio, seed_shuffle
from subplug_training.eval_runs import ModelRun, RunOptions, run_model
from subplug_training.instructions import Sample, expectation
from subplug_training.recipe import DataSettings, recipe_from_dict
from subplug_training.run_folder import PROVENANCE_FILE, read_json

REPORT_VERSION = 2
JSON_NAME = "eval-report.json"
MARKDOWN_NAME = "eval-report.md"

#: What :func:`normalise` does, recorded in every report.
NORMALISATION = (
    "NFKC; casefold; apostrophes removed; other punctuation and symbols become spaces; "
    "whitespace collapsed; digits kept"
)

_APOSTROPHES = str.maketrans({"'": "", "’": "", "ʼ": "", "`": ""})


def normalise(text: str) -> str:
    """The text normalisation applied before WER and CER, for English and Mongolian.

    Unicode NFKC; case folded (``Ө`` → ``ө``; Cyrillic ``ө``/``ү`` stay distinct from
    ``о``/``у``: they are different letters); apostrophes removed (``don't`` →
    ``dont``); every other punctuation mark or symbol (Unicode categories P and S,
    hyphens and dashes included) becomes a space; whitespace collapsed. Digits are kept
    as written (no number spelling).
    """
    text = unicodedata.normalize("NFKC", text).casefold().translate(_APOSTROPHES)
    text = "".join(" " if unicodedata.category(ch)[0] in "PS" else ch for ch in text)
    return " ".join(text.split())


# ------------------------------------------------------------------ instructions


def metric_key(audio_language: str, output_language: str) -> str:
    """``asr-en``/``asr-mn`` for transcriptions, ``en-mn``/``mn-en`` for translations."""
    if audio_language == output_language:
        return f"asr-{audio_language}"
    return f"{audio_language}-{output_language}"


def hypotheses(raw: str, number: int, audio_language: str) -> dict[str, str]:
    """The model's text per output language, parsed as the engine parses it. A
    single-output answer counts whatever language it came out in (a transcription in
    the wrong language then scores as the error it is)."""
    from subplug.prompts import parse_output

    want = expectation(number, audio_language)
    parsed = parse_output(raw, want.task, want.source)
    if want.task is Task.BOTH:
        return {lang: parsed.get(lang, "") for lang in want.outputs}
    return {want.outputs[0]: " ".join(parsed.values())}


# ------------------------------------------------------------------------ scoring


@dataclass(frozen=True)
class Pair:
    """One scored output: which instruction and metric it belongs to, reference, output."""

    instruction: int
    key: str
    reference: str
    hypothesis: str


def score(pairs: Sequence[Pair]) -> dict[str, Any]:
    """Corpus-level scores of ``pairs`` that share a metric key."""
    import jiwer
    import sacrebleu

    if not pairs:
        return {"samples": 0}
    if pairs[0].key.startswith("asr-"):
        kept = [(normalise(p.reference), normalise(p.hypothesis)) for p in pairs]
        kept = [(ref, hyp) for ref, hyp in kept if ref]
        if not kept:
            return {"samples": 0, "skipped": len(pairs)}
        refs, hyps = [r for r, _ in kept], [h for _, h in kept]
        return {
            "samples": len(kept),
            "wer": round(100 * jiwer.wer(refs, hyps), 2),
            "cer": round(100 * jiwer.cer(refs, hyps), 2),
        }
    refs = [normalise_whitespace(p.reference) for p in pairs]
    hyps = [normalise_whitespace(p.hypothesis) for p in pairs]
    return {
        "samples": len(pairs),
        "bleu": round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2),
        "chrf++": round(sacrebleu.CHRF(word_order=2).corpus_score(hyps, [refs]).score, 2),
    }


def score_model(pairs: Sequence[Pair]) -> dict[str, Any]:
    """Scores per instruction and metric key, and over all instructions."""
    per_instruction: dict[str, dict[str, Any]] = {}
    for number in sorted({p.instruction for p in pairs}):
        mine = [p for p in pairs if p.instruction == number]
        per_instruction[str(number)] = {
            key: score([p for p in mine if p.key == key]) for key in _keys(mine)
        }
    overall = {key: score([p for p in pairs if p.key == key]) for key in _keys(pairs)}
    return {"per_instruction": per_instruction, "overall": overall}


def _keys(pairs: Sequence[Pair]) -> list[str]:
    return _keys_of({p.key for p in pairs})


def _keys_of(keys: set[str]) -> list[str]:
    order = ["asr-en", "asr-mn", "en-mn", "mn-en"]
    return sorted(keys, key=order.index)


# ------------------------------------------------------------------------ reports


def markdown_report(report: Mapping[str, Any]) -> str:
    """The report in Markdown: the comparison table, then the table per instruction."""
    return comparison_table(report) + "\n" + markdown_table(report)


def comparison_table(report: Mapping[str, Any]) -> str:
    """One row per model over all its samples: WER and CER per language, BLEU and
    chrF++ per direction (only the metrics some model has), the real-time factor (model
    seconds per second of audio; loading apart), peak memory (resident; GPU when it ran
    on one) and how many samples it could not serve."""
    models = list(report["models"])
    keys = _keys_of({key for model in models for key in report["results"][model]["overall"]})
    columns = [
        (key, metric)
        for key in keys
        for metric in (("wer", "cer") if key.startswith("asr-") else ("bleu", "chrf++"))
    ]
    gpu = any(report["runs"][model]["peak_gpu_gib"] is not None for model in models)
    header = ["model", "backend", *(f"{_metric_name(m)} {_describe(k)}" for k, m in columns)]
    header += ["RTF", "peak memory (GiB)", *(["peak GPU (GiB)"] if gpu else []), "not served"]
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(["---", "---"] + ["---:"] * (len(header) - 2)) + " |",
    ]
    for model in models:
        overall = report["results"][model]["overall"]
        run = report["runs"][model]
        translator = run.get("translator")
        cells = [model, run["backend"] + (f" + {translator}" if translator else "")]
        cells += [_cell(overall.get(key, {}).get(metric)) for key, metric in columns]
        cells += [_cell(run["rtf"], 3), _cell(run["peak_memory_gib"])]
        cells += [_cell(run["peak_gpu_gib"])] if gpu else []
        cells.append(str(run["not_served"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _metric_name(metric: str) -> str:
    return "chrF++" if metric == "chrf++" else metric.upper()


def markdown_table(report: Mapping[str, Any]) -> str:
    """The report as a Markdown table: one row per instruction and metric, one column
    per model (lower is better for WER/CER, higher for BLEU/chrF++)."""
    models = list(report["models"])
    header = ["instruction", "metric", "samples", *models]
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(["---", "---", "---:"] + ["---:"] * len(models)) + " |",
    ]
    results = [report["results"][model] for model in models]
    numbers = sorted({n for r in results for n in r["per_instruction"]}, key=int)
    sections = [(n, [r["per_instruction"].get(n, {}) for r in results]) for n in numbers]
    sections.append(("all", [r["overall"] for r in results]))
    for number, tables in sections:
        label = "all" if number == "all" else f"{number}. {INSTRUCTIONS[int(number) - 1]}"
        for key in _keys_of({k for table in tables for k in table}):
            # Samples scored: one count, or one per model where they differ (a model
            # that could not serve some).
            counts = [str(t.get(key, {}).get("samples", 0)) for t in tables]
            scored = counts[0] if len(set(counts)) == 1 else "/".join(counts)
            for metric in ("wer", "cer", "bleu", "chrf++"):
                if not any(metric in t.get(key, {}) for t in tables):
                    continue
                cells = [_cell(t.get(key, {}).get(metric)) for t in tables]
                name = f"{_metric_name(metric)} {_describe(key)}"
                lines.append(f"| {label} | {name} | {scored} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _describe(key: str) -> str:
    if key.startswith("asr-"):
        return LANGUAGE_NAMES[key[4:]]
    source, target = key.split("-")
    return f"{source}→{target}"


# -------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class EvalOptions:
    """What ``subplug eval`` was asked to do."""

    models: tuple[str, ...]
    data: tuple[DataSpec, ...]
    settings: DataSettings
    split: str = "test"
    """``test`` (held-out rows), ``train`` or ``all``."""
    instructions: str | tuple[int, ...] = "assigned"
    """``assigned``: the seed's draw per row; or instruction numbers (each that fits)."""
    limit: int | None = None
    out_dir: Path = Path(".")
    device: str = "auto"
    batch_size: int | None = None
    allow_overlap: bool = False
    """Score held-out samples that a model was trained on (refused otherwise)."""
    backend: str = "auto"
    """The backend of every model (``auto``: each model's own)."""
    translator: str | None = None
    """Text translator beside the models that cannot give a language themselves."""
    trust_remote_code: bool = False

    @property
    def run_options(self) -> RunOptions:
        return RunOptions(
            device=self.device,
            batch_size=self.batch_size,
            backend=self.backend,
            translator=self.translator,
            trust_remote_code=self.trust_remote_code,
        )


@dataclass(frozen=True)
class EvalReport:
    """The finished report: its data, its Markdown table, the files written."""

    data: dict[str, Any]
    markdown: str
    paths: tuple[Path, ...]


def select_samples(
    options: EvalOptions, console: Any = None
) -> tuple[list[Sample], dict[str, Source], dict[str, Path]]:
    """The samples to score (the chosen split's rows with their instructions, in a
    fixed order: a seeded shuffle, cut to ``limit``), their sources by name, and the
    ``--data`` path each source came from."""
    from subplug_training.data import open_sources, ordered, scan, split_problems
    from subplug_training.instructions import plan_samples

    if not options.data:
        raise SubplugError(
            "no-data",
            "No evaluation data given.",
            "Add --data KIND=PATH (the same sources as for training; their held-out rows "
            "are scored), or a manifest of your own test recordings.",
        )
    results = []
    origins: dict[str, Path] = {}
    for spec in options.data:
        for source in open_sources(spec, options.settings):
            results.append(scan(source, options.settings))
            origins[source.name] = spec.path.absolute()
    problem = split_problems(results)
    if problem is not None:
        raise problem
    mode = "seed" if options.instructions == "assigned" else options.instructions
    plan = plan_samples(ordered(results), mode, options.settings.seed)
    dropped = sum(sum(r.dropped.values()) for r in results)
    if dropped and console is not None:
        console.print(f"  {dropped} unusable row(s) skipped (as in training).", highlight=False)
    if options.split == "test":
        chosen = list(plan.test)
    elif options.split == "train":
        chosen = list(plan.train)
    else:
        chosen = [*plan.train, *plan.test]
    if options.split != "train":
        chosen = [chosen[i] for i in seed_shuffle(len(chosen), options.settings.seed)]
    if options.limit is not None:
        chosen = chosen[: options.limit]
    if not chosen:
        raise SubplugError(
            "no-eval-samples",
            f"The {options.split} split of the given data has no usable samples.",
            "Use --split all, or give data with held-out rows (a manifest with "
            '"split": "test" lines).',
        )
    return chosen, {r.source.name: r.source for r in results}, origins


def training_overlap(
    model_dir: Path, samples: Sequence[Sample], origins: Mapping[str, Path]
) -> list[Sample]:
    """The samples whose rows the model in ``model_dir`` was trained on.

    Read from its ``subplug-training.json``: each ``--data`` source it was trained on
    that is also given here (the same kind and path) is split again with the run's
    ``[data]`` settings, and its training rows are looked for among ``samples``. Models
    without that record (made elsewhere) have no known overlap."""
    from subplug_training.data import open_sources

    made = read_json(model_dir / PROVENANCE_FILE)
    if not isinstance(made, dict) or not isinstance(made.get("data_sources"), list):
        return []
    try:
        settings = recipe_from_dict(made["recipe"]).data
    except (SubplugError, KeyError, TypeError):
        return []
    given = {str(path) for path in origins.values()}
    trained: dict[tuple[str, str], set[RowId]] = {}
    for item in made["data_sources"]:
        path = str(item.get("path", ""))
        if path not in given:
            continue
        for source in open_sources(DataSpec(str(item.get("kind")), Path(path)), settings):
            trained[(source.name, path)] = set(source.splits.get("train", ()))
    return [s for s in samples if s.row in trained.get((s.source, str(origins[s.source])), ())]


def _check_overlap(
    options: EvalOptions, overlaps: Mapping[str, Sequence[Sample]], total: int, console: Any
) -> None:
    from rich.markup import escape

    for model, rows in overlaps.items():
        if not rows:
            continue
        example = ", ".join(s.key for s in rows[:3])
        what = f"{len(rows)} of the {total} samples to score were training rows of {model}"
        if options.split == "test" and not options.allow_overlap:
            raise SubplugError(
                "eval-overlap",
                f"{what} (e.g. {example}): scores on them would say what it remembers, "
                "not how it does on speech it has not heard.",
                "Score the rows it was not trained on: give --recipe with the [data] settings "
                "it was trained with (holdout and seed, in its run folder's run.json), or "
                "other data; --allow-overlap scores them anyway.",
            )
        if console is not None:
            console.print(
                f"  [yellow]note[/] {escape(what)} (e.g. {escape(example)}).", highlight=False
            )


def run_evaluation(options: EvalOptions, console: Any = None) -> EvalReport:
    """Score every model on the selected samples and write the reports."""
    from subplug import cache

    out_dir = options.out_dir.expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise SubplugError("out-not-a-folder", f"--out {out_dir} is a file, not a folder.")
    folders = {model: cache.resolve_model(model).path for model in options.models}
    _check_models(options)
    samples, sources, origins = select_samples(options, console)
    overlaps = {
        model: training_overlap(folder, samples, origins) for model, folder in folders.items()
    }
    _check_overlap(options, overlaps, len(samples), console)

    def audio(sample: Sample) -> Any:
        return load_audio(sources[sample.source].record(sample.row))

    results: dict[str, Any] = {}
    runs: dict[str, ModelRun] = {}
    for model in options.models:
        run = runs[model] = _run(model, samples, audio, options, console)
        pairs = [
            Pair(
                sample.instruction, metric_key(sample.audio_language, lang), sample.texts[lang], hyp
            )
            for sample, answer, texts in zip(samples, run.answers, run.texts, strict=True)
            if answer is not None
            for lang, hyp in (
                texts or hypotheses(answer, sample.instruction, sample.audio_language)
            ).items()
            if lang in sample.texts
        ]
        results[model] = score_model(pairs)
    data = {
        "version": REPORT_VERSION,
        "models": list(options.models),
        "data": [spec.label for spec in options.data],
        "split": options.split,
        "instructions": options.instructions
        if isinstance(options.instructions, str)
        else list(options.instructions),
        "samples": len(samples),
        "trained_on": {model: len(rows) for model, rows in overlaps.items()},
        "translator": options.translator,
        "normalisation": NORMALISATION,
        "results": results,
        "runs": {model: run.summary() for model, run in runs.items()},
        "outputs": [
            {
                "key": sample.key,
                "instruction": sample.instruction,
                "audio_language": sample.audio_language,
                "target": sample.target,
                "answers": {model: runs[model].answers[i] for model in options.models},
            }
            for i, sample in enumerate(samples)
        ],
    }
    markdown = markdown_report(data)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = (out_dir / JSON_NAME, out_dir / MARKDOWN_NAME)
    _write(paths[0], json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    _write(paths[1], markdown)
    return EvalReport(data, markdown, paths)


def _check_models(options: EvalOptions) -> None:
    """Each model's backend and the translator checked (nothing loaded) before any data
    is read: a missing model, remote code without ``--trust-remote-code``, an unknown
    translator is one clear error, as in ``subplug generate``."""
    from subplug import choice, loading
    from subplug.types import BackendOptions

    for model in options.models:
        name = choice.choose_backend(options.backend, model)
        loading.check(
            name,
            BackendOptions(
                model=model,
                device=options.device,
                batch_size=options.batch_size,
                translator=None if name == "gemma3n" else options.translator,
                trust_remote_code=options.trust_remote_code,
            ),
            source=None,
        )


def _run(
    model: str,
    samples: Sequence[Sample],
    audio: Callable[[Sample], Any],
    options: EvalOptions,
    console: Any,
) -> ModelRun:
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn(f"[bold]scoring[/] {escape(model)}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        disable=console is None,
    ) as progress:
        task = progress.add_task(model, total=len(samples))
        return run_model(
            model, samples, audio, options.run_options, lambda n: progress.advance(task, n)
        )


def _write(path: Path, text: str) -> None:
    """Write ``text`` atomically; an earlier report there is kept as ``NAME.bak``."""
    if path.exists():
        path.replace(path.with_name(f"{path.name}.bak"))
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
