"""What a folder or volume holds: the data behind ``histovol info``."""

from __future__ import annotations

import os
from typing import Any

from .io.detect import detect_format, is_single_image, read_volume_or_image


def describe(path: str | os.PathLike, *, on_corrupt: str = "error") -> dict[str, Any]:
    """A JSON-able summary of ``path``: format, count, shape, dtype, z numbers, gaps, scale."""
    # a mosaic histovol stitch wrote as .png or .jpg is one plane (other commands take a
    # folder of such sections)
    gaussians = None
    if str(path).lower().endswith(".hgm"):
        # what compress wrote (histovol decompress gives it back): described as it decodes,
        # without decoding it (`info` refused it as a format napari-histovol does not read)
        from .gaussians import decompress_volume, read_hgm

        fmt = "hgm"
        mix, header = read_hgm(path)
        vol, gaussians = decompress_volume(mix, header), len(mix)
    else:
        fmt = "image" if is_single_image(path) else detect_format(path)
        vol = read_volume_or_image(path, on_corrupt=on_corrupt)
    m = vol.meta
    out = {
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
    if gaussians is not None:
        out["gaussians"] = gaussians
        out["file_bytes"] = os.path.getsize(path)
    return out
