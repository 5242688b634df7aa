"""Convert between core Volumes and napari layers (plain layer-data tuples and layer objects).

Layers carry the physical scale in µm with units and axis labels, sit at their physical z
(a folder's planes at section number x spacing), and show gaps in the numbering as empty planes
(so the slider steps through sections, and a missing section is visible as missing). The
display-only planes are recorded in the layer's metadata and removed again by
:func:`layer_volume`, so every widget and writer gets the measured planes only.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import dask.array as da
import numpy as np

from .core.io.meta import META_KEY, VolumeMeta, is_label_volume
from .core.io.volume import Volume

#: Layer-metadata key of the display grid: ``{"plane": [index into the volume, or -1 for a
#: gap], "z": [z number of every displayed plane]}``.
DISPLAY_KEY = "histovol_display"
#: Gaps are shown as empty planes when they add at most this many planes per section.
MAX_GAP_PLANES_PER_SECTION = 4
AXIS_LABELS = ("z", "y", "x")


def _display_grid(meta: VolumeMeta, n: int) -> list[int] | None:
    """Plane index (or -1) for every z number from the first to the last, or None when the
    volume has no gaps to show (or too many)."""
    m = meta.with_planes(n)
    zs = list(m.z_numbers)
    if n < 2 or not m.gaps or zs != sorted(set(zs)):
        return None
    span = zs[-1] - zs[0] + 1
    if span - n > MAX_GAP_PLANES_PER_SECTION * n:
        return None
    where = {z: i for i, z in enumerate(zs)}
    return [where.get(z, -1) for z in range(zs[0], zs[-1] + 1)]


def _with_gap_planes(level: da.Array, grid: list[int], fill: float) -> da.Array:
    blank = da.full((1,) + tuple(level.shape[1:]), fill, dtype=level.dtype, chunks=-1)
    pieces = [level[i : i + 1] if i >= 0 else blank for i in grid]
    return da.concatenate(pieces, axis=0)


def volume_to_layer_data(volume: Volume, *, name: str) -> list[tuple[Any, dict, str]]:
    """A napari ``LayerDataTuple`` list for a volume: multiscale when it has levels, scale and
    units in µm, placed at its physical z, gaps shown as empty planes, RGB or one layer per
    channel, and its metadata under ``"histovol"``."""
    meta = volume.meta.with_planes(volume.shape[0])
    levels = list(volume.levels)
    grid = _display_grid(meta, volume.shape[0])
    metadata: dict[str, Any] = {META_KEY: meta.to_dict()}
    if grid is not None:
        fill = np.iinfo(volume.dtype).max if meta.rgb and volume.dtype.kind == "u" else 0
        levels = [_with_gap_planes(lv, grid, fill) for lv in levels]
        z0 = meta.z_numbers[0]
        metadata[DISPLAY_KEY] = {"plane": grid, "z": list(range(z0, z0 + len(grid)))}
    multiscale = len(levels) > 1
    kwargs: dict[str, Any] = {
        "name": name,
        "metadata": metadata,
        "multiscale": multiscale,
        **physical_placement(meta),
    }
    if is_label_volume(meta) and volume.dtype.kind in "ui":
        return [(levels if multiscale else levels[0], kwargs, "labels")]
    limits = meta.extra.get("contrast_limits") if meta.extra else None
    if volume.data.ndim == 4 and not meta.rgb:
        kwargs["channel_axis"] = 3
        kwargs["name"] = [f"{name} [{c}]" for c in meta.channel_names] or name
    elif meta.rgb:
        kwargs["rgb"] = True
    elif limits:
        kwargs["contrast_limits"] = tuple(limits)
    elif volume.dtype == np.uint8:
        kwargs["contrast_limits"] = (0, 255)
    else:
        # napari would measure the middle plane shown alone, which may be an empty gap plane
        # or a dim one (cells3d's middle plane saturated 10.9 % of the nuclei volume's
        # voxels, and the chromatin showed as flat white): a few planes of the coarsest level
        kwargs["contrast_limits"] = _volume_range(volume.levels[-1])
    return [(levels if multiscale else levels[0], kwargs, "image")]


def move_off_gap(viewer: Any, layer: Any) -> bool:
    """When the viewer's z slider shows an empty gap plane of ``layer`` (a stack shown with
    its missing sections), move it to the nearest measured section (the lower one on a tie).
    Returns whether it moved."""
    grid = (layer.metadata.get(DISPLAY_KEY) or {}).get("plane")
    if not grid or viewer.dims.ndim < 3:
        return False
    axis = viewer.dims.ndim - 3
    world_z = float(viewer.dims.point[axis])
    shown = int(round((world_z - layer.translate[0]) / layer.scale[0]))
    if not 0 <= shown < len(grid) or grid[shown] >= 0:
        return False
    measured = [i for i, p in enumerate(grid) if p >= 0]
    if not measured:
        return False
    best = min(measured, key=lambda i: (abs(i - shown), i))
    viewer.dims.set_point(axis, layer.translate[0] + best * layer.scale[0])
    return True


#: planes sampled for a volume's display range, and the share of its brightest and darkest
#: voxels the range may clip
RANGE_PLANES = 7
RANGE_CLIP_PERCENT = 0.05


def _volume_range(level: da.Array) -> tuple[float, float]:
    """The display range of a volume: the 0.05th to 99.95th percentile of up to
    :data:`RANGE_PLANES` evenly spaced planes of ``level`` (the coarsest: cheap), at most a
    quarter of a million voxels each."""
    if not level.shape[0]:
        return (0.0, 1.0)
    pick = sorted({round(k) for k in np.linspace(0, level.shape[0] - 1, RANGE_PLANES)})
    step = max(1, int(np.sqrt(level.shape[1] * level.shape[2] / 250_000)))
    sample = np.concatenate(
        [np.asarray(level[i, ::step, ::step], dtype=np.float64).ravel() for i in pick]
    )
    sample = sample[np.isfinite(sample)]
    if not sample.size:
        return (0.0, 1.0)
    lo, hi = np.percentile(sample, (RANGE_CLIP_PERCENT, 100 - RANGE_CLIP_PERCENT))
    lo, hi = float(lo), float(hi)
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def physical_placement(meta: VolumeMeta) -> dict[str, Any]:
    """``scale``, ``translate``, ``units`` and ``axis_labels`` that put a volume's planes at
    their physical place: plane i at (first z number + i) x z spacing, in µm when known."""
    m = meta.with_planes(len(meta.z_numbers)) if meta.z_numbers else meta
    out: dict[str, Any] = {
        "scale": tuple(float(s) for s in m.scale),
        "axis_labels": AXIS_LABELS,
    }
    # plane 0 stays where the first section is, however often the planes were renumbered
    out["translate"] = (m.z_origin, 0.0, 0.0)
    if m.unit == "micrometer":
        out["units"] = ("micrometer",) * 3
    return out


def _levels_of(data: Any) -> list:
    """The resolution levels of a layer's data: a list, tuple or napari ``MultiScaleData``
    (what napari hands widgets for multiscale layers), or one array."""
    if isinstance(data, (list, tuple)):
        return list(data)
    if type(data).__name__ == "MultiScaleData":
        return [data[k] for k in range(len(data))]
    return [data]


def layer_to_volume(data: Any, attributes: dict) -> Volume:
    """Rebuild a core Volume from a napari image layer's data and attributes (widgets and
    writers): every pyramid level, the measured planes only (display-only gap planes
    removed), the layer's scale and units."""
    levels = [lv if isinstance(lv, da.Array) else da.asarray(lv) for lv in _levels_of(data)]
    rgb = bool(attributes.get("rgb", False))
    spatial = levels[0].ndim - (1 if rgb else 0)
    if spatial == 2:
        levels = [lv[None] for lv in levels]
    elif spatial != 3:
        from .core.errors import InputError

        raise InputError(f"napari-histovol works on 2D or 3D image layers, not {spatial}D ones.")
    if rgb and levels[0].shape[-1] == 4:
        levels = [lv[..., :3] for lv in levels]
    md = attributes.get("metadata") or {}
    display = md.get(DISPLAY_KEY)
    if display and spatial == 3 and len(display.get("plane", [])) == levels[0].shape[0]:
        keep = [i for i, p in enumerate(display["plane"]) if p >= 0]
        levels = [lv[keep] for lv in levels]
    hv = md.get(META_KEY)
    meta = VolumeMeta.from_dict(hv) if hv else VolumeMeta(rgb=rgb)
    scale = tuple(float(s) for s in attributes.get("scale", (1.0, 1.0, 1.0)))
    scale = ((1.0,) * 3 + scale)[-3:] if spatial == 2 else scale[-3:]
    units = attributes.get("units")
    unit = meta.unit
    if units and str(units[-1]) in ("micrometer", "µm", "um"):
        unit = "micrometer"
    meta = replace(
        meta,
        scale=scale,
        unit=unit,
        rgb=rgb,
        channel_names=("red", "green", "blue") if rgb else meta.channel_names,
    )
    n = levels[0].shape[0]
    if len(meta.z_numbers) != n:  # a layer made elsewhere, or planes removed by hand
        meta = replace(meta, z_numbers=(), synthetic=(), files=(), gaps=())
    return Volume(data=levels[0], meta=meta.with_planes(n), levels=tuple(levels))


