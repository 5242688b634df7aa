"""npe2 writers: an image layer to OME-Zarr, pyramidal OME-TIFF or .npy (never overwriting)."""

from __future__ import annotations

from typing import Any

from ._layers import layer_to_volume
from .core.io.detect import write_volume


def write_ome_zarr(path: str, data: Any, attributes: dict) -> list[str]:
    """Save an image layer as a multiscale OME-Zarr (NGFF 0.5) with its scale and flags."""
    return [str(write_volume(layer_to_volume(data, attributes), path, format="ome-zarr"))]


def write_ome_tiff(path: str, data: Any, attributes: dict) -> list[str]:
    """Save an image layer as a tiled pyramidal OME-TIFF."""
    return [str(write_volume(layer_to_volume(data, attributes), path, format="ome-tiff"))]


def write_npy(path: str, data: Any, attributes: dict) -> list[str]:
    """Save an image layer as .npy with its metadata in NAME.npy.json."""
    return [str(write_volume(layer_to_volume(data, attributes), path, format="npy"))]


def write_hgm(path: str, data: Any, attributes: dict) -> list[str]:
    """Save the Gaussian mixture behind an image layer as ``.hgm``.

    The layer must come from a fit (the *Gaussian compression* widget) or an ``.hgm`` file:
    fitting takes minutes, so saving never starts one silently.
    """
    from .core.errors import InputError
    from .core.io.atomic import atomic_output

    blob = (attributes.get("metadata") or {}).get("hgm_bytes")
    if not blob:
        raise InputError(
            f"The layer '{attributes.get('name', '')}' holds no fitted Gaussian mixture; fit one "
            "with the Gaussian compression widget (or histovol compress) and save that layer."
        )
    if not str(path).lower().endswith(".hgm"):
        path = f"{path}.hgm"
    with atomic_output(path) as tmp:
        tmp.write_bytes(bytes(blob))
    return [str(path)]
