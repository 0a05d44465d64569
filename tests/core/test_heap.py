"""The allocator settings around a quantising load (subplug.quant.heap), checked on the
real glibc allocator: whether a large block is a mapping of its own or comes from the
heap, read from glibc's own counters (``mallinfo2``). Each check runs in a fresh
interpreter, since the settings are process-wide."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def _has_mallinfo2() -> bool:
    name = ctypes.util.find_library("c")
    try:
        return name is not None and hasattr(ctypes.CDLL(name), "mallinfo2")
    except OSError:
        return False


pytestmark = pytest.mark.skipif(
    not _has_mallinfo2(), reason="needs glibc ≥ 2.33 (mallinfo2) to read the allocator's state"
)

_PROBE = r"""
import ctypes, ctypes.util, json, sys
from subplug.quant import heap

libc = ctypes.CDLL(ctypes.util.find_library("c"))
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd",
        "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

def mapped(size):
    # Mappings of their own while one block of `size` bytes is held.
    before = libc.mallinfo2().hblks
    block = libc.malloc(size)
    during = libc.mallinfo2().hblks
    libc.free(block)
    return during - before

found = {}
for step in sys.argv[1:]:
    if step == "load":
        found["set"] = heap.large_blocks_to_os()
    elif step == "run":
        found["set"] = heap.reuse_freed_blocks()
    else:
        found[step] = mapped(int(step) << 20)
print(json.dumps(found))
"""


def _probe(*steps: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *steps], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def test_loading_gives_large_blocks_their_own_mappings() -> None:
    found = _probe("load", "2", "4")
    assert found == {"set": True, "2": 1, "4": 1}


def test_running_reuses_freed_blocks_from_the_heap() -> None:
    """After a quantising load the model's activations must come from the heap again
    (fresh mappings cost page faults on every request); only blocks above glibc's
    largest threshold stay mappings."""
    found = _probe("load", "run", "2", "4", "16", "40")
    assert found == {"set": True, "2": 0, "4": 0, "16": 0, "40": 1}


@pytest.mark.parametrize(("quantize", "mapped_when_loaded"), [("int8", 0), ("int4", 1)])
def test_a_quantised_load_leaves_the_allocator_reusing_blocks(
    tmp_path: Path, quantize: str, mapped_when_loaded: int
) -> None:
    """The whole order on a real quantising load of the tiny Gemma 3n: large blocks are
    mappings of their own while it loads, heap blocks again once it has loaded — except
    with int4, the setting for the least memory, which keeps giving them back."""
    pytest.importorskip("torch")
    from subplug.testing.tiny import build_tiny_model

    folder = build_tiny_model(tmp_path / "tiny")
    script = (
        _PROBE.split("found = {}")[0]
        + "from subplug.backends.gemma3n import Gemma3nBackend\n"
        + "from subplug.types import BackendOptions\n"
        + "from subplug.quant import heap as _heap\n"
        + "seen = []\n"
        + "_load_setting = _heap.large_blocks_to_os\n"
        + "def watched(*args, **kwargs):\n"
        + "    done = _load_setting(*args, **kwargs)\n"
        + "    seen.append(mapped(4 << 20))\n"
        + "    return done\n"
        + "_heap.large_blocks_to_os = watched\n"
        + f"backend = Gemma3nBackend(BackendOptions(model={str(folder)!r}, device='cpu',"
        + f" quantize={quantize!r}))\n"
        + "print(json.dumps({'quantize': backend.describe()['quantize'],"
        + " 'while loading': seen, 'loaded': mapped(4 << 20)}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "SUBPLUG_HOME": str(tmp_path / "home")},
    )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found == {
        "quantize": f"{quantize}-trim",
        "while loading": [1],
        "loaded": mapped_when_loaded,
    }


@pytest.mark.parametrize(("quantize", "trims"), [("int8", 0), ("int4", 2)])
def test_int4_gives_each_batchs_freed_memory_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quantize: str, trims: int
) -> None:
    """int4, the setting for the least memory, returns a batch's freed blocks to the
    system before the next batch's encoder and prefill add theirs; int8 keeps them."""
    pytest.importorskip("torch")
    import numpy as np
    from subplug import prompts
    from subplug.backends import gemma3n
    from subplug.testing.tiny import build_tiny_model
    from subplug.types import AudioChunk, BackendOptions, BackendRequest, ChunkSpan

    monkeypatch.setenv("SUBPLUG_HOME", str(tmp_path / "home"))
    folder = build_tiny_model(tmp_path / "tiny")
    backend = gemma3n.Gemma3nBackend(
        BackendOptions(model=str(folder), device="cpu", quantize=quantize, batch_size=1)
    )
    calls: list[bool] = []
    monkeypatch.setattr(gemma3n.heap, "release_to_os", lambda: calls.append(True) or True)
    task, instruction, source = prompts.first_request("en", ("en",))
    requests = [
        BackendRequest(
            AudioChunk(ChunkSpan(i, 0.0, 1.0, ()), np.zeros(16_000, np.float32)),
            instruction, task, source, 4,
        )
        for i in range(2)
    ]  # fmt: skip
    try:
        assert len(backend.generate(requests)) == 2
    finally:
        backend.close()
    assert len(calls) == trims
