"""napari-free helpers for 3D viewing: clipping-plane geometry, RGB volumes drawn in their stain
colours as one palette-indexed volume (slide transparent, opacity from optical density), and a
software-rendered overview (no OpenGL needed)."""

from __future__ import annotations

import math
from dataclasses import dataclass

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


#: Bits kept per channel when an RGB colour is looked up in the palette (32 levels: a colour
#: moves by at most 4 of 255 per channel, below what the eye tells apart in a stain).
LUT_BITS = 5
#: Entries of the 3D palette: index 0 is the slide (transparent), 1..255 the stain colours.
PALETTE_SIZE = 256


@dataclass
class TrueColourStyle:
    """How an RGB volume is drawn as a single scalar volume in 3D: every voxel holds the index
    of its nearest stain colour, ``palette[i]`` is that colour and ``alpha[i]`` its opacity
    (from optical density for brightfield, from brightness for fluorescence; 0 for the slide).

    Attributes
    ----------
    palette
        (256, 3) uint8 colours; entry 0 is the slide background.
    alpha
        (256,) float32 opacities in [0, 1], increasing with stain strength (entries are sorted
        by it, so neighbouring indices have similar colours).
    lut
        (32, 32, 32) uint8 palette index for every colour quantised to :data:`LUT_BITS` bits.
    background
        (3,) the slide's colour (or the dark background for fluorescence).
    brightfield
        True for a bright slide (H&E, IHC), False for a dark one.
    """

    palette: np.ndarray
    alpha: np.ndarray
    lut: np.ndarray
    background: np.ndarray
    brightfield: bool

    def rgba(self, opacity: float = 1.0) -> np.ndarray:
        """(256, 4) float colours in [0, 1] with ``alpha`` scaled by ``opacity`` (0..1)."""
        out = np.empty((len(self.palette), 4), np.float32)
        out[:, :3] = self.palette / 255.0
        out[:, 3] = np.clip(self.alpha * float(opacity), 0.0, 1.0)
        return out

    def indices(self, rgb: np.ndarray) -> np.ndarray:
        """Palette indices (uint8, shape ``rgb.shape[:-1]``) of an RGB array of any dtype."""
        return self.lut[tuple(_quantised(rgb, c) for c in range(3))]


def _as_uint8(values: np.ndarray) -> np.ndarray:
    if values.dtype == np.uint8:
        return values
    if values.dtype.kind in "ui":
        top = float(np.iinfo(values.dtype).max)
    else:
        top = 1.0
    return np.clip(np.rint(values.astype(np.float32) * (255.0 / top)), 0, 255).astype(np.uint8)


def _quantised(rgb: np.ndarray, channel: int) -> np.ndarray:
    return _as_uint8(np.asarray(rgb[..., channel])) >> (8 - LUT_BITS)


def _strength(rgb: np.ndarray, background: np.ndarray, brightfield: bool) -> np.ndarray:
    """How much stain a colour carries: mean optical density against the slide (brightfield)
    or the brightest channel above the background (fluorescence, 0..1)."""
    rgb = rgb.astype(np.float32)
    if brightfield:
        ratio = np.maximum(rgb, 1.0) / np.maximum(background.astype(np.float32), 1.0)
        return np.clip(-np.log10(ratio), 0.0, None).mean(axis=-1)
    return np.clip((rgb - background.astype(np.float32)).max(axis=-1) / 255.0, 0.0, None)


def true_colour_style(
    planes: np.ndarray, *, n_samples: int = 60000, seed: int = 0
) -> TrueColourStyle:
    """The palette, opacities and lookup table that draw an RGB volume in its stain colours.

    The slide colour is the median of the planes' borders; a pixel is stained when its optical
    density against the slide exceeds 0.03 + 3 x the median density of the borders (clipped to
    0.04..0.15, as tissue may touch a border). The stain
    colours are 255 k-means centres of a sample of stained pixels, sorted by density; a colour's
    opacity rises linearly from 0 at that threshold to 1 at the 95th percentile of the stained
    pixels' density, so faint stroma is see-through and nuclei are solid.

    Parameters
    ----------
    planes
        (..., Y, X, 3) sections (a few planes are enough; any dtype).
    n_samples
        Stained pixels sampled for the palette.
    seed
        Seed of the pixel sample and of k-means.

    Returns
    -------
    TrueColourStyle
    """
    import cv2

    from .image import background_value, is_bright_background

    planes = _as_uint8(np.asarray(planes))
    planes = planes.reshape((-1,) + planes.shape[-3:])
    background = np.median(np.stack([background_value(p) for p in planes]), axis=0)
    brightfield = bool(np.mean([is_bright_background(p) for p in planes]) >= 0.5)
    border = np.concatenate(
        [np.concatenate([p[0], p[-1], p[:, 0], p[:, -1]]) for p in planes]
    ).reshape(-1, 3)
    pixels = planes.reshape(-1, 3)
    # the slide varies by a few hundredths of OD; tissue may touch the border, so use its median
    border_strength = float(np.median(_strength(border, background, brightfield)))
    threshold = float(np.clip(3.0 * border_strength + 0.03, 0.04, 0.15))
    strength = _strength(pixels, background, brightfield)
    stained = pixels[strength > threshold]
    rng = np.random.default_rng(seed)
    if len(stained) > n_samples:
        stained = stained[rng.choice(len(stained), n_samples, replace=False)]
    palette = np.repeat(background[None].astype(np.uint8), PALETTE_SIZE, axis=0)
    alpha = np.zeros(PALETTE_SIZE, np.float32)
    n_colours = min(PALETTE_SIZE - 1, len(np.unique(stained, axis=0)) if len(stained) else 0)
    if n_colours > 0:
        cv2.setRNGSeed(seed)
        _, _, centres = cv2.kmeans(
            stained.astype(np.float32),
            n_colours,
            None,
            (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 10, 0.5),
            1,
            cv2.KMEANS_PP_CENTERS,
        )
        centre_strength = _strength(centres, background, brightfield)
        order = np.argsort(centre_strength)
        centres, centre_strength = centres[order], centre_strength[order]
        full = float(np.percentile(_strength(stained, background, brightfield), 95))
        full = max(full, threshold * 1.5)
        palette[1 : n_colours + 1] = np.clip(np.rint(centres), 0, 255).astype(np.uint8)
        alpha[1 : n_colours + 1] = np.clip(
            (centre_strength - threshold) / (full - threshold), 0.02, 1.0
        )
    lut = _palette_lut(palette[: n_colours + 1], background, brightfield, threshold)
    return TrueColourStyle(palette, alpha, lut, background.astype(np.float32), brightfield)


def _palette_lut(
    palette: np.ndarray, background: np.ndarray, brightfield: bool, threshold: float
) -> np.ndarray:
    """Nearest stain colour (index >= 1) for every quantised colour; 0 for unstained ones."""
    levels = 1 << LUT_BITS
    step = 256 // levels
    centres = (np.arange(levels) * step + step // 2).astype(np.float32)
    grid = np.stack(np.meshgrid(centres, centres, centres, indexing="ij"), axis=-1).reshape(-1, 3)
    lut = np.zeros(len(grid), np.uint8)
    if len(palette) > 1:
        colours = palette[1:].astype(np.float32)
        d2 = (grid**2).sum(1)[:, None] - 2.0 * grid @ colours.T + (colours**2).sum(1)[None, :]
        lut[:] = 1 + np.argmin(d2, axis=1)
        lut[_strength(grid, background, brightfield) <= threshold] = 0
    return lut.reshape(levels, levels, levels)


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
