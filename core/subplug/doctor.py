"""``subplug doctor``: run every registered check and show what is ready and what is not.

``--self-test`` also builds a tiny Gemma 3n in a temporary folder and runs the whole
pipeline (decode → speech detection → backend → cues → files) on a short clip: the
offline proof that an installation works, with no weights and no network.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from subplug import plugins
from subplug.types import CheckResult, CheckStatus, DoctorCheck

STYLE = {
    CheckStatus.OK: "[green]ok[/]",
    CheckStatus.WARN: "[yellow]warn[/]",
    CheckStatus.FAIL: "[red]FAIL[/]",
    CheckStatus.SKIP: "[dim]skip[/]",
}


@dataclass(frozen=True)
class CheckOutcome:
    """A check's result with its name, group and run time."""

    name: str
    group: str
    result: CheckResult
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "group": self.group,
            "status": self.result.status.value,
            "summary": self.result.summary,
            "hint": self.result.hint,
            "seconds": round(self.seconds, 3),
            "details": dict(self.result.details),
        }


@dataclass
class Report:
    """Every outcome, in order."""

    outcomes: list[CheckOutcome] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(o.result.status is CheckStatus.FAIL for o in self.outcomes)


def run_check(check: DoctorCheck) -> CheckOutcome:
    """Run one check; an exception is a failure of that check, not of doctor."""
    started = time.perf_counter()
    try:
        result = check.run()
    except Exception as exc:
        result = CheckResult(
            CheckStatus.FAIL,
            f"check crashed: {type(exc).__name__}: {exc}",
            "Please report this with `subplug doctor --json`.",
        )
    return CheckOutcome(check.name, check.group, result, time.perf_counter() - started)


def run_checks(checks: list[DoctorCheck] | None = None) -> Report:
    """Run the registered (or given) checks."""
    return Report(
        [run_check(c) for c in (checks if checks is not None else plugins.doctor_checks())]
    )


def render(report: Report, console: Any) -> None:
    """A rich table of outcomes, hints under the row they belong to; in a pipe or a file,
    plain lines with no colour and no padding at their ends."""
    from rich.markup import escape
    from rich.table import Table

    if not console.is_terminal:
        _render_plain(report, console.width)
        return
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("check")
    table.add_column("")
    table.add_column("result", overflow="fold")
    for outcome in report.outcomes:
        result = outcome.result
        # Summaries and hints are plain text: brackets (subplug[train], paths) are not markup.
        table.add_row(escape(outcome.name), STYLE[result.status], escape(result.summary))
        if result.hint and result.status is not CheckStatus.OK:
            table.add_row("", "", f"[dim]hint:[/] {escape(result.hint)}")
    console.print(table)


def _render_plain(report: Report, width: int) -> None:
    import sys
    import textwrap

    indent = " " * 24
    for outcome in report.outcomes:
        result = outcome.result
        head = f"{outcome.name:<17} {result.status.value:<5} "
        lines = textwrap.wrap(result.summary, max(20, width - len(head))) or [""]
        print((head + lines[0]).rstrip(), file=sys.stdout)
        for more in lines[1:]:
            print(indent + more, file=sys.stdout)
        if result.hint and result.status is not CheckStatus.OK:
            for more in textwrap.wrap("hint: " + result.hint, max(20, width - 24)):
                print(indent + more, file=sys.stdout)


def verdict(report: Report, *, self_test: bool) -> tuple[str, str]:
    """The last line of ``doctor``: (rich style, text). Ready only when nothing is
    missing for making subtitles; a missing model says so and how to get one."""
    if report.failed:
        return "red", "Some checks failed; see the hints above."
    warned = [o.name for o in report.outcomes if o.result.status is CheckStatus.WARN]
    if "models" in warned:
        prefix = (
            "The self-test passed and the installation works"
            if self_test
            else ("The installation works")
        )
        return (
            "yellow",
            f"{prefix}, but no model is in the cache yet: get one with `subplug models pull` "
            "(or `subplug models import PATH` offline) before making subtitles.",
        )
    prefix = "Self-test passed: ready" if self_test else "Ready"
    if warned:
        return "green", f"{prefix} ({len(warned)} warning{'s' if len(warned) > 1 else ''} above)."
    return "green", f"{prefix}."


def main(*, self_test: bool = False, as_json: bool = False) -> int:
    """Run doctor; returns 1 when a check (or the self-test) failed."""
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    checks = plugins.doctor_checks()
    if self_test:
        from subplug.selftest import self_test_check

        checks.append(self_test_check(console=None if as_json else console))
    if as_json:
        report = run_checks(checks)
        print(
            json.dumps(
                {"ok": not report.failed, "checks": [o.to_dict() for o in report.outcomes]},
                indent=2,
            )
        )
        return 1 if report.failed else 0
    console.print("[bold]subplug doctor[/]")
    report = Report()
    with console.status("checking…"):
        for check in checks:
            if check.name == "self-test":
                continue
            report.outcomes.append(run_check(check))
    for check in checks:
        if check.name == "self-test":
            report.outcomes.append(run_check(check))
    render(report, console)
    style, text = verdict(report, self_test=self_test)
    from rich.markup import escape

    console.print(f"[{style}]{escape(text)}[/]")
    return 1 if report.failed else 0
