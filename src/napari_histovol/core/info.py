"""What a folder or volume holds: the data behind ``histovol info``."""

from __future__ import annotations

import os
from typing import Any

from .io.detect import detect_format, read_volume
from .io.naming import format_ranges


def describe(path: str | os.PathLike, *, on_corrupt: str = "error") -> dict[str, Any]:
    """A JSON-able summary of ``path``: format, count, shape, dtype, z numbers, gaps, scale."""
    fmt = detect_format(path)
    vol = read_volume(path, on_corrupt=on_corrupt)
    m = vol.meta
    return {
        "path": str(path),
        "format": fmt,
        "planes": int(vol.shape[0]),
        "shape": [int(s) for s in vol.shape],
        "axes": m.axes,
        "dtype": str(vol.dtype),
        "rgb": m.rgb,
        "levels": [[int(s) for s in lv.shape] for lv in vol.levels],
        "scale_um": list(m.scale) if m.unit == "micrometer" else None,
        "scale": list(m.scale),
        "unit": m.unit,
        "pixel_size_known": m.scale_known,
        "section_spacing_known": m.spacing_known,
        "z_numbers": list(m.z_numbers),
        "gaps": list(m.gaps),
        "synthetic_z": list(m.synthetic_z),
        "files": list(m.files) if fmt == "folder" else None,
        "naming_pattern": m.pattern.to_dict() if m.pattern else None,
        "bytes": int(vol.nbytes),
    }


def format_description(d: dict[str, Any]) -> str:
    """Human-readable lines for :func:`describe`'s dict."""
    gb = d["bytes"] / 1e9
    size = f"{gb:.2f} GB" if gb >= 0.1 else f"{d['bytes'] / 1e6:.1f} MB"
    lines = [
        f"{d['path']}  ({d['format']})",
        f"  planes     {d['planes']}" + ("" if d["planes"] > 1 else "  (a single section)"),
        f"  shape      {' x '.join(map(str, d['shape']))}  ({d['axes']}, {d['dtype']}{', RGB' if d['rgb'] else ''}, {size})",
    ]
    if len(d["levels"]) > 1:
        lines.append(
            f"  levels     {len(d['levels'])}: "
            + ", ".join("x".join(map(str, lv[1:3])) for lv in d["levels"])
        )
    z, y, x = d["scale"]
    if d["unit"] == "micrometer":
        px = f"{x:g} x {y:g} µm" if d["pixel_size_known"] else "unknown (pass --pixel-size)"
        sp = f"{z:g} µm" if d["section_spacing_known"] else "unknown (pass --section-spacing)"
    else:
        px, sp = "unknown (pass --pixel-size)", "unknown (pass --section-spacing)"
    lines += [f"  pixel size {px}", f"  spacing    {sp}"]
    lines.append(f"  z numbers  {format_ranges(d['z_numbers'])}")
    gaps = d["gaps"]
    lines.append(
        f"  gaps       {format_ranges(gaps)}" + (f"  ({len(gaps)} missing)" if gaps else "")
    )
    if d["synthetic_z"]:
        lines.append(f"  synthetic  {format_ranges(d['synthetic_z'])}  (generated planes)")
    if d.get("naming_pattern"):
        p = d["naming_pattern"]
        lines.append(f"  naming     {p['prefix']}{'#' * p['width']}{p['suffix']}{p['ext']}")
    return "\n".join(lines)
