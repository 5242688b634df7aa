"""Readers and writers: slice folders, OME-Zarr, OME-TIFF, ``.npy``; format detection."""

from .detect import FORMATS, detect_format, iter_write_volume, read_volume, write_volume
from .meta import VolumeMeta
from .naming import NamePattern, find_gaps, format_ranges, last_number, natural_key, order_slices
from .volume import Volume

__all__ = [
    "FORMATS",
    "NamePattern",
    "Volume",
    "VolumeMeta",
    "detect_format",
    "find_gaps",
    "format_ranges",
    "iter_write_volume",
    "last_number",
    "natural_key",
    "order_slices",
    "read_volume",
    "write_volume",
]
