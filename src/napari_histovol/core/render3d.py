"""napari-free helpers for 3D viewing: clipping-plane geometry, RGB volumes as channel layers
with opacity from intensity, and a software-rendered overview (no OpenGL needed)."""

from __future__ import annotations

import math

import numpy as np

AXES = ("none", "z", "y", "x", "oblique")


def plane_normal(
    axis: str, *, azimuth_deg: float = 0.0, elevation_deg: float = 0.0, flip: bool = False
) -> tuple:
    """Unit normal (z, y, x) of a clipping plane along an axis, or oblique from two angles."""
    if axis == "z":
        n = (1.0, 0.0, 0.0)
    elif axis == "y":
        n = (0.0, 1.0, 0.0)
    elif axis == "x":
        n = (0.0, 0.0, 1.0)
    elif axis == "oblique":
        a, e = math.radians(azimuth_deg), math.radians(elevation_deg)
        n = (math.sin(e), math.cos(e) * math.sin(a), math.cos(e) * math.cos(a))
    else:
        raise ValueError(f"axis must be one of {AXES}")
    return tuple(-v for v in n) if flip else n


def clipping_planes(
    shape_zyx: tuple[int, int, int],
    axis: str,
    position: float,
    *,
    thickness: float = 0.0,
    flip: bool = False,
    azimuth_deg: float = 0.0,
    elevation_deg: float = 0.0,
) -> list[dict]:
    """napari ``experimental_clipping_planes`` (data coordinates) for a half-space clip at
    ``position`` (0..1 along the normal through the volume's centre) or, with ``thickness``
    (0..1 of the extent), a slab centred there."""
    if axis == "none":
        return []
    n = np.array(
        plane_normal(axis, azimuth_deg=azimuth_deg, elevation_deg=elevation_deg, flip=flip)
    )
    size = np.array(shape_zyx, float) - 1
    centre = size / 2
    extent = float(np.abs(n) @ size)  # length of the volume along the normal
    p = centre + n * (position - 0.5) * extent
    if thickness <= 0:
        return [{"position": tuple(p), "normal": tuple(n), "enabled": True}]
    half = 0.5 * thickness * extent
    return [
        {"position": tuple(p - n * half), "normal": tuple(n), "enabled": True},
        {"position": tuple(p + n * half), "normal": tuple(-n), "enabled": True},
    ]


def rgb_channels_for_3d(rgb: np.ndarray, *, brightfield: bool):
    """Three channel volumes that render an RGB volume in 3D on black with additive blending:
    for brightfield the inverted channels (absorbance-like: slide ~0, tissue bright) with the
    complementary colormaps cyan, magenta, yellow, so tissue keeps its stain hue; for
    fluorescence the channels with red, green, blue. Works on numpy or dask arrays."""
    top = np.iinfo(rgb.dtype).max if rgb.dtype.kind in "ui" else 1.0
    chans = [rgb[..., c] for c in range(3)]
    if brightfield:
        chans = [top - c for c in chans]
        colormaps = ("cyan", "magenta", "yellow")
    else:
        colormaps = ("red", "green", "blue")
    return chans, colormaps, top


def orthoviews(volume: np.ndarray, *, z_scale: float = 1.0, background=255) -> np.ndarray:
    """A software rendering of a (Z, Y, X[, 3]) uint8 volume: the middle xy section with the
    middle xz and yz sections beside it (z stretched by ``z_scale``), for a PNG without OpenGL."""
    import cv2

    z, y, x = volume.shape[:3]
    zs = max(1, round(z * z_scale))
    xy = volume[z // 2]
    xz = cv2.resize(
        np.ascontiguousarray(volume[:, y // 2]), (x, zs), interpolation=cv2.INTER_NEAREST
    )
    yz = cv2.resize(
        np.ascontiguousarray(volume[:, :, x // 2]), (y, zs), interpolation=cv2.INTER_NEAREST
    )
    yz = np.swapaxes(yz, 0, 1)
    pad = 8
    h, w = y + zs + 3 * pad, x + zs + 3 * pad
    canvas = np.full((h, w) + volume.shape[3:], background, volume.dtype)
    canvas[pad : pad + y, pad : pad + x] = xy
    canvas[pad : pad + y, 2 * pad + x : 2 * pad + x + zs] = yz
    canvas[2 * pad + y : 2 * pad + y + zs, pad : pad + x] = xz
    return canvas
