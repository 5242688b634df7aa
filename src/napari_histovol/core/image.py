"""What every stage shares about one section image: its background, whether it lies on a bright
slide, a channel in which tissue is bright, and where the tissue is.

One place for these heuristics, so that alignment (registration channel, blank sections), focus
scoring (sharpness on tissue only), warping and canvas padding (fill with the slide's own
background) and the 3D view (brightfield or fluorescence rendering) agree on what a section is.
Only numpy and OpenCV; nothing here knows about files or stages.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Registration / tissue channel kinds: ``auto`` picks ``od`` for brightfield RGB, ``inverted``
#: for brightfield gray and ``intensity`` for dark backgrounds (fluorescence, EM).
CHANNELS = ("auto", "od", "intensity", "inverted")

#: Level above which a normalised tissue-bright channel counts as content (after smoothing).
CONTENT_LEVEL = 0.15


def background_value(img: np.ndarray) -> np.ndarray:
    """Background of a section: the per-channel median of its one-pixel border.

    White for brightfield slides, black for fluorescence and EM; used to pad sections onto a
    common canvas and to fill outside the section after warping.
    """
    if img.shape[0] < 2 or img.shape[1] < 2:
        return np.median(img.reshape(-1, *img.shape[2:]), axis=0).astype(img.dtype)
    border = np.concatenate([img[0], img[-1], img[1:-1, 0], img[1:-1, -1]], axis=0)
    return np.median(border, axis=0).astype(img.dtype)


#: A colour section whose border is bright but darker than its brightest percent by more than
#: this share of the range is a crop of tissue (an exported region of a slide), not a section
#: on its slide: its border is stain, and the bare slide is what shows through its gaps. The
#: shared sections on their slides differ by 0.03-0.05 of the range (ANHIR's five), the
#: shared skin image, a crop, by 0.15
CROP_BORDER_GAP = 0.1
#: ... and the slide is then the median colour of the brightest share of its pixels
SLIDE_SHARE = 0.01


def slide_colour(img: np.ndarray) -> np.ndarray:
    """The bare slide's colour behind a brightfield colour section, as float64 per channel:
    its :func:`background_value`, unless the section is a crop of tissue (its border bright
    but well below its brightest pixels, :data:`CROP_BORDER_GAP`): then the median colour of
    its brightest :data:`SLIDE_SHARE` of pixels, where the slide shows through the tissue.
    A pathologist's exported region has stain on every edge: against its border, its pale
    stroma held no optical density at all, and the section QC judged blur on half the tissue.
    """
    edge = np.asarray(background_value(img), np.float64)
    if img.ndim != 3 or img.shape[-1] not in (3, 4) or min(img.shape[:2]) < 2:
        return edge
    step = max(1, int(np.sqrt(img.shape[0] * img.shape[1] / 250_000)))
    sub = img[::step, ::step, :3].reshape(-1, 3).astype(np.float32)
    sub = sub[np.all(np.isfinite(sub), axis=1)]
    if sub.size == 0:
        return edge
    top = 255.0 if img.dtype == np.uint8 else max(float(sub.max()), 1e-9)
    lum = sub.mean(axis=1)
    bright = float(np.percentile(lum, 100.0 * (1.0 - SLIDE_SHARE)))
    edge_lum = float(np.mean(edge[:3]))
    if edge_lum <= 0.5 * top or bright - edge_lum <= CROP_BORDER_GAP * top:
        return edge
    out = edge.copy()
    out[:3] = np.median(sub[lum >= bright], axis=0)
    return out


#: skewness of a gray section's histogram beyond which its long tail says which side the
#: signal is on (dark tail: brightfield or EM, more material is darker; bright tail:
#: fluorescence); between -SKEW_CLEAR and SKEW_CLEAR the border decides
SKEW_CLEAR = 0.1


def _skewness(img: np.ndarray, n: int = 65536) -> float:
    """Sample skewness of (at most ``n`` evenly spaced) finite pixel values."""
    v = np.asarray(img, dtype=np.float64).ravel()
    if v.size > n:
        v = v[:: v.size // n]
    v = v[np.isfinite(v)]
    if v.size < 3:
        return 0.0
    sd = v.std()
    return float(((v - v.mean()) ** 3).mean() / sd**3) if sd > 0 else 0.0


def is_bright_background(img: np.ndarray) -> bool:
    """True when the section lies on a bright slide or is read as one (brightfield, EM: more
    material is darker).

    A gray section is judged by its histogram's long tail first (a dark tail: the signal is
    dark; a bright tail: fluorescence), since a field of EM or a crop of tissue has no slide at
    its border; a colour section, or a gray one with no clear tail, by its border: above half
    the dtype's range (8 bit) or half its own maximum (16 bit and float).
    """
    if img.ndim == 2 or (img.ndim == 3 and img.shape[-1] == 1):
        tail = _skewness(img)
        if abs(tail) > SKEW_CLEAR:
            return tail < 0
    bg = np.asarray(background_value(img), dtype=np.float64).mean()
    if img.dtype.kind in "ui":
        top = np.iinfo(img.dtype).max if img.dtype.itemsize == 1 else max(float(img.max()), 1.0)
    else:
        top = max(float(np.nanmax(img)), 1e-9) if img.size else 1.0
    return bg > 0.5 * top


def auto_channel(img: np.ndarray) -> str:
    """The channel kind ``auto`` picks for a section (decide once per stack: a per-section
    choice could invert one section against its neighbours)."""
    bright = is_bright_background(img)
    return ("od" if img.ndim == 3 else "inverted") if bright else "intensity"


def optical_density(img: np.ndarray, background=None) -> np.ndarray:
    """Per-channel optical density -log(I / I_background) of a brightfield section (both
    counted from -1, so black stays finite: at most ln 1000), float32. ``background``: the
    bare slide's level per channel (default: :func:`background_value` of ``img``; give
    another section's to compare two sections on one scale). :func:`from_optical_density`
    inverts it."""
    f = img.astype(np.float32, copy=False)
    bg = _od_background(background_value(img) if background is None else background)
    return -np.log(np.clip((f + 1.0) / bg, 1e-3, 1.0))


def from_optical_density(od: np.ndarray, background) -> np.ndarray:
    """The intensities (float32) whose :func:`optical_density` against ``background`` is
    ``od``."""
    return (_od_background(background) * np.exp(-od) - 1.0).astype(np.float32)


def _od_background(level) -> np.ndarray:
    """The slide's ``level`` per channel plus one (at least 2): intensities are counted from
    -1 in optical density."""
    return np.maximum(np.asarray(level, np.float32), 1.0) + 1.0


def registration_channel(img: np.ndarray, kind: str = "auto") -> np.ndarray:
    """One float32 channel in which tissue is bright and the slide dark (not normalised).

    ``od``: optical density summed over channels, -log(I / I_background), which shows tissue of
    any stain as bright, so sections in different stains look alike; ``inverted``: gray turned
    upside down; ``intensity``: gray as it is.
    """
    if kind not in CHANNELS:
        raise ValueError(f"channel must be one of {CHANNELS}")
    f = img.astype(np.float32, copy=False)
    if kind == "auto":
        kind = auto_channel(img)
    if kind == "od":
        od = optical_density(img)
        return od.sum(axis=-1) if od.ndim == 3 else od
    g = f.mean(axis=-1) if f.ndim == 3 else f
    if kind == "inverted":
        return float(np.max(g)) - g if g.size else g
    return g


#: Optical density (summed over the three channels) above which a brightfield pixel is opaque:
#: dust, a pen mark, a bubble's rim, not stain. It lets through about a fifth of the light in
#: each channel; the stains of the shared sections reach 0.7-2.9 at their 99.5th percentile,
#: black dust 7.5.
OPAQUE_OD = 4.5


def normalise(chan: np.ndarray, *, ceiling: float | None = None) -> np.ndarray:
    """Robustly scale to [0, 1] (1st and 99.5th percentiles); constant images give zeros.
    With ``ceiling``, the 99.5th percentile is taken of the values below it: opaque debris
    over more than half a percent of a section (four dust blobs on an ANHIR section) set the
    top of the scale, and its tissue fell below the blank-section level."""
    if chan.size == 0:
        return np.zeros_like(chan, dtype=np.float32)
    lo = np.percentile(chan, 1.0)
    below = chan[chan < ceiling] if ceiling is not None else chan
    hi = np.percentile(below if below.size else chan, 99.5)
    if not np.isfinite(hi - lo) or hi - lo < 1e-12:
        return np.zeros_like(chan, dtype=np.float32)
    return np.clip((chan - lo) / (hi - lo), 0, 1).astype(np.float32)


def content_fraction(tissue_bright: np.ndarray) -> float:
    """Fraction of pixels clearly above the slide in a normalised tissue-bright channel
    (smoothed, above :data:`CONTENT_LEVEL`): the blank-section test."""
    if tissue_bright.size == 0 or tissue_bright.max() <= 0:
        return 0.0
    smooth = cv2.GaussianBlur(tissue_bright.astype(np.float32, copy=False), (0, 0), 2)
    return float((smooth > CONTENT_LEVEL).mean())


#: Optical density (summed over the three channels, against :func:`slide_colour`) above which
#: a brightfield pixel holds stain: a fifth of the light taken. The bare slides of the shared
#: sections lie at 0.00-0.03 (1st to 10th percentile), the palest stroma of the skin crop at
#: 0.26 and up
TISSUE_OD = 0.2


def tissue_mask(
    chan: np.ndarray, *, min_fraction: float = 0.01, material_high: bool | None = None
) -> np.ndarray:
    """Tissue pixels of a gray channel: Otsu's threshold on a smoothed copy (computed at 1/4
    size), on the side away from the slide (bright slides: darker pixels; dark backgrounds:
    brighter; ``material_high``: True where tissue is known to be the higher side, as in an
    optical density, False where the lower; None: told by the border). When hardly anything,
    or almost everything, looks like tissue, all pixels count.
    """
    lo, hi = (float(chan.min()), float(chan.max())) if chan.size else (0.0, 0.0)
    if hi - lo < 1e-6:
        return np.ones(chan.shape, bool)
    h, w = chan.shape
    f = 4 if min(h, w) >= 64 else 1
    small = (
        cv2.resize(chan, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
        if f > 1
        else chan
    )
    small = cv2.GaussianBlur(small.astype(np.float32, copy=False), (0, 0), 2.0 / f)
    u8 = np.clip((small - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)
    t, _ = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    if material_high is None:
        bright_slide = float(background_value(small)) > float(np.median(small))
    else:
        # told, not guessed: a crop's border is tissue, and where it was denser than the
        # median the guess took the densest tissue for the slide (a fold's band on a crop of
        # skin was left out of the tissue and out of the section QC's comparison)
        bright_slide = not material_high
    mask = (u8 < t) if bright_slide else (u8 > t)
    frac = float(mask.mean())
    if frac < min_fraction or frac > 0.995:
        return np.ones(chan.shape, bool)
    mask = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8))
    if f > 1:
        mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
    return mask.astype(bool)


__all__ = [
    "CHANNELS",
    "CONTENT_LEVEL",
    "TISSUE_OD",
    "auto_channel",
    "background_value",
    "content_fraction",
    "is_bright_background",
    "normalise",
    "registration_channel",
    "slide_colour",
    "tissue_mask",
]
