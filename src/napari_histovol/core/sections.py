"""What a plane of a volume is, in words a pathologist reads: its section number, stain and
file, or, for a generated plane, the two sections it was made from.

The napari panel shows :func:`plane_label` for the plane under the slider; the words come from
the volume's metadata (z numbers, files, synthetic flags and the interpolation's per-plane
sources), so they travel with the volume through every format histovol writes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .io.meta import VolumeMeta
from .io.naming import shared_ends, split_stem

_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9]*|\d+")


def stain_names(files: Sequence[str]) -> list[str]:
    """The stain (or any other label that varies across a folder) in each file name.

    The start and end all names share are set aside, as for section numbers; what is left
    is split into words, and the words with a letter other than a run of digits plus the
    section-number word are kept: ``lung-lesion3_CD31_s03.jpg`` among the bundled sample gives
    ``CD31``, ANHIR's ``29-041-Izd2-w35-Ki67-7-les3.jpg`` gives ``Ki67``. Empty when nothing
    but the number varies (``sec_001.png``) or the name is empty.
    """
    stems = [split_stem(f)[0] if f else "" for f in files]
    named = [s for s in stems if s]
    pre, suf = shared_ends(named) if len(named) > 1 else (0, 0)
    out = []
    for s in stems:
        if not s or len(named) < 2:
            out.append("")
            continue
        middle = s[pre : len(s) - suf]
        words = _TOKEN.findall(middle)
        # the last word holding digits is the section number (s03, 3): drop it
        numbered = [i for i, w in enumerate(words) if any(c.isdigit() for c in w)]
        if numbered and (
            words[numbered[-1]].isdigit() or re.fullmatch(r"[A-Za-z]\d+", words[numbered[-1]])
        ):
            words.pop(numbered[-1])
        out.append(" ".join(w for w in words if not w.isdigit()))
    return out


def source_files(meta: VolumeMeta) -> dict[int, str]:
    """Section number -> file name of the measured sections a volume was made from (through
    every interpolation or reconstruction before it)."""
    interp = meta.extra.get("interpolation") or {}
    zs, files = interp.get("source_z"), interp.get("source_files")
    if zs and files and len(zs) == len(files):
        return {int(z): str(f) for z, f in zip(zs, files, strict=True)}
    m = meta.with_planes(len(meta.z_numbers))
    sources = recorded_plane_sources(m)
    if sources is not None:
        return {
            int(src["source_z"]): f
            for src, f in zip(sources, m.files, strict=True)
            if "source_z" in src and f
        }
    return {int(z): f for z, f in zip(m.z_numbers, m.files, strict=True) if f}


def recorded_plane_sources(meta: VolumeMeta) -> list[dict] | None:
    """The per-plane sources a volume records (``extra["planes"]``: ``{"source_z": z}`` or
    ``{"between": [z_a, z_b], "t": t}``), one per plane, or None where it records none."""
    m = meta.with_planes(len(meta.z_numbers))
    sources = m.extra.get("planes")
    return sources if sources and len(sources) == len(m.z_numbers) else None


def chain_plane_sources(meta: VolumeMeta, planes: list[dict]) -> list[dict]:
    """Per-plane sources written in terms of the planes of ``meta`` (``{"source_z": z}``, or
    ``{"between": [z_a, z_b], "t": t}`` with z numbers of ``meta``), rewritten in terms of the
    measured sections ``meta`` itself was made from, when it records them (a built or
    interpolated volume, interpolated or reconstructed again).

    A plane that copies a generated plane of ``meta`` takes that plane's sources; a plane
    generated between two of its planes lies at the same share of the way between their
    positions in the section numbering, and is named by the two measured sections around
    that position. Without this, a built volume interpolated again called its generated planes
    measured sections and named a blend of He and CD31 "section 2" (a helper's journey).

    Parameters
    ----------
    meta
        The metadata of the volume the planes were made from.
    planes
        One entry per new plane, in ``meta``'s z numbers.

    Returns
    -------
    list of dict
        The entries in the section numbers of the measured sections (``planes`` itself when
        ``meta`` records no per-plane sources).
    """
    src = recorded_plane_sources(meta)
    if src is None:
        return planes
    index = {int(z): i for i, z in enumerate(meta.z_numbers)}

    def position(i: int) -> float:
        s = src[i]
        if "source_z" in s:
            return float(s["source_z"])
        a, b = (float(v) for v in s["between"])
        return a + float(s["t"]) * (b - a)

    measured = sorted(
        {int(s["source_z"]) for s in src if "source_z" in s}
        | {int(v) for s in src if "between" in s for v in s["between"]}
    )
    out = []
    for entry in planes:
        if "source_z" in entry:
            out.append(dict(src[index[int(entry["source_z"])]]))
            continue
        a, b = (index[int(v)] for v in entry["between"])
        p = position(a) + float(entry["t"]) * (position(b) - position(a))
        below = [v for v in measured if v < p - 1e-6]
        above = [v for v in measured if v > p + 1e-6]
        at = [v for v in measured if abs(v - p) <= 1e-6]
        if at and "replaces" not in entry:
            below, above = at, at  # exactly on a section: named as between it and itself
        if not below or not above:
            out.append(dict(entry))
            continue
        lo, hi = below[-1], above[0]
        t = 0.0 if hi == lo else (p - lo) / (hi - lo)
        chained = {"between": [int(lo), int(hi)], "t": round(float(t), 6)}
        if "replaces" in entry:
            r = index.get(int(entry["replaces"]))
            if r is not None and "source_z" in src[r]:
                chained["replaces"] = int(src[r]["source_z"])
        out.append(chained)
    return out


def plane_label(meta: VolumeMeta, index: int) -> str:
    """One line naming plane ``index`` of a volume, by section number (the number in the
    file names) rather than by plane index.

    Measured: ``section 3 · CD31 · lung-lesion3_CD31_s03.jpg`` (``plane z 5 · section 3 · ...``
    when frames between sections renumbered the planes); generated: ``plane z 2 · synthetic
    between section 1 (He) and section 3 (CD31), t = 0.25``; a regenerated damaged section:
    ``plane z 7 · section 4 regenerated from section 3 (CD31) and section 5 (Cc10), t = 0.50``.
    """
    m = meta.with_planes(len(meta.z_numbers))
    if not 0 <= index < len(m.z_numbers):
        return ""
    z = m.z_numbers[index]
    by_z = source_files(m)
    stains = dict(zip(by_z, stain_names(list(by_z.values())), strict=True))
    sources = recorded_plane_sources(m)
    src = sources[index] if sources is not None else None

    def section(v: int) -> str:
        return f"section {v}" + (f" ({stains[v]})" if stains.get(v) else "")

    if m.synthetic[index]:
        if src and "between" in src:
            a, b = (section(int(v)) for v in src["between"])
            how = (
                f"section {src['replaces']} regenerated from"
                if "replaces" in src
                else "synthetic between"
            )
            # planes renumbered by interpolation or isotropic reconstruction (which records
            # no frames between: its planes read "section 7 (missing)" beside section 7)
            renumbered = m.planes_per_section != 1
            where = f"plane z {z}" if renumbered or "replaces" in src else f"section {z} (missing)"
            return f"{where} · {how} {a} and {b}, t = {float(src['t']):.2f}"
        return f"plane z {z} · synthetic (generated plane)"
    source_z = int(src["source_z"]) if src and "source_z" in src else z
    parts = [] if source_z == z else [f"plane z {z}"]
    parts.append(f"section {source_z}")
    if stains.get(source_z):
        parts.append(stains[source_z])
    f = m.files[index] or by_z.get(source_z, "")
    if f:
        parts.append(f)
    return " · ".join(parts)


def missing_label(z: int) -> str:
    """The line for a z number no section holds (a gap)."""
    return f"section {z} · missing (a gap in the numbering)"


__all__ = [
    "chain_plane_sources",
    "missing_label",
    "plane_label",
    "recorded_plane_sources",
    "source_files",
    "stain_names",
]
