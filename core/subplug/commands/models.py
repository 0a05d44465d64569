"""``subplug models pull|import|export|list|verify|rm``: the model cache from the shell.

Tables and messages go to stdout, progress bars to stderr (so ``--json`` output stays
clean). Failures are raised as :class:`~subplug.errors.SubplugError` for the CLI to
print.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.filesize import decimal as human_size
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from subplug import cache, choice
from subplug.cache import CacheProgress, ModelEntry, ProgressCallback, VerifyReport

_VERBS = {
    "download": "Downloading",
    "copy": "Copying",
    "extract": "Extracting",
    "export": "Exporting",
    "hash": "Checking",
}


def setup(parser: argparse.ArgumentParser) -> None:
    """Add the ``models`` sub-subcommands and their options to ``parser``."""
    parser.description = (
        "Manage the local model cache "
        "($SUBPLUG_HOME/models, or the user data folder; see docs/models.md)."
    )
    sub = parser.add_subparsers(dest="models_command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "pull",
        help="download a known model (and its base) from Hugging Face",
        description="Download a known model into the cache. Interrupted downloads resume. "
        f"Known: {', '.join(sorted(cache.KNOWN_MODELS))}.",
    )
    p.add_argument("name", nargs="?", default=None, help=f"default: {cache.DEFAULT_MODEL}")
    p.add_argument("--revision", help="commit, tag or branch (default: the pinned one)")
    p.add_argument("--force", action="store_true", help="download again even if present")

    p = sub.add_parser(
        "import",
        help="add a model from a folder or a .tar made by `models export`",
        description="Copy a model into the cache from a folder (Hugging Face layout) or a "
        ".tar from `subplug models export`; every file is hashed into the manifest.",
    )
    p.add_argument("path", help="model folder or .tar")
    p.add_argument("--name", help="cache name (default: from the manifest or folder)")
    p.add_argument("--base", help="for an adapter: the cache name of its base model")
    p.add_argument("--force", action="store_true", help="replace a model of the same name")

    p = sub.add_parser(
        "export",
        help="write a model to a .tar for another machine (e.g. on a USB stick)",
        description="Write a cache entry to a .tar that `subplug models import` reads.",
    )
    p.add_argument("name", help="cache name")
    p.add_argument("dest", help="a .tar path, or a folder (then DEST/NAME.tar)")
    p.add_argument("--with-base", action="store_true", help="include an adapter's base model")
    p.add_argument("--force", action="store_true", help="replace an existing file at DEST")

    p = sub.add_parser("list", help="show the models in the cache")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser(
        "verify",
        help="hash every file of a model against its manifest",
        description="Hash every file of the named models (default: all) against their "
        "manifests; exit status 1 when one does not match.",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="default: every complete model")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser(
        "optimize",
        help="make a quantised copy for fast, small CPU runs (what generate uses on a CPU)",
        description="Make a quantised copy of a model in the cache: int8 (or int4) weights "
        "and, with --vocab en-mn, only the tokens English and Mongolian need. It is built "
        "while the model is read, without holding the float model, and saved as "
        "NAME-int8-trim; generate then loads it on a CPU (it would otherwise make it on "
        "first use). --check measures how often it picks the same token as the float "
        "model (needs the float model's memory once).",
    )
    p.add_argument("name", nargs="?", default=None, help=f"default: {cache.DEFAULT_MODEL}")
    p.add_argument("--quantize", default="int8", choices=["int8", "int4"])
    p.add_argument("--vocab", default="en-mn", choices=["en-mn", "full"])
    p.add_argument("--check", action="store_true", help="measure agreement with the float model")
    p.add_argument("--force", action="store_true", help="make the copy again")

    p = sub.add_parser(
        "clean",
        help="remove journals of runs that never finished",
        description="Remove the resume journals of interrupted or failed runs (a finished "
        "file removes its own). A journal younger than --older-than days is kept: running "
        "the same command again still resumes from it.",
    )
    p.add_argument(
        "--older-than",
        type=float,
        default=14.0,
        metavar="DAYS",
        help="keep journals younger than this (default: 14; 0 removes all)",
    )
    p.add_argument("--dry-run", action="store_true", help="list them, remove nothing")

    p = sub.add_parser("rm", help="remove a model from the cache")
    p.add_argument("name", help="cache name")
    p.add_argument("--force", action="store_true", help="remove a base that adapters still use")


def run(args: argparse.Namespace) -> int:
    """Run the ``models`` sub-subcommand chosen in ``args``; returns the exit status."""
    handlers = {
        "pull": _pull,
        "import": _import,
        "export": _export,
        "list": _list,
        "verify": _verify,
        "optimize": _optimize,
        "clean": _clean,
        "rm": _rm,
    }
    return handlers[args.models_command](args)


# --------------------------------------------------------------------------- handlers


def _pull(args: argparse.Namespace) -> int:
    out = _stdout()
    name = args.name or cache.DEFAULT_MODEL
    before = _find(name)
    if before is not None and before.complete and not args.force:
        out.print(
            f"[green]✓[/] {escape(name)} is already in the cache ({escape(_describe(before))}). "
            "Use --force to download it again."
        )
        return 0
    with _bars() as report:
        entry = cache.pull(name, force=args.force, revision=args.revision, progress=report)
    out.print(f"[green]✓[/] {escape(entry.name)} is ready: {escape(_describe(entry))}")
    return 0


def _import(args: argparse.Namespace) -> int:
    with _bars() as report:
        entry = cache.import_model(
            args.path, name=args.name, base=args.base, force=args.force, progress=report
        )
    _stdout().print(f"[green]✓[/] Imported {escape(entry.name)}: {escape(_describe(entry))}")
    return 0


def _export(args: argparse.Namespace) -> int:
    with _bars() as report:
        path = cache.export_model(
            args.name, args.dest, with_base=args.with_base, force=args.force, progress=report
        )
    out = _stdout()
    out.print(f"[green]✓[/] Wrote {escape(str(path))} ({human_size(path.stat().st_size)}).")
    out.print(f"On the other machine run: subplug models import {escape(path.name)}")
    return 0


def _list(args: argparse.Namespace) -> int:
    entries = cache.list_models()
    out = _stdout()
    if args.json:
        print(json.dumps([_entry_json(e) for e in entries], indent=2))
        return 0
    if not entries:
        out.print(
            f"No models in {cache.models_dir()}.\n"
            f"Get one with `subplug models pull` (default: {cache.DEFAULT_MODEL}) or "
            "`subplug models import PATH`."
        )
        return 0
    starred = any(e.name == cache.DEFAULT_MODEL for e in entries)
    table = Table(
        title=f"Models in {cache.models_dir()}",
        title_justify="left",
        caption=f"* default model ({cache.DEFAULT_MODEL})" if starred else None,
        caption_justify="left",
    )
    for column in ("Name", "Kind", "Base", "Runs with", "Size", "State", "Revision"):
        table.add_column(
            column, justify="right" if column == "Size" else "left", no_wrap=column == "Runs with"
        )
    for e in entries:
        name = e.name + (" *" if e.name == cache.DEFAULT_MODEL else "")
        state = "[green]complete[/]" if e.complete else f"[yellow]{e.state}[/]"
        derived = e.derived or {}
        table.add_row(
            escape(name),
            str(derived.get("quantize") or e.kind or "?"),
            escape(f"from {derived['from']}" if derived.get("from") else e.base or ""),
            escape(choice.runner(e.name)) if e.complete else "",
            human_size(e.size),
            state,
            (e.revision or "")[:12],
        )
    out.print(table)
    if any(e.state == "resumable" for e in entries):
        out.print("Resume an interrupted download with `subplug models pull NAME`.")
    return 0


def _verify(args: argparse.Namespace) -> int:
    names = args.names or [e.name for e in cache.list_models() if e.complete]
    reports: list[VerifyReport] = []
    with _bars() as report:
        for name in names:
            reports.append(cache.verify(name, progress=report))
    bad = [r for r in reports if not r.ok]
    if args.json:
        print(json.dumps([_report_json(r) for r in reports], indent=2))
        return 1 if bad else 0
    out = _stdout()
    if not reports:
        out.print(f"No complete models in {escape(str(cache.models_dir()))} to verify.")
        return 0
    table = Table(title="Model check (sha256 of every file)", title_justify="left")
    for column in ("Name", "Files", "Size", "Result"):
        table.add_column(column, justify="right" if column in ("Files", "Size") else "left")
    for r in reports:
        table.add_row(r.name, str(r.files), human_size(r.size), _verdict(r))
    out.print(table)
    for r in bad:
        for label, paths in (("missing", r.missing), ("changed", r.changed), ("extra", r.extra)):
            for rel in paths:
                out.print(f"  {escape(r.name)}: {label}: {escape(str(rel))}")
    if bad:
        names_bad = escape(" ".join(r.name for r in bad))
        out.print(
            f"[red]Damaged: {names_bad}.[/] Re-import (`subplug models import PATH --force`) "
            "or re-download (`subplug models pull NAME --force`)."
        )
        return 1
    return 0


def _optimize(args: argparse.Namespace) -> int:
    from subplug.commands import optimize as gemma3n_optimize

    out = _stdout()
    name = args.name or cache.DEFAULT_MODEL
    with _bars() as report:
        entry, facts = gemma3n_optimize.optimize(
            name,
            quantize=args.quantize,
            vocab=args.vocab,
            check=args.check,
            force=args.force,
            progress=report,
            say=lambda text: out.print(escape(text)),
        )
    kept = facts.get("kept_tokens")
    vocab = (
        f"{kept:,} of {facts['vocab_size']:,} tokens kept"
        if kept is not None
        else "full vocabulary"
    )
    out.print(
        f"[green]✓[/] Made {escape(entry.name)} from {escape(name)} in {facts['seconds']:.0f} s: "
        f"{args.quantize} weights, {vocab}, {human_size(entry.size)}."
    )
    quality = facts.get("quality")
    if quality is not None:
        verdict = "[green]kept[/]" if facts["passes"] else "[yellow]below 99 %[/]"
        out.print(
            f"Quality: the same next token as the float model at {100 * quality['top1']:.1f} % "
            f"of {quality['steps']} steps (logit cosine {quality['cosine']:.4f}): {verdict}."
        )
        if not facts["passes"]:
            out.print(
                "`generate --quantize auto` will not use this copy; --quantize "
                f"{args.quantize} still can."
            )
    if args.quantize == "int8":
        out.print(f"`subplug generate` on a CPU now loads it when you use {escape(name)}.")
    else:  # auto picks int8: the int4 copy is for asking
        out.print(
            f"`subplug generate --model {escape(name)} --quantize {args.quantize}` loads it "
            "(`--quantize auto` uses int8, which is faster)."
        )
    return 0


def _clean(args: argparse.Namespace) -> int:
    from subplug.errors import SubplugError
    from subplug.journal import remove_journals, stale_journals

    if args.older_than < 0:
        raise SubplugError(
            "bad-older-than", "--older-than cannot be negative.", "Give a number of days."
        )
    found = stale_journals(cache.journal_dir(), older_than_days=args.older_than)
    out = _stdout()
    if not found:
        out.print(f"No journals older than {args.older_than:g} days.")
        return 0
    size = sum(j.size for j in found)
    if args.dry_run:
        for journal in found:
            out.print(f"{escape(journal.path.name)}  {journal.age_days:.0f} days")
        out.print(f"{len(found)} journal(s), {human_size(size)}; nothing removed (--dry-run).")
        return 0
    freed = remove_journals(found)
    out.print(f"[green]✓[/] Removed {len(found)} journal(s) of unfinished runs "
              f"(freed {human_size(freed)}).")  # fmt: skip
    return 0


def _rm(args: argparse.Namespace) -> int:
    freed = cache.remove(args.name, force=args.force)
    _stdout().print(f"[green]✓[/] Removed {escape(args.name)} (freed {human_size(freed)}).")
    return 0


# --------------------------------------------------------------------------- helpers


def _stdout() -> Console:
    return Console(file=sys.stdout, highlight=False, soft_wrap=True)


@contextmanager
def _bars() -> Iterator[ProgressCallback]:
    """A rich progress display on stderr; yields the callback cache functions report to."""
    console = Console(file=sys.stderr)
    if not console.is_terminal:
        yield lambda event: None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as bars:
        tasks: dict[tuple[str, str], TaskID] = {}

        def report(event: CacheProgress) -> None:
            if event.stage == "wait":
                model = escape(event.model)
                console.print(f"Waiting for another subplug process working on {model}…")
                return
            key = (event.model, event.stage)
            if key not in tasks:
                verb = _VERBS.get(event.stage, event.stage)
                tasks[key] = bars.add_task(f"{verb} {event.model}", total=event.total)
            bars.update(tasks[key], completed=event.done, total=event.total)

        yield report


def _find(name: str) -> ModelEntry | None:
    return next((e for e in cache.list_models() if e.name == name and e.complete), None)


def _describe(entry: ModelEntry) -> str:
    parts: list[str] = [entry.kind or "model"]
    if entry.base:
        parts.append(f"on {entry.base}")
    parts.append(human_size(entry.size))
    if entry.revision:
        parts.append(f"revision {entry.revision[:12]}")
    return ", ".join(parts) + f", in {entry.path}"


def _verdict(r: VerifyReport) -> str:
    if r.ok:
        return "[green]OK[/]"
    counts = [(len(r.missing), "missing"), (len(r.changed), "changed"), (len(r.extra), "extra")]
    return "[red]" + ", ".join(f"{n} {label}" for n, label in counts if n) + "[/]"


def _entry_json(e: ModelEntry) -> dict[str, object]:
    return {
        "name": e.name,
        "kind": e.kind,
        "base": e.base,
        "size": e.size,
        "complete": e.complete,
        "state": e.state,
        "path": str(e.path),
        "repo_id": e.repo_id,
        "revision": e.revision,
        "derived": dict(e.derived) if e.derived else None,
        "runs_with": choice.runner(e.name) if e.complete else None,
    }


def _report_json(r: VerifyReport) -> dict[str, object]:
    return {
        "name": r.name,
        "path": str(r.path),
        "ok": r.ok,
        "files": r.files,
        "size": r.size,
        "missing": list(r.missing),
        "changed": list(r.changed),
        "extra": list(r.extra),
    }
