"""Compress a volume into an ``.hgm`` file with its side files, and decode one to a volume file.

These are what the command line (and any script) calls: every output is checked before any
work starts, sizes that cannot finish are refused up front, and the files are written
atomically (all of them or none).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..io.atomic import atomic_outputs, check_output
from ..io.volume import Volume
from ..progress import Progress, ProgressGenerator
from .cancel import CancelSignal
from .compress import CompressResult, fit_report, iter_compress
from .config import FitConfig
from .decompress import (
    DecodeSize,
    check_decode_size,
    decompress_volume,
    parse_roi,
    volume_fields,
)
from .hgm import read_hgm


def fit_side_files(out: str | os.PathLike) -> tuple[Path, Path]:
    """The fit settings (``NAME.fit.yaml``) and report (``NAME.fit.json``) beside ``NAME.hgm``."""
    base = Path(os.fspath(out)).expanduser()
    stem = base.name[: -len(".hgm")] if base.name.lower().endswith(".hgm") else base.name
    return base.with_name(stem + ".fit.yaml"), base.with_name(stem + ".fit.json")


def iter_compress_file(
    volume: Volume,
    out: str | os.PathLike,
    config: FitConfig,
    *,
    overwrite: bool = False,
    workers: int | None = None,
    scheduler: Any = None,
    cancel: CancelSignal | None = None,
    source: str | None = None,
) -> ProgressGenerator[tuple[CompressResult, dict]]:
    """Fit a volume and write ``OUT.hgm``, its settings ``OUT.fit.yaml`` and report ``OUT.fit.json``.

    The three outputs are checked before the volume is read, the volume is read once (fitted
    and measured against the same copy), and the files are written together atomically.

    Parameters
    ----------
    volume
        A single-channel 3D volume (its voxel size and unit go into the file).
    out
        The ``.hgm`` file to write.
    config
        Budget and fit settings.
    overwrite
        Whether existing outputs may be replaced.
    workers, scheduler, cancel
        As in :func:`.compress.iter_compress`.
    source
        Names the input in the report (for example its path).

    Returns
    -------
    tuple
        The :class:`CompressResult` and the report written to ``OUT.fit.json``.
    """
    if not str(out).lower().endswith(".hgm"):
        raise InputError(f"The output '{out}' must end in .hgm.")
    yaml_path, json_path = fit_side_files(out)
    for path in (out, yaml_path, json_path):
        check_output(path, overwrite=overwrite, kind="file")
    name = f"'{source}'" if source else "The volume"
    if volume.meta.rgb or volume.data.ndim != 3:
        raise InputError(
            f"{name} is not a single-channel 3D volume (shape {tuple(volume.shape)}); convert "
            "one channel to gray first."
        )
    original = np.asarray(volume.data)  # read once: fitted and measured against
    result = yield from iter_compress(
        original,
        config,
        **volume_fields(volume.meta),
        workers=workers,
        scheduler=scheduler,
        cancel=cancel,
    )
    yield Progress(1, 1, "measuring the reconstruction", "fit")
    report = {
        "input": source,
        "output": str(out),
        **fit_report(result, original),
        "history": result.history,
    }
    with atomic_outputs([out, yaml_path, json_path], overwrite=overwrite) as (hgm, yml, js):
        hgm.write_bytes(result.data)
        yml.write_text(result.config.yaml_text(), encoding="utf-8")
        js.write_text(json.dumps(report, indent=1), encoding="utf-8")
    return result, report


def iter_decompress_file(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    zoom=1.0,
    roi=None,
    overwrite: bool = False,
    **write_options: Any,
) -> ProgressGenerator[tuple[Path, DecodeSize]]:
    """Decode an ``.hgm`` file (whole, a region, another resolution) into a volume file.

    The output's shape and raw size are checked against what any output can hold and against
    the free space of ``out``'s disk before anything is evaluated (:func:`check_decode_size`).

    Parameters
    ----------
    src
        The ``.hgm`` file.
    out
        The output; its suffix tells the format (``.ome.zarr``, ``.ome.tif``, ``.npy``, or a
        folder of slices).
    zoom
        One factor or three (z, y, x) applied to the number of voxels per axis.
    roi
        A region of the original voxels: text ``"z0:z1,y0:y1,x0:x1"`` or three slices.
    overwrite
        Whether an existing output may be replaced.
    **write_options
        Passed to the volume writer (``workers`` and the like; None values are ignored).

    Returns
    -------
    tuple
        The written path and the :class:`DecodeSize` of the output.
    """
    from ..io.detect import iter_write_volume

    mix, header = read_hgm(src)
    if isinstance(roi, str):
        roi = parse_roi(roi, header.shape)
    size = check_decode_size(header, zoom=zoom, roi=roi, out=out)  # before any folder is made
    check_output(out, overwrite=overwrite)
    volume = decompress_volume(mix, header, zoom=zoom, roi=roi)
    path = yield from iter_write_volume(volume, out, overwrite=overwrite, **write_options)
    return Path(path), size
