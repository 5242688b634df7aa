"""What a TIFF file says about its physical pixel size, read from an open ``TiffFile``.

One place for the single-section reader (:mod:`.imagefile`) and the volume reader
(:mod:`.ome_tiff`). Sources, first that answers wins per axis: OME-XML ``PhysicalSize*``;
ImageJ metadata (``unit``, the resolution tags in pixels per unit, ``spacing``); the TIFF
resolution tags in centimetres or inches. Implausible values (a 72-dpi default is 353 µm per
pixel) are ignored.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from .meta import META_KEY, unit_to_micrometer

# µm per pixel in x/y outside this range is not microscopy (72/96/300-dpi defaults, garbage)
PLAUSIBLE_PIXEL_UM = (1e-5, 100.0)
# µm between planes outside this range is not a section spacing
PLAUSIBLE_SPACING_UM = (1e-5, 1e4)

_TIFF_UNIT_UM = {2: 25400.0, 3: 1e4}  # ResolutionUnit: inch, centimetre (1: none)


@dataclass(frozen=True)
class PhysicalSize:
    """Physical size of one voxel in µm along x, y and z; None where the file does not say."""

    x: float | None = None
    y: float | None = None
    z: float | None = None


def _plausible(v: float | None, bounds: tuple[float, float]) -> float | None:
    if v is None or not math.isfinite(v):
        return None
    return float(v) if bounds[0] <= v <= bounds[1] else None


def parse_ome_physical_size(xml: str) -> tuple[float | None, float | None, float | None]:
    """(x, y, z) physical pixel size in µm from OME-XML (None where absent or unreadable)."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None, None, None
    pixels = next(
        (el for el in root.iter() if el.tag.endswith("}Pixels") or el.tag == "Pixels"), None
    )
    if pixels is None:
        return None, None, None
    out: list[float | None] = []
    for ax in "XYZ":
        v = pixels.get(f"PhysicalSize{ax}")
        f = unit_to_micrometer(pixels.get(f"PhysicalSize{ax}Unit", "µm"))
        try:
            out.append(float(v) * f if v is not None and f else None)
        except ValueError:
            out.append(None)
    return out[0], out[1], out[2]


def parse_ome_map_annotation(xml: str, key: str = META_KEY) -> str | None:
    """Value of key ``key`` in the OME-XML MapAnnotations (None if absent)."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    for el in root.iter():
        if (el.tag.endswith("}M") or el.tag == "M") and el.get("K") == key:
            return el.text
    return None


def _rational(tags: Any, name: str) -> float | None:
    if name not in tags:
        return None
    value = tags[name].value
    try:
        num, den = value
        return float(num) / float(den) if num and den else None
    except (TypeError, ValueError):
        return None


def tiff_physical_size(tif: Any) -> PhysicalSize:
    """Physical voxel size (µm) of the first series of an open ``tifffile.TiffFile``.

    Parameters
    ----------
    tif
        An open ``tifffile.TiffFile``.

    Returns
    -------
    PhysicalSize
        x, y and z in µm; None for each axis no source states plausibly. y falls back to x.
    """
    x = y = z = None
    if tif.is_ome and tif.ome_metadata:
        ox, oy, oz = parse_ome_physical_size(tif.ome_metadata)
        x = _plausible(ox, PLAUSIBLE_PIXEL_UM)
        y = _plausible(oy, PLAUSIBLE_PIXEL_UM) if x is not None else None
        z = _plausible(oz, PLAUSIBLE_SPACING_UM)
    ij = tif.imagej_metadata or {}
    ij_factor = unit_to_micrometer(ij.get("unit")) if ij else None
    if z is None and ij_factor and ij.get("spacing") is not None:
        try:
            z = _plausible(float(ij["spacing"]) * ij_factor, PLAUSIBLE_SPACING_UM)
        except (TypeError, ValueError):
            z = None
    if x is None:
        series = tif.series[0] if tif.series else None
        page = series.keyframe if series is not None else tif.pages[0]
        tags = page.tags
        if ij_factor:  # ImageJ: the resolution is pixels per `unit`
            um_per_unit = ij_factor
        else:
            unit = int(tags["ResolutionUnit"].value) if "ResolutionUnit" in tags else 2
            um_per_unit = _TIFF_UNIT_UM.get(unit)
        if um_per_unit is not None:
            rx = _rational(tags, "XResolution")
            ry = _rational(tags, "YResolution")
            x = _plausible(um_per_unit / rx if rx else None, PLAUSIBLE_PIXEL_UM)
            y = _plausible(um_per_unit / ry if ry else None, PLAUSIBLE_PIXEL_UM)
            if x is None:
                y = None
    if x is not None and y is None:
        y = x
    return PhysicalSize(x, y, z)
