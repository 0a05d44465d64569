"""glibc's allocator set for each phase: loading gives memory back, running keeps it.

Quantising a model frees float weights tensor by tensor. glibc keeps freed blocks below
its (growing) mmap threshold in the heap, so the process's resident size can stay at its
loading peak although the memory is free: 10.1 GiB against 5.8 GiB after
:func:`release_to_os` for E2B, measured (docs/performance.md). So a quantising load
makes large blocks mappings of their own (:func:`large_blocks_to_os`).

Running the model wants the opposite. Its activations (an encoder's or a prefill's
megabytes per layer, the key/value cache growing by a step) are freed and asked for
again thousands of times a chunk; as mappings of their own, each request is fresh pages
the kernel must fault in and zero: with E2B at batch 8 that was a quarter of the audio
encoder's and the prefill's CPU time, spent in the kernel. :func:`reuse_freed_blocks`
sets the allocator back to keeping freed blocks for reuse once loading is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)


#: glibc's ``mallopt`` parameters: the mmap threshold and the trim threshold.
_M_MMAP_THRESHOLD = -3
_M_TRIM_THRESHOLD = -1

#: The largest mmap threshold glibc accepts on 64-bit systems (its dynamic threshold's
#: ceiling), and how much free memory the heap's top may keep before it is given back:
#: with E2B at batch 8, glibc's pairing (64 MiB) still left a sixth of the prefill's CPU
#: time in page faults, 1 GiB a twentieth (docs/performance.md). Kept blocks do raise
#: the peak (freed blocks of one size serve later requests of another only in part):
#: 5.22 → 5.64 GiB for E2B int8 over batches of 1 and 8.
RUNNING_MMAP_THRESHOLD = 32 << 20
RUNNING_TRIM_THRESHOLD = 1 << 30


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def _mallopt(*settings: tuple[int, int]) -> bool:
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None) if libc is not None else None
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return all(bool(mallopt(parameter, value)) for parameter, value in settings)


def large_blocks_to_os(threshold: int = 1 << 20) -> bool:
    """Make every allocation of ``threshold`` bytes or more its own mapping, given back
    to the system the moment it is freed (glibc's threshold otherwise grows to 32 MiB
    and keeps freed blocks in the heap). Called before a quantising load, whose
    per-tensor work buffers would otherwise pile up to the float model's size before
    :func:`release_to_os` runs. Process-wide; False where it cannot be set."""
    return _mallopt((_M_MMAP_THRESHOLD, threshold))


def reuse_freed_blocks() -> bool:
    """Keep freed blocks of up to 32 MiB in the heap for the next request, and up to
    1 GiB free at the heap's top, undoing :func:`large_blocks_to_os` once loading is
    done. Process-wide; False where it cannot be set."""
    return _mallopt(
        (_M_MMAP_THRESHOLD, RUNNING_MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, RUNNING_TRIM_THRESHOLD)
    )


def release_to_os() -> bool:
    """Return free heap memory to the system (glibc ``malloc_trim``). True when it ran;
    False on other C libraries, where there is nothing to do."""
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None) if libc is not None else None
    if trim is None:
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
    return True
