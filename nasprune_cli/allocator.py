"""glibc's malloc set to keep freed memory in the process, as jemalloc or tcmalloc do.

By default glibc gives every block above its mmap threshold (32 MiB at most) a fresh mapping and unmaps it when freed,
so each forward pass page-faults its large activations in again, and the kernel zeroes those pages: a resnet18 forward
on one CPU thread is 15-18% slower for it (bench/malloc_contention.py). With mmap off and trimming off, freed blocks
are reused instead. The memory a process holds then stays at its peak until it exits. The CLI applies this at start
(`NASPRUNE_MALLOC`: `caching`, the default, or `system` to keep glibc's defaults); library users call
`keep_freed_memory()`.
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Mapping

from nasprune_cli.errors import NasPruneError

ENV = "NASPRUNE_MALLOC"
MODES = ("caching", "system")
_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers (glibc's malloc.h)
_M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1
_kept = False  # whether keep_freed_memory applied in this process


def keep_freed_memory() -> bool:
    """Make glibc's malloc serve large blocks from its heap and never trim it; False (nothing done) off glibc."""
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # pragma: no cover - glibc without a loadable mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    global _kept
    _kept = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _INT_MAX))
    return _kept


def current_mode() -> str:
    """'caching' once keep_freed_memory applied in this process (or glibc was started with MALLOC_MMAP_MAX_=0, which
    does the same), else 'system': what a latency table records."""
    started_caching = os.environ.get("MALLOC_MMAP_MAX_", "").strip() == "0" and platform.libc_ver()[0] == "glibc"
    return "caching" if _kept or started_caching else "system"


def malloc_mode(environ: Mapping[str, str]) -> str:
    """The allocator mode `NASPRUNE_MALLOC` asks for ('caching' when unset); a clear error for anything else."""
    value = environ.get(ENV, "").strip().lower()
    if value == "":
        return "caching"
    if value not in MODES:
        raise NasPruneError(
            f"{ENV}={environ[ENV]!r}: expected one of {', '.join(MODES)}; unset it for the default (caching: freed "
            "memory is kept for reuse), or set 'system' for glibc's own behaviour"
        )
    return value


def configure(environ: Mapping[str, str]) -> str:
    """Apply the mode `NASPRUNE_MALLOC` asks for; the mode in effect ('system' where it cannot be applied)."""
    if malloc_mode(environ) == "caching":
        keep_freed_memory()
    return current_mode()
