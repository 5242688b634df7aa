"""Slice file names: section numbers, natural order, gaps, name patterns.

A folder's z number for each file is the number that varies across the folder's names: the
part all names share at the start and at the end is set aside (never cutting into a run of
digits), and the last run of digits of what remains is the section number. So
``29-041-Izd2-w35-CD31-3-les3.jpg`` and ``29-041-Izd2-w35-Ki67-7-les3.jpg`` are sections 3 and 7
(not "les3", shared by all, nor the stain's "31" or "67"), and ``sec_10.png`` comes after
``sec_2.png``. Numbers missing between the first and the last are *gaps*: sections that were
lost, damaged or not imaged.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..errors import InputError

_LAST_NUMBER = re.compile(r"(\d+)(?!.*\d)")
_DIGITS = re.compile(r"(\d+)")

# More missing numbers than this between the first and the last section is not a numbering of
# sections (a date, a scanner id): refused before anything is built from it.
MAX_MISSING_Z = 100_000
# A z number above this is not a section number; it would also overflow int64 paths and lose
# precision as a JSON number (2**53).
MAX_Z_NUMBER = 2**53 - 1


def split_stem(name: str) -> tuple[str, str]:
    """Split a file name into stem and extension, treating ``.ome.tif`` like one extension."""
    lower = name.lower()
    for double in (".ome.tiff", ".ome.tif", ".ome.zarr"):
        if lower.endswith(double):
            return name[: -len(double)], name[-len(double) :]
    stem, ext = os.path.splitext(name)
    return stem, ext


def _stem(name: str) -> str:
    return split_stem(os.path.basename(os.fspath(name)))[0]


def shared_ends(stems: Sequence[str]) -> tuple[int, int]:
    """Lengths of the start and the end that all ``stems`` share, backed off so that neither
    cuts into a run of digits (``sec_1`` of ``sec_10``/``sec_11`` backs off to ``sec_``).

    One stem shares nothing: its whole stem is what varies.
    """
    if len(stems) < 2:
        return 0, 0
    pre = len(os.path.commonprefix(list(stems)))
    while (
        pre
        and stems[0][pre - 1].isdigit()
        and any(len(s) > pre and s[pre].isdigit() for s in stems)
    ):
        pre -= 1
    rests = [s[pre:] for s in stems]
    suf = len(os.path.commonprefix([r[::-1] for r in rests]))
    while (
        suf
        and rests[0][-suf].isdigit()
        and any(len(r) > suf and r[-suf - 1].isdigit() for r in rests)
    ):
        suf -= 1
    return pre, suf


def _span_between(stem: str, pre: int, suf: int) -> tuple[int, int] | None:
    """Start and end (in ``stem``) of the last run of digits between ``pre`` and ``-suf``."""
    middle = stem[pre : len(stem) - suf]
    m = _LAST_NUMBER.search(middle)
    return (pre + m.start(), pre + m.end()) if m else None


def number_spans(names: Sequence[str]) -> list[tuple[int, int] | None]:
    """Where each name's section number lies in its stem (start, end), or None when the part of
    the name that varies across ``names`` holds no digits.

    When no name's varying part holds digits, each stem's last run of digits is taken
    instead (names that differ only in letters around one shared number: two series).
    """
    stems = [_stem(n) for n in names]
    pre, suf = shared_ends(stems)
    spans = [_span_between(s, pre, suf) for s in stems]
    if len(stems) > 1 and all(sp is None for sp in spans):
        spans = [_span_between(s, 0, 0) for s in stems]
    return spans


def section_numbers(names: Sequence[str]) -> list[int | None]:
    """The z number of every file of a folder: the last run of digits of the part of its name
    that varies across ``names`` (None for a name whose varying part has no digits).

    This is the one rule that maps names to z numbers: ordering, gaps, name patterns and the
    naming of written planes all use it.

    >>> section_numbers(["a-CD31-3-les3.jpg", "a-Ki67-7-les3.jpg", "a-He-les3.jpg"])
    [3, 7, None]
    >>> section_numbers(["sec_10.png", "sec_11.png"]), section_numbers(["scan.tif"])
    ([10, 11], [None])
    """
    out: list[int | None] = []
    for name, span in zip(names, number_spans(names), strict=True):
        out.append(None if span is None else int(_stem(name)[span[0] : span[1]]))
    return out


def number_in_pattern(name: str, pattern: NamePattern) -> int | None:
    """The section number of ``name`` read with a folder's pattern as the start and end the
    folder's names share (the rule of :func:`section_numbers`, with its context remembered);
    None when the name does not fit the pattern or has no digits between its ends."""
    stem = _stem(name)
    pre, suf = len(pattern.prefix), len(pattern.suffix)
    if pre + suf > len(stem) or not (
        stem.startswith(pattern.prefix) and stem.endswith(pattern.suffix)
    ):
        return None
    span = _span_between(stem, pre, suf)
    return None if span is None else int(stem[span[0] : span[1]])


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

    The number is each name's section number (:func:`section_numbers`); the pattern keeps
    what all names share before and after it, so ``29-041-Izd2-w35-CD31-3-les3.jpg`` and
    ``29-041-Izd2-w35-Ki67-7-les3.jpg`` give ``29-041-Izd2-w35-`` + number + ``-les3.jpg``.
    Width is the padded width when names pad their numbers with zeros, else 1.
    """
    heads, tails, digits, exts = [], [], [], []
    for name, span in zip(names, number_spans(names), strict=True):
        stem, ext = split_stem(os.path.basename(name))
        if span is None:
            raise InputError(
                f"'{os.path.basename(name)}' has no section number in its name, so it has no z "
                "position; add its section number to its name."
            )
        heads.append(stem[: span[0]])
        tails.append(stem[span[1] :])
        digits.append(stem[span[0] : span[1]])
        exts.append(ext)
    prefix = _common_prefix(heads)
    # Keep a prefix from ending in digits: those would read as part of the number.
    prefix = prefix.rstrip("0123456789")
    suffix = _common_suffix(tails)
    suffix = suffix.lstrip("0123456789")
    padded = [len(d) for d in digits if len(d) > 1 and d.startswith("0")]
    width = max(padded) if padded else 1
    ext = max(set(exts), key=exts.count) if exts else ".tif"
    return NamePattern(prefix, width, suffix, ext)


