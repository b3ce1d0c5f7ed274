"""glibc malloc settings that keep a training's resident memory near its live tensors.

Training allocates tensors whose shapes change with every batch (the longest sentence
sets the padded length). glibc's default raises its mmap threshold to the size of the
largest block freed so far (up to 32 MiB): after the first large tensor is freed, every
later tensor below that size comes from the heap arenas, where blocks of ever-changing
sizes fragment the heap and freed memory is kept instead of returned to the system
(docs/performance.md, "Memory"). Fixing the threshold keeps large tensors in their own
mappings, returned to the system the moment they are freed; the heap then holds only
small blocks, and its free top is returned above 1 MiB.

`tune_malloc` applies this once, when `train` starts, on glibc only; a setting the user
made with glibc's environment variable (MALLOC_MMAP_THRESHOLD_...) is left as the user
made it. Decoding (translate, evaluate, serve) keeps glibc's default: its per-step [B,V]
tensors would each be a fresh mapping, made and unmapped at every output step, where the
heap reuses its blocks.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
SETTINGS = {
    # (mallopt parameter, value), by the environment variable that also sets it
    "MALLOC_MMAP_THRESHOLD_": (M_MMAP_THRESHOLD, 1 << 20),  # blocks >= 1 MiB: own mapping
    "MALLOC_TRIM_THRESHOLD_": (M_TRIM_THRESHOLD, 1 << 20),
}


def glibc() -> ctypes.CDLL | None:
    """The C library this process runs on, when it is glibc (it has mallopt)."""
    try:
        libc = ctypes.CDLL(None)
    except (OSError, TypeError):  # TypeError: Windows wants a library name
        return None
    # gnu_get_libc_version is glibc's own: musl and macOS have no such function.
    return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None


def tune_malloc() -> list[str]:
    """Apply SETTINGS through mallopt -> the names of the settings applied (none off glibc)."""
    libc = glibc()
    if libc is None:
        return []
    applied = []
    for name, (parameter, value) in SETTINGS.items():
        if name not in os.environ and libc.mallopt(parameter, value) == 1:
            applied.append(name)
    return applied
