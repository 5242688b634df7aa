"""Damage of known shape injected into real sections: the ground truth of the QC tests and
benchmark.

Every injector takes one section (2D gray or ``(H, W, 3)`` RGB, any dtype) and a
``numpy.random.Generator`` and returns the damaged section and a boolean mask of the pixels it
changed. Damage is modelled in tissue terms, so it looks alike on bright slides (brightfield,
EM: more tissue is darker) and dark backgrounds (fluorescence: more tissue is brighter):

- fold: tissue near a curved line slides toward it and lies double there (a band of doubled
  density: a dark band on a slide);
- tear: a curved crack opens, the tissue on both sides is pushed apart and the slide shows;
- blur: one half of the section (a random side) is out of focus;
- debris: a few small dark or bright blobs (dust, bubbles);
- contrast: the stain (the distance from the background) is scaled;
- misaligned: the section is shifted.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..image import background_value, is_bright_background

#: The kinds of local and whole-section damage these injectors make.
INJECTABLE = ("fold", "tear", "blur", "debris", "contrast", "misaligned")


def _float(img: np.ndarray) -> tuple[np.ndarray, float]:
    top = float(np.iinfo(img.dtype).max) if img.dtype.kind in "ui" else max(float(img.max()), 1e-6)
    return img.astype(np.float32) / top, top


def _back(f: np.ndarray, top: float, like: np.ndarray) -> np.ndarray:
    out = np.clip(f, 0, 1) * top
    if like.dtype.kind in "ui":
        return np.rint(out).astype(like.dtype)
    return out.astype(like.dtype)


def _curve(shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance (px) to a random gently curved line through the central half of the image,
    and the unit normal field (ny, nx) pointing to its positive side."""
    h, w = shape
    theta = rng.uniform(0, np.pi)
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    ny, nx = np.cos(theta), -np.sin(theta)  # normal of a line at angle theta
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    along = (yy - cy) * np.sin(theta) + (xx - cx) * np.cos(theta)
    amp = rng.uniform(0.02, 0.06) * min(h, w)
    period = rng.uniform(0.6, 1.2) * max(h, w)
    bend = amp * np.sin(2 * np.pi * along / period + rng.uniform(0, 2 * np.pi))
    d = (yy - cy) * ny + (xx - cx) * nx - bend
    return d.astype(np.float32), np.array([ny, nx], np.float32)