def find_gaps(
    z_numbers: Iterable[int], *, max_missing: int = MAX_MISSING_Z, source: str | None = None
) -> tuple[int, ...]:
    """Numbers missing between the smallest and largest z number.

    The span is checked before any missing number is listed, so a numbering that leaves a
    huge range empty (z 1, 2 and 1000000) is refused instead of exhausting memory.

    Parameters
    ----------
    z_numbers
        The z numbers present.
    max_missing
        More missing numbers than this is an error.
    source
        The folder or file the numbers come from, for the message.

    Raises
    ------
    InputError
        When more than ``max_missing`` numbers are missing, or a number is too large to be a
        section number.

    >>> find_gaps([1, 2, 10])
    (3, 4, 5, 6, 7, 8, 9)
    """
    zs = sorted(set(int(z) for z in z_numbers))
    if not zs:
        return ()
    check_z_numbers(zs, max_missing=max_missing, source=source)
    present = set(zs)
    return tuple(z for z in range(zs[0], zs[-1] + 1) if z not in present)


def check_z_numbers(
    z_numbers: Iterable[int], *, max_missing: int = MAX_MISSING_Z, source: str | None = None
) -> None:
    """Refuse z numbers that cannot be section numbers: beyond :data:`MAX_Z_NUMBER` (or below
    zero), or so spread out that more than ``max_missing`` numbers are missing between them.

    Cheap (no range is materialised); call it before anything is built from the numbers.
    """
    zs = sorted(set(int(z) for z in z_numbers))
    if not zs:
        return
    where = f" in '{source}'" if source else ""
    odd = next((z for z in (zs[0], zs[-1]) if z < 0 or z > MAX_Z_NUMBER), None)
    if odd is not None:
        raise InputError(
            f"The z number {_short(odd)}{where} is too large to be a section number; rename "
            "the files with their section numbers."
        )
    missing = (zs[-1] - zs[0] + 1) - len(zs)
    if missing > max_missing:
        raise InputError(
            f"The z numbers{where} run from {zs[0]} to {zs[-1]} over {len(zs)} sections, which "
            f"leaves {missing} numbers missing (more than {max_missing}); rename the files with "
            "their section numbers."
        )


def _short(n: int) -> str:
    t = str(n)
    return t if len(t) <= 24 else f"{t[:10]}...({len(t)} digits)"


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
    """Order the files of a folder by their section numbers and return (names, z numbers).

    The section number is the last run of digits of the part of the name that varies across
    the folder (:func:`section_numbers`). A single file, or files without any number, keep
    their natural order (z = 0, 1, ... when no name has a number).

    Raises
    ------
    InputError
        When some names have a section number and others do not, when two files share a
        number (two series in one folder), or when a number is too large to be a section
        number.
    """
    numbers = section_numbers(names)
    without = [n for z, n in zip(numbers, names, strict=True) if z is None]
    if without and len(without) < len(names):
        raise InputError(
            f"'{os.path.basename(without[0])}' has no section number in its name while the other "
            "files in its folder do; add its section number to its name or move it out of the "
            "folder."
        )
    if without:
        # No file has a number: fall back to natural order, z = 0..n-1 (the caller warns).
        ordered = sorted(names, key=natural_key)
        return ordered, list(range(len(ordered)))
    for z, n in zip(numbers, names, strict=True):
        if z is not None and z > MAX_Z_NUMBER:
            raise InputError(
                f"'{os.path.basename(n)}' carries the number {_short(z)} where its section "
                "number should be, too large to be one; rename the files with their section "
                "numbers."
            )
    by_z: dict[int, str] = {}
    for z, n in sorted(zip(numbers, names, strict=True), key=lambda t: (t[0], natural_key(t[1]))):
        if z in by_z:
            raise InputError(
                f"'{os.path.basename(by_z[z])}' and '{os.path.basename(n)}' both have the z number "
                f"{z}: the folder seems to mix two series; put each series in its own folder."
            )
        by_z[z] = n
    zs = sorted(by_z)
    return [by_z[z] for z in zs], zs
