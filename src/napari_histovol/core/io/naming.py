"""Slice file names: natural order by the last number in a name, z numbers, gaps, name patterns.

A folder of sections is ordered by the last run of digits in each file name (``sec_10.png``
after ``sec_2.png``); that number is the section's z number. Numbers missing between the
first and the last are *gaps*: sections that were lost, damaged or not imaged.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..errors import InputError

_LAST_NUMBER = re.compile(r"(\d+)(?!.*\d)")
_DIGITS = re.compile(r"(\d+)")


def split_stem(name: str) -> tuple[str, str]:
    """Split a file name into stem and extension, treating ``.ome.tif`` like one extension."""
    lower = name.lower()
    for double in (".ome.tiff", ".ome.tif", ".ome.zarr"):
        if lower.endswith(double):
            return name[: -len(double)], name[-len(double) :]
    stem, ext = os.path.splitext(name)
    return stem, ext


def last_number(name: str) -> int | None:
    """The last run of digits in a file's stem as an int, or None if there is none.

    >>> last_number("S003_x.tif"), last_number("sec_10.png"), last_number("scan.tif")
    (3, 10, None)
    """
    stem, _ = split_stem(os.path.basename(name))
    m = _LAST_NUMBER.search(stem)
    return int(m.group(1)) if m else None


def natural_key(name: str) -> tuple:
    """Sort key that orders digit runs by value (``a2`` before ``a10``)."""
    parts = _DIGITS.split(name.lower())
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


@dataclass(frozen=True)
class NamePattern:
    """How the sections of a folder are named: ``{prefix}{z:0{width}d}{suffix}{ext}``.

    ``prefix`` and ``suffix`` are the parts that all names share around their number, so a
    folder of ``lesion_s01_He.jpg, lesion_s03_CD31.jpg`` gives ``lesion_s`` + 2 digits + ``.jpg``.
    """

    prefix: str
    width: int
    suffix: str
    ext: str

    def format(self, z: int) -> str:
        """File name for z number ``z``."""
        return f"{self.prefix}{z:0{self.width}d}{self.suffix}{self.ext}"

    def to_dict(self) -> dict:
        return {"prefix": self.prefix, "width": self.width, "suffix": self.suffix, "ext": self.ext}

    @classmethod
    def from_dict(cls, d: dict) -> NamePattern:
        return cls(str(d["prefix"]), int(d["width"]), str(d["suffix"]), str(d["ext"]))


def _common_prefix(strings: Sequence[str]) -> str:
    return os.path.commonprefix(list(strings))


def _common_suffix(strings: Sequence[str]) -> str:
    return _common_prefix([s[::-1] for s in strings])[::-1]


def infer_pattern(names: Sequence[str]) -> NamePattern:
    """Infer the naming pattern of numbered files (zero padding included).

    Width is the padded width when every name pads its number to the same width, else 1.
    """
    heads, tails, widths, exts = [], [], [], []
    for name in names:
        stem, ext = split_stem(os.path.basename(name))
        m = _LAST_NUMBER.search(stem)
        if m is None:
            raise InputError(f"'{name}' has no number in its name, so it has no z position.")
        heads.append(stem[: m.start()])
        tails.append(stem[m.end() :])
        widths.append(len(m.group(1)))
        exts.append(ext)
    prefix = _common_prefix(heads)
    # Keep a prefix from ending in digits: those would read as part of the number.
    prefix = prefix.rstrip("0123456789")
    suffix = _common_suffix(tails)
    suffix = suffix.lstrip("0123456789")
    padded = [w for name, w in zip(names, widths, strict=True) if _is_zero_padded(name)]
    width = max(padded) if padded else 1
    ext = max(set(exts), key=exts.count) if exts else ".tif"
    return NamePattern(prefix, width, suffix, ext)


def _is_zero_padded(name: str) -> bool:
    stem, _ = split_stem(os.path.basename(name))
    m = _LAST_NUMBER.search(stem)
    return bool(m) and len(m.group(1)) > 1 and m.group(1).startswith("0")


def find_gaps(z_numbers: Iterable[int]) -> tuple[int, ...]:
    """Numbers missing between the smallest and largest z number.

    >>> find_gaps([1, 2, 10])
    (3, 4, 5, 6, 7, 8, 9)
    """
    zs = sorted(set(z_numbers))
    if not zs:
        return ()
    present = set(zs)
    return tuple(z for z in range(zs[0], zs[-1] + 1) if z not in present)


def format_ranges(numbers: Iterable[int]) -> str:
    """Compact text for a set of ints: ``1-5, 7, 9-10``."""
    ns = sorted(set(numbers))
    if not ns:
        return "none"
    out, start, prev = [], ns[0], ns[0]
    for n in ns[1:] + [None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(out)


def order_slices(names: Sequence[str]) -> tuple[list[str], list[int]]:
    """Order file names by their last number and return (names, z numbers).

    Raises
    ------
    InputError
        When some names have numbers and others do not, or two files share a number
        (two series in one folder).
    """
    numbered = [(last_number(n), n) for n in names]
    without = [n for z, n in numbered if z is None]
    if without and len(without) < len(names):
        raise InputError(
            f"'{os.path.basename(without[0])}' has no number in its name while other files do; "
            "rename it or move it out of the folder."
        )
    if without:
        # No file has a number: fall back to natural order, z = 0..n-1 (the caller warns).
        ordered = sorted(names, key=natural_key)
        return ordered, list(range(len(ordered)))
    by_z: dict[int, str] = {}
    for z, n in sorted(numbered, key=lambda t: (t[0], natural_key(t[1]))):
        if z in by_z:
            raise InputError(
                f"'{os.path.basename(by_z[z])}' and '{os.path.basename(n)}' both have the z number "
                f"{z}: the folder seems to mix two series; put each series in its own folder."
            )
        by_z[z] = n
    zs = sorted(by_z)
    return [by_z[z] for z in zs], zs