def _remap(img: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    h, w = dy.shape
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    return cv2.remap(img, gx + dx, gy + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _density(f: np.ndarray, bg: np.ndarray, bright: bool) -> np.ndarray:
    """Tissue density: optical density on a bright slide, intensity above background otherwise."""
    if bright:
        return -np.log(np.clip(f / np.maximum(bg, 1e-3), 1e-3, 1.0))
    return np.maximum(f - bg, 0)


def _from_density(d: np.ndarray, bg: np.ndarray, bright: bool) -> np.ndarray:
    return bg * np.exp(-d) if bright else bg + d


def _bg(img: np.ndarray, f: np.ndarray, top: float) -> np.ndarray:
    """The bare slide: the brightest tissue-free level on a bright slide (EM film included),
    the darkest on a dark background."""
    q = 99.7 if is_bright_background(img) else 0.3
    flat = f.reshape(-1, f.shape[-1]) if f.ndim == 3 else f.reshape(-1)
    b = np.percentile(flat, q, axis=0).astype(np.float32)
    return b if f.ndim == 3 else np.float32(b)


def fold(
    img: np.ndarray, rng: np.random.Generator, *, strength: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """A fold: tissue within ``2 * width`` of a curved line slides toward it and lies double in a
    band of ``width`` pixels (width 3-8 % of the shorter side, times ``strength``).

    Parameters
    ----------
    img
        One section.
    rng
        Random generator (line position, angle, bend).
    strength
        Scales the band width and the extra density in it.

    Returns
    -------
    damaged, mask
        The folded section and the pixels the fold changed.
    """
    f, top = _float(img)
    h, w = f.shape[:2]
    d, _ = _curve((h, w), rng)
    width = max(3.0, rng.uniform(0.03, 0.06) * min(h, w) * strength)
    # the positive side slides toward the line by up to `width` (zero at 3 widths)
    pull = np.clip(1 - (d - width / 2) / (2.5 * width), 0, 1) * (d > 0) * width
    gy, gx = np.gradient(d)
    norm = np.maximum(np.hypot(gy, gx), 1e-6)
    moved = _remap(f, pull * gy / norm, pull * gx / norm)
    bright = is_bright_background(img)
    bg = _bg(img, f, top)
    band = np.exp(-((d / (width / 2)) ** 4)).astype(np.float32)  # soft-edged band
    if f.ndim == 3:
        band3 = band[..., None]
    else:
        band3 = band
    dens = _density(moved, bg, bright)
    # the band holds the tissue twice, plus a fold's own compression
    extra = (1.0 + min(strength, 2.0)) * (dens + 0.3)
    out = _from_density(dens + band3 * extra, bg, bright)
    mask = (band > 0.2) | (pull > 0.5)
    return _back(out, top, img), mask


def tear(
    img: np.ndarray, rng: np.random.Generator, *, strength: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """A tear: a crack of 1.5-3 % of the shorter side (times ``strength``) opens along a curved
    line that runs from one edge part way across; both sides are pushed apart and the slide shows.

    Returns
    -------
    damaged, mask
        The torn section and the pixels the tear changed.
    """
    f, top = _float(img)
    h, w = f.shape[:2]
    d, _ = _curve((h, w), rng)
    gap = max(2.0, rng.uniform(0.015, 0.03) * min(h, w) * strength)
    # the crack runs part way: limit it along the line with a second coordinate
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    gy, gx = np.gradient(d)
    norm = np.maximum(np.hypot(gy, gx), 1e-6)
    ty, tx = -gx / norm, gy / norm
    along = (yy - h / 2) * ty + (xx - w / 2) * tx
    reach = rng.uniform(0.1, 0.5) * max(h, w)
    start = -max(h, w)
    taper = np.clip((reach - along) / (0.15 * max(h, w)), 0, 1) * (along > start)
    half = gap / 2 * taper
    # each side is pushed away from the crack by half the gap, fading over 3 gaps
    fade = np.clip(1 - np.abs(d) / (3 * gap + 1), 0, 1)
    push = np.sign(d) * half * fade
    moved = _remap(f, -push * gy / norm, -push * gx / norm)
    crack = np.abs(d) < half
    bg = _bg(img, f, top)
    soft = cv2.GaussianBlur(crack.astype(np.float32), (0, 0), 0.6)
    soft = soft[..., None] if f.ndim == 3 else soft
    out = moved * (1 - soft) + bg * soft
    mask = crack | ((fade > 0.3) & (half > 0.5))
    return _back(out, top, img), mask


def blur_half(
    img: np.ndarray, rng: np.random.Generator, *, sigma: float = 3.0
) -> tuple[np.ndarray, np.ndarray]:
    """Defocus on one half of the section (a random side), Gaussian ``sigma`` pixels, with a
    soft boundary.

    Returns
    -------
    damaged, mask
        The section and the blurred half (where the blur weight is above one half).
    """
    f, top = _float(img)
    h, w = f.shape[:2]
    blurred = cv2.GaussianBlur(f, (0, 0), sigma)
    side = rng.integers(4)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    coord = [xx / w, 1 - xx / w, yy / h, 1 - yy / h][side]
    wgt = np.clip((coord - 0.5) / 0.05 + 0.5, 0, 1).astype(np.float32)
    wg = wgt[..., None] if f.ndim == 3 else wgt
    out = f * (1 - wg) + blurred * wg
    return _back(out, top, img), wgt > 0.5


def debris(
    img: np.ndarray, rng: np.random.Generator, *, n: int = 4, strength: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` blobs of dust or bubbles, radius 1.5-4 % of the shorter side times ``strength``:
    dark (opaque dust) or, on a dark background, bright (autofluorescent particles).

    Returns
    -------
    damaged, mask
        The section and the blobs.
    """
    f, top = _float(img)
    h, w = f.shape[:2]
    bright = is_bright_background(img)
    mask = np.zeros((h, w), np.uint8)
    for _ in range(n):
        r = max(2.0, rng.uniform(0.015, 0.04) * min(h, w) * strength)
        cy, cx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
        axes = (int(round(r)), int(round(r * rng.uniform(0.5, 1.0))))
        cv2.ellipse(mask, (int(cx), int(cy)), axes, rng.uniform(0, 180), 0, 360, 1, -1)
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 1.0)
    value = 0.08 if bright else float(np.percentile(f, 99.9)) * 1.1 + 0.1
    s = soft[..., None] if f.ndim == 3 else soft
    out = f * (1 - s) + value * s
    return _back(out, top, img), soft > 0.3


def contrast(
    img: np.ndarray, rng: np.random.Generator, *, factor: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A stain or exposure swing: the distance from the background scaled by ``factor``
    (random: 0.35-0.5 or 1.8-2.4 when not given).

    Returns
    -------
    damaged, mask
        The section and an all-true mask (the whole section changed).
    """
    f, top = _float(img)
    if factor is None:
        factor = rng.uniform(0.35, 0.5) if rng.random() < 0.5 else rng.uniform(1.8, 2.4)
    bg = _bg(img, f, top)
    out = bg + (f - bg) * factor
    return _back(out, top, img), np.ones(f.shape[:2], bool)


def shift(
    img: np.ndarray, rng: np.random.Generator, *, fraction: float = 0.08
) -> tuple[np.ndarray, np.ndarray]:
    """A misaligned section: shifted by ``fraction`` of its shorter side in a random direction,
    the uncovered border filled with its background.

    Returns
    -------
    damaged, mask
        The section and an all-true mask.
    """
    h, w = img.shape[:2]
    a = rng.uniform(0, 2 * np.pi)
    r = fraction * min(h, w)
    m = np.float32([[1, 0, round(r * np.cos(a))], [0, 1, round(r * np.sin(a))]])
    bg = np.asarray(background_value(img), np.float64)
    border = tuple(float(v) for v in np.atleast_1d(bg)) + (0.0,) * 3
    out = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=border[:4])
    return out, np.ones((h, w), bool)


__all__ = ["INJECTABLE", "blur_half", "contrast", "debris", "fold", "shift", "tear"]
