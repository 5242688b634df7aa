"""Convert between core Volumes and napari layer-data tuples (napari-free: plain dicts)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import dask.array as da
import numpy as np

from .core.io.meta import META_KEY, VolumeMeta
from .core.io.volume import Volume


def volume_to_layer_data(volume: Volume, *, name: str) -> list[tuple[Any, dict, str]]:
    """A napari ``LayerDataTuple`` list for a volume: multiscale when it has levels, with
    scale in µm, RGB or one layer per channel, and its metadata under ``"histovol"``."""
    meta = volume.meta
    levels = list(volume.levels)
    multiscale = len(levels) > 1
    data = levels if multiscale else levels[0]
    kwargs: dict[str, Any] = {
        "name": name,
        "scale": tuple(float(s) for s in meta.scale),
        "metadata": {META_KEY: meta.to_dict()},
        "multiscale": multiscale,
        "axis_labels": ("z", "y", "x"),
    }
    if meta.unit == "micrometer":
        kwargs["units"] = ("micrometer",) * 3
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
    return [(data, kwargs, "image")]


def layer_to_volume(data: Any, attributes: dict) -> Volume:
    """Rebuild a core Volume from a napari image layer's data and attributes (for writers)."""
    if isinstance(data, (list, tuple)):
        data = data[0]
    arr = data if isinstance(data, da.Array) else da.asarray(data)
    rgb = bool(attributes.get("rgb", False))
    spatial = arr.ndim - (1 if rgb else 0)
    if spatial == 2:
        arr = arr[None]
    elif spatial != 3:
        from .core.errors import InputError

        raise InputError(f"napari-histovol writes 2D or 3D image layers, not {spatial}D ones.")
    if rgb and arr.shape[-1] == 4:
        arr = arr[..., :3]
    hv = (attributes.get("metadata") or {}).get(META_KEY)
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
    return Volume(data=arr, meta=meta.with_planes(arr.shape[0]))


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
        "axis_labels": ("z", "y", "x"),
    }
    if header.unit == "micrometer":
        points_kwargs["units"] = ("micrometer",) * 3
    return [(data, image_kwargs, kind), (points, points_kwargs, "points")]
