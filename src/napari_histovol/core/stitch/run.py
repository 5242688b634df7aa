"""The file-level stitch: a folder of tiles -> a mosaic file (or a folder of sections) and
TILES.json."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.atomic import atomic_output, check_output, remove_path, write_json
from ..io.meta import VolumeMeta
from ..io.naming import NamePattern
from ..progress import Progress, ProgressGenerator, drain
from .blend import BLENDS, mosaic_array
from .infer import infer_layout
from .layout import FileTiles, find_tile_sections, grid_positions, parse_grid, read_positions
from .placement import MODELS, Placement, iter_place_tiles
from .write import iter_write_mosaic, iter_write_section_tiff, mosaic_format


@dataclass
class StitchResult:
    """What a stitch wrote: the output, TILES.json (or None) and every section's placement
    (z number None for a folder of one section)."""

    out: Path
    tiles_out: Path | None
    sections: list[tuple[int | None, Placement]]
    layouts: list[dict]

    @property
    def flagged(self) -> list[str]:
        """Names of the flagged tiles of all sections."""
        return [n for _, p in self.sections for n in p.flagged]

    def tiles_document(self) -> dict:
        """The TILES.json document (one section) or ``{"sections": [...]}`` (several)."""
        if len(self.sections) == 1 and self.sections[0][0] is None:
            return self.sections[0][1].to_dict()
        return {"sections": [{"z": z, **p.to_dict()} for z, p in self.sections]}


def nominal_positions(
    source: FileTiles,
    *,
    grid: str | tuple[int, int] | None,
    overlap: float,
    positions: str | os.PathLike | None,
) -> tuple[np.ndarray, dict]:
    """Nominal positions of a section's tiles from a grid, a positions file, or the overlaps."""
    if grid is not None and positions is not None:
        raise InputError("Give either a grid or a positions file, not both.", option="positions")
    if positions is not None:
        return read_positions(positions, source.names), {"from": "positions"}
    if grid is not None:
        g = parse_grid(grid) if isinstance(grid, str) else tuple(grid)
        return grid_positions(source.shapes, g, overlap), {
            "from": "grid",
            "rows": g[0],
            "cols": g[1],
        }
    nominal, info = infer_layout(source)
    return nominal, {"from": "overlaps", **info}