def layer_volume(layer) -> Volume:
    """The core Volume behind a napari Image layer (its data, scale, units and metadata)."""
    return layer_to_volume(
        layer.data,
        {
            "rgb": layer.rgb,
            "scale": tuple(layer.scale),
            "metadata": layer.metadata,
            "units": getattr(layer, "units", None),
        },
    )


def displayed_index(layer, index: int) -> int:
    """Where plane ``index`` of a layer's volume (measured planes only) is on the layer's
    display grid (which also holds the empty planes shown for gaps)."""
    grid = (layer.metadata.get(DISPLAY_KEY) or {}).get("plane")
    if grid and index in grid:
        return grid.index(index)
    return index


def world_z(layer, index: int) -> float:
    """World z of plane ``index`` of a layer's volume (what ``viewer.dims.set_point`` takes)."""
    return float(layer.translate[0]) + displayed_index(layer, index) * float(layer.scale[0])


def on_display_grid(layer, per_plane: np.ndarray, fill=0) -> np.ndarray:
    """Spread an array with one entry per measured plane (e.g. focus maps) onto a layer's
    display grid, gaps filled with ``fill``, so it overlays the layer plane for plane."""
    grid = (layer.metadata.get(DISPLAY_KEY) or {}).get("plane")
    if not grid:
        return per_plane
    out = np.full((len(grid),) + per_plane.shape[1:], fill, per_plane.dtype)
    for shown, i in enumerate(grid):
        if i >= 0:
            out[shown] = per_plane[i]
    return out


