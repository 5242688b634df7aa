"""Bounds checked before work starts: memory a decoded image needs against memory available.

A header can declare an image far larger than the machine can hold (a 200000-pixel side is
112 GiB once decoded); readers compare what decoding would allocate with what is available
and refuse in one sentence instead of dying with a ``MemoryError`` (or being killed).
"""

from __future__ import annotations

import os
from pathlib import Path

# used when the platform says nothing about its memory
_FALLBACK_AVAILABLE = 8 * 2**30


def available_memory() -> int:
    """Bytes of memory this process can still allocate (an estimate).

    ``MemAvailable`` from ``/proc/meminfo`` (Linux), bounded by a cgroup v2 memory limit
    where one applies; else the free physical pages the OS reports; else 8 GiB.
    """
    found: list[int] = []
    try:
        for line in (
            Path("/proc/meminfo").read_text(encoding="ascii", errors="replace").splitlines()
        ):
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
                break
    except (OSError, ValueError, IndexError):
        pass
    try:
        cgroup = Path("/sys/fs/cgroup")
        limit = (cgroup / "memory.max").read_text(encoding="ascii").strip()
        current = (cgroup / "memory.current").read_text(encoding="ascii").strip()
        if limit.isdigit() and current.isdigit():
            found.append(max(0, int(limit) - int(current)))
    except OSError:
        pass
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (AttributeError, OSError, ValueError):
            pass
    return min(found) if found else _FALLBACK_AVAILABLE


def format_bytes(n: float) -> str:
    """``12.3 GiB``-style text for a byte count."""
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def fits_in_memory(nbytes: int) -> tuple[bool, int]:
    """Whether ``nbytes`` can be allocated now, and the bytes available."""
    avail = available_memory()
    return nbytes <= avail, avail
