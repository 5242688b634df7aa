"""npe2 reader: slice folders, OME-Zarr, (OME-)TIFF and .npy through napari-histovol's core."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .core.errors import InputError
from .core.io.detect import detect_format
from .core.io.naming import split_stem


def get_reader(path: str | list[str]) -> Callable | None:
    """Return a reader function when napari-histovol can open ``path``, else None."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    if str(path).lower().endswith(".hgm"):
        return read_hgm_layers
    try:
        fmt = detect_format(path)
    except InputError:
        return None
    if fmt == "folder":
        from .core.io.imagefile import is_image_file

        if not any(is_image_file(n) for n in os.listdir(path)):
            return None
    return read_layers


def read_layers(path: str | list[str]) -> list[tuple]:
    """Read ``path`` into napari layer-data tuples (lazy dask data, physical scale)."""
    from ._dask_cache import guard_napari_dask_cache
    from ._layers import DISPLAY_KEY, volume_to_layer_data
    from .core.io.detect import read_volume

    guard_napari_dask_cache()  # the plugin's widgets compute these layers on threads

    if isinstance(path, list):
        path = path[0]
    volume = read_volume(path)
    name = split_stem(Path(os.fspath(path).rstrip("/")).name)[0]
    layers = volume_to_layer_data(volume, name=name)
    if DISPLAY_KEY in layers[0][1]["metadata"]:
        _open_on_a_section(layers[0][1]["metadata"])
    if not volume.meta.scale_known:
        _say_unscaled(Path(os.fspath(path).rstrip("/")).name)
    return layers


def _say_unscaled(name: str) -> None:
    """One notification that the file holds no pixel size (its layer is in pixels: a
    segmented object's volume, a scale bar, a distance would be in pixels too)."""
    try:
        from napari.utils.notifications import show_info
    except ImportError:  # read outside napari
        return
    show_info(
        f"'{name}' holds no pixel size, so it opens in pixels (volumes and distances too): "
        "set the pixel size and section spacing in the Sections tab."
    )


def _open_on_a_section(metadata: dict) -> None:
    """Once napari has added the layer (whose metadata is ``metadata``), move the z slider off
    an empty gap plane onto the nearest measured section. napari opens a stack at its middle
    plane, and on a folder with a missing middle section the first thing a user saw was a blank
    canvas. Nothing happens without a running Qt application and viewer (scripts, tests of the
    core), or when the user has already moved the slider to a section."""
    try:
        from qtpy.QtCore import QTimer
        from qtpy.QtWidgets import QApplication
    except Exception:  # no Qt binding: no viewer either
        return
    if QApplication.instance() is None:
        return

    def move() -> None:
        import napari

        from ._layers import move_off_gap

        viewer = napari.current_viewer()
        if viewer is None:
            return
        layer = next((ly for ly in viewer.layers if ly.metadata is metadata), None)
        if layer is None:
            layer = next((ly for ly in viewer.layers if ly.metadata == metadata), None)
        if layer is None or layer.ndim != 3 or viewer.dims.ndisplay != 2:
            return
        move_off_gap(viewer, layer)

    QTimer.singleShot(0, move)


def read_hgm_layers(path: str | list[str]) -> list[tuple]:
    """Read an ``.hgm`` Gaussian-mixture file: the decoded volume (lazy) and its Gaussians."""
    from ._layers import mixture_to_layer_data
    from .core.gaussians import decompress_volume, read_hgm

    if isinstance(path, list):
        path = path[0]
    mix, header = read_hgm(path)
    name = Path(os.fspath(path)).name[: -len(".hgm")]
    volume = decompress_volume(mix, header)
    return mixture_to_layer_data(mix, header, volume, name=name, hgm_bytes=Path(path).read_bytes())
