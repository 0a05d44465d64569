"""``subplug install|uninstall|status HOST``: drive the host adapters plugins register."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from subplug import plugins
from subplug.errors import SubplugError
from subplug.files import replace_atomic


def run_host_action(action: str, host: str, *, as_json: bool = False) -> int:
    """Run ``install``, ``uninstall`` or ``status`` on the adapter named ``host``."""
    adapters = plugins.hosts()
    adapter = adapters.get(host.lower())
    if adapter is None:
        raise SubplugError(
            "unknown-host",
            f"No host adapter named {host!r}.",
            f"Known hosts: {', '.join(sorted(adapters)) or 'none (are the plugins installed?)'}.",
        )
    status = getattr(adapter, action)()
    if as_json:
        print(json.dumps({"host": adapter.name, "action": action, **asdict(status)}))
        return 0
    from rich.console import Console
    from rich.markup import escape

    console = Console(highlight=False, soft_wrap=True)
    mark = "[green]installed[/]" if status.installed else "[yellow]not installed[/]"
    console.print(f"[bold]{escape(adapter.name)}[/]: {mark}")
    if status.location:
        console.print(f"  location: {escape(status.location)}")
    if status.version:
        console.print(f"  version:  {escape(status.version)}")
    if status.message:
        console.print(f"  {escape(status.message)}")
    return 0


def write_host_files(
    texts: Sequence[tuple[Path, str]],
    *,
    ours: Callable[[Path], bool],
    reference: str,
    hint: str,
) -> list[Path]:
    """Write each ``(path, text)`` a host adapter installs (UTF-8, missing folders
    created, each file replaced at once); return the paths.

    A file already at a path that ``ours`` does not recognise as subplug's is first
    kept as ``NAME.bak``. An ``OSError`` (``ours`` included) ends the install with
    ``SubplugError(reference, "Cannot write PATH: …", hint)``.
    """
    written = []
    for path, text in texts:
        try:
            if path.exists() and not ours(path):
                os.replace(path, path.with_name(path.name + ".bak"))
            path.parent.mkdir(parents=True, exist_ok=True)
            replace_atomic(path, text.encode("utf-8"))
        except OSError as exc:
            raise SubplugError(
                reference, f"Cannot write {path}: {exc.strerror or exc}.", hint
            ) from exc
        written.append(path)
    return written
