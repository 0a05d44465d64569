"""``subplug install|uninstall|status HOST``: drive the host adapters plugins register."""

from __future__ import annotations

import json
from dataclasses import asdict

from subplug import plugins
from subplug.errors import SubplugError


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

    console = Console(highlight=False, soft_wrap=True)
    mark = "[green]installed[/]" if status.installed else "[yellow]not installed[/]"
    console.print(f"[bold]{adapter.name}[/]: {mark}")
    if status.location:
        console.print(f"  location: {status.location}")
    if status.version:
        console.print(f"  version:  {status.version}")
    if status.message:
        console.print(f"  {status.message}")
    return 0
