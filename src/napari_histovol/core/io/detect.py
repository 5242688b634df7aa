"""Format detection and the two entry points: :func:`read_volume` and :func:`write_volume`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..progress import ProgressGenerator, drain
from .volume import Volume

FORMATS = ("folder", "ome-zarr", "ome-tiff", "npy")
#: single image files: a section, not a stack (:func:`read_volume_or_image` reads one as a
#: one-plane volume)
SINGLE_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def detect_format(path: str | os.PathLike, *, for_output: bool = False) -> str:
    """Which of :data:`FORMATS` a path is (input) or should be written as (output).

    Outputs are told by their suffix: ``.ome.zarr``/``.zarr``, ``.ome.tif``/``.tif``/``.tiff``,
    ``.npy``; anything else is a folder of slices.
    """
    p = Path(os.fspath(path)).expanduser()
    name = p.name.lower()
    if name.endswith((".ome.zarr", ".zarr")):
        return "ome-zarr"
    if name.endswith((".tif", ".tiff")):
        return "ome-tiff"
    if name.endswith(".npy"):
        return "npy"
    if for_output:
        if name.endswith((".png", ".jpg", ".jpeg", ".bmp", ".npz", ".h5", ".hdf5", ".nii", ".gz")):
            raise InputError(
                f"Cannot write a volume to '{p.name}'; use .ome.zarr, .ome.tif, .npy or a folder name."
            )
        return "folder"
    if p.is_dir():
        from .ome_zarr import is_ome_zarr

        return "ome-zarr" if is_ome_zarr(p) else "folder"
    if not p.exists():
        raise InputError(f"'{p}' does not exist.")
    if name.endswith(SINGLE_IMAGE_SUFFIXES):
        raise InputError(f"'{p.name}' is a single image; give the folder that holds the sections.")
    raise InputError(
        f"'{p.name}' is not a format napari-histovol reads (a folder of sections, .ome.zarr, "
        ".ome.tif/.tif or .npy)."
    )


def read_volume(
    path: str | os.PathLike,
    *,
    on_corrupt: str = "error",
    pixel_size: float | None = None,
    section_spacing: float | None = None,
) -> Volume:
    """Open any supported input lazily: a slice folder, OME-Zarr, (OME-)TIFF or ``.npy``.

    ``pixel_size`` and ``section_spacing`` (µm) override what the data says.
    """
    fmt = detect_format(path)
    if fmt == "folder":
        from .slices import read_slice_folder

        return read_slice_folder(
            path, on_corrupt=on_corrupt, pixel_size=pixel_size, section_spacing=section_spacing
        )
    if fmt == "ome-zarr":
        from .ome_zarr import read_ome_zarr

        vol = read_ome_zarr(path)
    elif fmt == "ome-tiff":
        from .ome_tiff import read_ome_tiff

        vol = read_ome_tiff(path)
    else:
        from .npy import read_npy

        vol = read_npy(path)
    return _with_scale(vol, pixel_size, section_spacing)


def _with_scale(vol: Volume, pixel_size: float | None, section_spacing: float | None) -> Volume:
    """``vol`` with the pixel size and section spacing (µm) given in place of its own."""
    if pixel_size is None and section_spacing is None:
        return vol
    meta = vol.meta.with_scale(pixel_size=pixel_size, section_spacing=section_spacing)
    return Volume(vol.data, meta, vol.levels)


def is_single_image(path: str | os.PathLike) -> bool:
    """Whether ``path`` is one image file (.png, .jpg, .bmp), not a volume or a folder."""
    p = Path(os.fspath(path)).expanduser()
    return p.is_file() and p.name.lower().endswith(SINGLE_IMAGE_SUFFIXES)


def read_volume_or_image(
    path: str | os.PathLike,
    *,
    on_corrupt: str = "error",
    pixel_size: float | None = None,
    section_spacing: float | None = None,
) -> Volume:
    """:func:`read_volume`, or a single image file (a mosaic ``histovol stitch`` wrote as
    .png or .jpg) as a one-plane volume; the stages that take sections refuse a single image,
    the places that show, describe or convert an output (``info``, ``convert``, the Stitch
    tab) take it."""
    if is_single_image(path):
        from .slices import read_single_image

        return _with_scale(read_single_image(path), pixel_size, section_spacing)
    return read_volume(
        path, on_corrupt=on_corrupt, pixel_size=pixel_size, section_spacing=section_spacing
    )


_WRITER_OPTIONS = {
    "ome-zarr": {
        "ngff_version",
        "n_levels",
        "xy_chunk",
        "compression",
        "compression_level",
        "workers",
        "overwrite",
        "block_bytes",
        "resume_key",
        "client",
    },
    "ome-tiff": {"n_levels", "tile", "compression", "compression_level", "workers", "overwrite"},
    "npy": {"overwrite", "workers"},
    "folder": {"pattern", "ext", "overwrite"},
}


def writer_accepts(fmt: str, option: str) -> bool:
    """Whether the writer of format ``fmt`` (one of :data:`FORMATS`) takes keyword ``option``."""
    return option in _WRITER_OPTIONS.get(fmt, ())


def iter_write_volume(
    volume: Volume, out: str | os.PathLike, *, format: str | None = None, **options: Any
) -> ProgressGenerator[Path]:
    """Write a volume in the format told by ``out``'s suffix (or ``format``), with progress.

    Options that do not apply to the chosen format (``None`` values) are ignored; others
    raise a clear error.
    """
    fmt = format or detect_format(out, for_output=True)
    if fmt not in FORMATS:
        raise InputError(f"Unknown output format {fmt!r}; use one of {', '.join(FORMATS)}.")
    opts = {k: v for k, v in options.items() if v is not None}
    unknown = set(opts) - _WRITER_OPTIONS[fmt]
    if unknown:
        raise InputError(
            f"The option(s) {', '.join(sorted(unknown))} do not apply to {fmt} output."
        )
    if fmt == "ome-zarr":
        from .ome_zarr import iter_write_ome_zarr as w
    elif fmt == "ome-tiff":
        from .ome_tiff import iter_write_ome_tiff as w
    elif fmt == "npy":
        from .npy import iter_write_npy as w
    else:
        from .slices import iter_write_slice_folder as w
    return (yield from w(volume, out, **opts))


def write_volume(
    volume: Volume, out: str | os.PathLike, *, format: str | None = None, **options: Any
) -> Path:
    """Write a volume (see :func:`iter_write_volume`) and return the output path."""
    return drain(iter_write_volume(volume, out, format=format, **options))
