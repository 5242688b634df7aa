"""Readers and writers: slice folders, OME-Zarr, OME-TIFF, ``.npy``; format detection."""

from .detect import FORMATS, detect_format, iter_write_volume, read_volume, write_volume
from .meta import VolumeMeta
from .naming import (
    NamePattern,
    check_z_numbers,
    find_gaps,
    format_ranges,
    natural_key,
    order_slices,
    section_numbers,
)
from .volume import Volume

__all__ = [
    "FORMATS",
    "NamePattern",
    "Volume",
    "VolumeMeta",
    "check_z_numbers",
    "detect_format",
    "find_gaps",
    "format_ranges",
    "iter_write_volume",
    "natural_key",
    "order_slices",
    "read_volume",
    "section_numbers",
    "write_volume",
]