def iter_stitch(
    folder: str | os.PathLike,
    out: str | os.PathLike,
    *,
    grid: str | tuple[int, int] | None = None,
    overlap: float = 0.1,
    positions: str | os.PathLike | None = None,
    model: str = "translation",
    blend: str = "linear",
    tiles_out: str | os.PathLike | None = None,
    overwrite: bool = False,
    search: float | None = None,
    workers: int = 2,
    scheduler=None,
) -> ProgressGenerator[StitchResult]:
    """Stitch the tiles of ``folder`` into ``out``.

    Parameters
    ----------
    folder
        Tiles of one section, or of several sections whose names carry the section number
        (see :mod:`.layout`).
    out
        ``.ome.tif`` (pyramidal), ``.ome.zarr``, ``.tif``, ``.png``; or a folder name: one
        ``section_Z.tif`` per section, the folder ``histovol build`` reads.
    grid
        ``"ROWSxCOLS"``: tiles in natural order, row by row, left to right.
    overlap
        Nominal overlap fraction of a grid.
    positions
        A ``file,x,y`` CSV of nominal top-left positions.
    model
        ``translation``, ``rigid``, ``affine`` or ``elastic``.
    blend
        ``linear`` or ``none``.
    tiles_out
        Where to write TILES.json (placements and edge QC).
    overwrite
        Replace existing outputs.
    search
        How far (px) a tile may be from its nominal place (default 10% of a tile side).
    workers
        Threads registering pairs and rendering chunks.
    scheduler
        A dask.distributed address or Client: pairs and chunks are computed on that cluster.

    Returns
    -------
    StitchResult
    """
    if model not in MODELS:
        raise InputError(
            f"Unknown model {model!r}; use one of {', '.join(MODELS)}.", option="model"
        )
    if blend not in BLENDS:
        raise InputError(
            f"Unknown blending {blend!r}; use one of {', '.join(BLENDS)}.", option="blend"
        )
    if not 0 <= overlap < 1:
        raise InputError(
            f"The overlap must be a fraction in [0, 1), not {overlap}.", option="overlap"
        )
    kind = mosaic_format(out)
    out_path = check_output(
        out, overwrite=overwrite, kind="dir" if kind in ("folder", "ome-zarr") else "file"
    )
    tj = check_output(tiles_out, overwrite=overwrite, kind="file") if tiles_out else None
    if tj is not None and tj.resolve() == out_path.resolve():
        raise InputError("The tiles file and the mosaic must have different names.")
    sections = find_tile_sections(folder)
    if len(sections) > 1 and kind != "folder":
        raise InputError(
            f"'{folder}' holds the tiles of {len(sections)} sections; give a folder name as the "
            "output (one image per section) instead of a single file."
        )
    client = None
    if scheduler is not None:
        from ..cluster import dask_client

        client = dask_client(scheduler)
    placed: list[tuple[int | None, Placement, FileTiles]] = []
    layouts = []
    for k, sec in enumerate(sections):
        source = FileTiles(sec.paths)
        nominal, info = nominal_positions(source, grid=grid, overlap=overlap, positions=positions)
        yield Progress(
            k, len(sections), f"section {sec.z}" if sec.z is not None else "layout", stage="layout"
        )
        placement = yield from iter_place_tiles(
            source, nominal, model=model, search=search, workers=workers, scheduler=client
        )
        placed.append((sec.z, placement, source))
        layouts.append(info)
    meta = _meta(placed[0][2])
    written: list[Path] = []
    try:
        if kind == "folder":
            yield from _write_folder(placed, out_path, meta, overwrite, workers, client, blend)
        else:
            _, placement, source = placed[0]
            mosaic = mosaic_array(source, placement, blend=blend)
            yield from iter_write_mosaic(
                mosaic, out_path, meta=meta, overwrite=overwrite, workers=workers, client=client
            )
        written.append(out_path)
        result = StitchResult(out_path, tj, [(z, p) for z, p, _ in placed], layouts)
        if tj is not None:
            write_json(tj, result.tiles_document(), overwrite=overwrite)
    except BaseException:
        for p in written:
            remove_path(p)
        raise
    return result


def stitch(folder: str | os.PathLike, out: str | os.PathLike, **kwargs) -> StitchResult:
    """:func:`iter_stitch` without progress."""
    return drain(iter_stitch(folder, out, **kwargs))


def _meta(source: FileTiles) -> VolumeMeta:
    meta = VolumeMeta(rgb=source.channels == 3)
    if meta.rgb:
        from dataclasses import replace

        meta = replace(meta, channel_names=("red", "green", "blue"))
    ps = source.pixel_size_um
    return meta.with_scale(pixel_size=ps) if ps else meta


def _write_folder(placed, out: Path, meta: VolumeMeta, overwrite, workers, client, blend):
    from dataclasses import replace

    from ..io.slices import write_folder_sidecars

    zs = [z if z is not None else 1 for z, _, _ in placed]
    width = max(3, len(str(max(zs))))
    pattern = NamePattern("section_", width, "", ".tif")
    names = [pattern.format(z) for z in zs]
    with atomic_output(out, overwrite=overwrite, is_dir=True) as tmp:
        for (_z, placement, source), name in zip(placed, names, strict=True):
            mosaic = mosaic_array(source, placement, blend=blend)
            yield from iter_write_section_tiff(
                mosaic, tmp / name, meta, workers=workers, client=client
            )
        vmeta = replace(meta, z_numbers=tuple(zs), files=tuple(names), pattern=pattern).with_planes(
            len(zs)
        )
        write_folder_sidecars(tmp, vmeta, names, pattern)
