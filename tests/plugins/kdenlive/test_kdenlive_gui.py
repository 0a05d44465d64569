"""The clip job in a real Kdenlive 24.12 under Xvfb (``kdenlive_gui.py``).

Opt-in: ``SUBPLUG_KDENLIVE_GUI=1``. It needs root, debootstrap and the Debian archive,
and takes minutes (the Debian 13 root is built once, about 700 MB, and kept in
``SUBPLUG_KDENLIVE_ROOT``, default ``/var/tmp/subplug-kdenlive-trixie``). Screenshots and
``result.json`` go to ``$SUBPLUG_ARTIFACTS/kdenlive-gui`` when that is set.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

pytestmark = [pytest.mark.host, pytest.mark.slow]


@pytest.mark.timeout(3600)
@pytest.mark.skipif(
    os.environ.get("SUBPLUG_KDENLIVE_GUI") != "1",
    reason="opt-in (SUBPLUG_KDENLIVE_GUI=1): builds a Debian 13 root from the network and "
    "drives Kdenlive 24.12 for minutes",
)
def test_clip_job_in_kdenlive_24_12(tmp_path: Path) -> None:
    import kdenlive_gui

    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        pytest.fail("SUBPLUG_KDENLIVE_GUI=1 needs root and debootstrap")
    artifacts = os.environ.get("SUBPLUG_ARTIFACTS")
    out = Path(artifacts) / "kdenlive-gui" if artifacts else tmp_path / "kdenlive-gui"
    root = os.environ.get("SUBPLUG_KDENLIVE_ROOT", "/var/tmp/subplug-kdenlive-trixie")
    code = kdenlive_gui.main(["--root", root, "--out", str(out)])
    results = json.loads((out / "result.json").read_text(encoding="utf-8"))
    assert code == 0, results
    assert results["checks"] and all(results["checks"].values()), results["checks"]
