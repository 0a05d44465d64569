"""``subplug doctor --self-test``: the whole pipeline offline with the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pysubs2
import pytest
from subplug import cli
from subplug.selftest import SelfTestFailed, run_self_test, self_test_check
from subplug.types import CheckStatus

STEPS = [
    "libraries",
    "tiny model",
    "clip",
    "model-load",
    "decode",
    "vad",
    "transcribe",
    "write",
]


def test_self_test_runs_every_step_and_writes_valid_files(tmp_path: Path) -> None:
    steps = run_self_test(tmp_path)
    assert [s.name for s in steps] == STEPS
    assert all(s.seconds >= 0 for s in steps)
    results = {s.name: s.result for s in steps}
    assert "11.0 s of audio" in results["decode"]
    assert "audio only" in results["model-load"]
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == [
        "self test клип.en-mn.ass",
        "self test клип.en.srt",
        "self test клип.en.vtt",
        "self test клип.mn.srt",
        "self test клип.mn.vtt",
    ]
    ass = pysubs2.load(str(tmp_path / "out" / "self test клип.en-mn.ass"))
    assert len(ass.styles) >= 2 and len(ass) >= 2
    for name in written:
        subs = pysubs2.load(str(tmp_path / "out" / name))
        assert len(subs) >= 1
        assert all(0 <= line.start < line.end <= 11_100 for line in subs)


def test_a_failing_step_is_named_with_its_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUBPLUG_DISABLED_PLUGINS", "gemma3n")
    with pytest.raises(SelfTestFailed) as failed:
        run_self_test(tmp_path)
    assert failed.value.step == "model-load"
    assert [s.name for s in failed.value.steps] == ["libraries", "tiny model", "clip"]
    result = self_test_check().run()
    assert result.status is CheckStatus.FAIL
    assert result.summary.startswith("step 'model-load' failed")
    assert "traceback" in result.details and "--json" in (result.hint or "")


def test_doctor_self_test_from_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["doctor", "--self-test", "--json"])
    report = json.loads(capsys.readouterr().out)
    check = next(c for c in report["checks"] if c["name"] == "self-test")
    assert check["status"] == "ok", check
    assert [s["name"] for s in check["details"]["steps"]] == STEPS
    assert "whole pipeline ran offline" in check["summary"]
    write = next(s for s in check["details"]["steps"] if s["name"] == "write")
    assert "{" not in write["result"] and " English" in write["result"], write
    failed = [c["name"] for c in report["checks"] if c["status"] == "fail"]
    assert code == (1 if failed else 0)