def add_volume_layer(viewer, volume: Volume, *, name: str, like=None):
    """Show a widget's result volume: placed, scaled and labelled like every histovol layer
    (gaps as empty planes, units, axis labels), looking like ``like`` for gray data; a layer
    of the same name is replaced. Returns the new layer(s)."""
    made = []
    for data, kwargs, kind in volume_to_layer_data(volume, name=name):
        if like is not None and not kwargs.get("rgb") and "channel_axis" not in kwargs:
            kwargs["contrast_limits"] = tuple(like.contrast_limits)
            kwargs["colormap"] = like.colormap
        names = kwargs["name"] if isinstance(kwargs["name"], list) else [kwargs["name"]]
        for n in names:
            if n in viewer.layers:
                viewer.layers.remove(n)
        out = getattr(viewer, f"add_{kind}")(data, **kwargs)
        made += out if isinstance(out, list) else [out]
    return made


def result_layer_kwargs(volume: Volume, *, name: str, like=None) -> dict[str, Any]:
    """Keyword arguments for ``viewer.add_image`` of a widget's result: the volume's metadata,
    physical scale, units, axis labels and placement, and the source layer's (``like``) look."""
    meta = volume.meta.with_planes(volume.shape[0])
    kwargs: dict[str, Any] = {
        "name": name,
        "metadata": {META_KEY: meta.to_dict()},
        "rgb": bool(meta.rgb),
        **physical_placement(meta),
    }
    if like is not None and not meta.rgb:
        kwargs["contrast_limits"] = tuple(like.contrast_limits)
        kwargs["colormap"] = like.colormap
    return kwargs


def mixture_to_layer_data(
    mix, header, volume: Volume, *, name: str, hgm_bytes: bytes | None = None
) -> list[tuple[Any, dict, str]]:
    """Layer tuples for a decoded Gaussian mixture: the reconstruction (Image) and the
    Gaussians (Points: size from their scale, colour from their amplitude).

    ``hgm_bytes`` (the encoded file) is kept in the image layer's metadata so that saving the
    layer as ``.hgm`` writes exactly what was fitted.
    """
    (data, image_kwargs, kind) = volume_to_layer_data(volume, name=name)[0]
    scale = np.asarray(header.voxel_size, dtype=np.float64)
    # the Gaussians live in the original's voxel coordinates; a zoomed or cropped grid starts
    # at its first voxel's place there (a quarter voxel before the original's first at zoom 2:
    # overlaid on the original, the zoomed volume sat a quarter voxel off, a helper found)
    origin = volume.meta.extra.get("gaussian_mixture", {}).get("origin_voxel", [0.0] * 3)
    image_kwargs["translate"] = tuple(
        float(o) * float(s) for o, s in zip(origin, scale, strict=True)
    )
    image_kwargs["metadata"]["gaussian_mixture"] = {"gaussians": len(mix), "shape": header.shape}
    if hgm_bytes is not None:
        image_kwargs["metadata"]["hgm_bytes"] = hgm_bytes
    image_kwargs["contrast_limits"] = tuple(float(v) for v in header.value_range)
    # Points in the original's world coordinates (the decoded grid may be zoomed or a region).
    points = mix.centres * scale
    size = 2.0 * np.cbrt(np.prod(mix.scales, axis=1)) * float(np.mean(scale))
    points_kwargs = {
        "name": f"{name} Gaussians",
        "size": size,
        "features": {"amplitude": mix.amplitudes},
        "face_color": "amplitude",
        "face_colormap": "viridis",
        "border_width": 0,
        "opacity": 0.6,
        "visible": False,
        "axis_labels": AXIS_LABELS,
    }
    if header.unit == "micrometer":
        points_kwargs["units"] = ("micrometer",) * 3
    return [(data, image_kwargs, kind), (points, points_kwargs, "points")]
