"""Reading and checking the data of a run: every source opened and every row scanned
(with a progress bar), the samples planned, and the report of what was kept and dropped.

Problems with the data as a whole (no usable training sample, a source too small to
hold rows out) are raised by :func:`require_training_data` only after the report, so the
rows that caused them are on screen first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from subplug.errors import SubplugError

from subplug_training.data import (
    SEED_ORDER,
    DataSpec,
    ScanResult,
    Source,
    open_sources,
    ordered,
    scan,
    split_problems,
)
from subplug_training.instructions import SamplePlan, plan_samples
from subplug_training.recipe import DataSettings


def open_all(specs: Sequence[DataSpec], settings: DataSettings) -> list[Source]:
    """Every source the ``--data`` arguments name, in the seed's order; a source given
    twice is refused."""
    sources: list[Source] = []
    for spec in specs:
        sources.extend(open_sources(spec, settings))
    names = [s.name for s in sources]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SubplugError(
            "bad-data",
            f"The same source is given twice: {', '.join(duplicates)}.",
            "Give each source once (ted already means ted-en and ted-mn).",
        )
    return ordered_sources(sources)


def read_data(
    specs: Sequence[DataSpec], settings: DataSettings, console: Any = None, *, workers: int = 4
) -> tuple[list[ScanResult], SamplePlan]:
    """Open every ``--data`` source, check every row and plan the samples."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    sources = open_all(specs, settings)
    results = []
    with Progress(
        TextColumn("[bold]checking data[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        disable=console is None,
    ) as progress:
        for source in sources:
            total = sum(len(rows) for rows in source.splits.values())
            task = progress.add_task(source.name, total=total)

            def advance(task: Any = task) -> None:
                progress.advance(task)

            results.append(scan(source, settings, on_row=advance, workers=workers))
    results = ordered(results)
    plan = plan_samples(results, settings.instructions, settings.seed)
    return results, plan


def require_training_data(results: Sequence[ScanResult], plan: SamplePlan) -> None:
    """Raise the problem that stops a run, if any: no usable training sample, or a
    source whose rows cannot be split (once its rows have been reported)."""
    if not plan.train:
        raise SubplugError(
            "no-training-data",
            "No usable training samples: every row was dropped or held out.",
            "See the dropped rows above (and data-report.json in the run folder).",
        )
    problem = split_problems(results)
    if problem is not None:
        raise problem


def ordered_sources(sources: Sequence[Source]) -> list[Source]:
    """Sources in the seed's order (see :data:`subplug_training.data.SEED_ORDER`)."""

    def rank(source: Source) -> int:
        name = "manifest" if source.name.startswith("manifest:") else source.name
        return SEED_ORDER.index(name)

    return sorted(sources, key=rank)


def data_report(results: Sequence[ScanResult], plan: SamplePlan) -> dict[str, Any]:
    """Rows kept and dropped per source, and samples per instruction (JSON-ready)."""
    return {
        "sources": [r.to_dict() for r in results],
        "samples": {"train": len(plan.train), "test": len(plan.test)},
        "instructions": {
            split: {str(k): v for k, v in plan.counts(split).items()} for split in ("train", "test")
        },
    }


def print_data_report(console: Any, results: Sequence[ScanResult], plan: SamplePlan) -> None:
    """A table of sources (rows, kept, hours, dropped) and the reasons rows were dropped."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="training data", title_justify="left")
    for column in ("source", "rows", "train", "test", "audio (h:mm:ss)", "dropped"):
        table.add_column(column, justify="left" if column == "source" else "right")
    for result in results:
        seconds = round(sum(k.seconds for rows in result.kept.values() for k in rows))
        table.add_row(
            escape(result.source.name),
            str(result.total),
            str(len(result.kept["train"])),
            str(len(result.kept["test"])),
            f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}",
            str(sum(result.dropped.values())),
        )
    console.print(table)
    for result in results:
        for reason, count in result.dropped.most_common():
            example = escape(", ".join(result.examples.get(reason, [])[:3]))
            console.print(
                f"  [yellow]dropped[/] {count} row(s) of {escape(result.source.name)}: "
                f"{escape(reason)} [dim](e.g. {example})[/]",
                highlight=False,
            )
    counts = plan.counts("train")
    spread = ", ".join(f"{number}: {count}" for number, count in counts.items())
    console.print(
        f"  {len(plan.train)} training and {len(plan.test)} test samples; "
        f"per instruction: {spread or 'none'}",
        highlight=False,
    )
