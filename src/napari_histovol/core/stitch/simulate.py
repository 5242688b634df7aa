"""Tiles with a known truth: a grid cut from a large image with jitter, small rotations, a
smooth elastic distortion and noise, and the error of a placement against that truth.

Used by the tests and the benchmark (and by anyone who wants to check a stitching setup on
their own images).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .pairwise import apply


@dataclass
class SimulatedGrid:
    """Tiles cut from an image, their nominal places and the truth.

    ``truth(k, pts)`` maps tile ``k``'s pixels (n, 2) to the source image's pixels.
    """

    tiles: list[np.ndarray]
    nominal: np.ndarray
    matrices: list[np.ndarray]
    fields: list[tuple[np.ndarray, np.ndarray, float] | None]

    def truth(self, k: int, pts: np.ndarray) -> np.ndarray:
        """Where tile ``k``'s pixels ``pts`` come from in the source image."""
        out = apply(self.matrices[k], pts)
        if self.fields[k] is not None:
            out = out + _field_at(self.fields[k], pts)
        return out


def _field_at(f, pts: np.ndarray) -> np.ndarray:
    ax, ay, phase = f[0], f[1], f[2]
    x, y = pts[:, 0], pts[:, 1]
    # two smooth bends over a tile (wavelength ~ 1.3 tile sides)
    ux = ax[0] * np.sin(2 * np.pi * y / ax[2] + phase) + ax[1] * np.cos(
        2 * np.pi * x / ax[2] + phase
    )
    uy = ay[0] * np.sin(2 * np.pi * x / ay[2] + phase) + ay[1] * np.cos(
        2 * np.pi * y / ay[2] - phase
    )
    return np.stack([ux, uy], 1)


def simulate_grid(
    image: np.ndarray,
    *,
    grid: tuple[int, int],
    tile: tuple[int, int],
    overlap: float = 0.15,
    jitter: float = 4.0,
    rotation_deg: float = 0.0,
    elastic_px: float = 0.0,
    noise: float = 0.0,
    seed: int = 0,
    margin: int = 16,
) -> SimulatedGrid:
    """Cut a ``grid`` of tiles from ``image`` with known transforms.

    Parameters
    ----------
    image
        (H, W) or (H, W, 3) source, large enough for the grid.
    grid
        (rows, cols).
    tile
        (height, width) of every tile.
    overlap
        Nominal overlap fraction between neighbours.
    jitter
        Each tile's true place differs from nominal by up to this (uniform, px).
    rotation_deg
        Each tile is rotated by up to this (uniform, degrees) about its centre.
    elastic_px
        Amplitude (px) of a smooth distortion within each tile.
    noise
        Standard deviation of added Gaussian noise, in grey levels of ``image``.
    seed
        Random seed.
    margin
        Distance (px) of the grid from the image border.

    Returns
    -------
    SimulatedGrid
    """
    import cv2

    rng = np.random.default_rng(seed)
    rows, cols = grid
    th, tw = tile
    step = np.array([tw * (1 - overlap), th * (1 - overlap)])
    src = np.asarray(image)
    dtype = src.dtype
    srcf = src.astype(np.float32)
    tiles, nominal, mats, fields = [], [], [], []
    for r in range(rows):
        for c in range(cols):
            nom = np.array([c * step[0], r * step[1]])
            true_t = nom + margin + rng.uniform(-jitter, jitter, 2)
            ang = np.deg2rad(rng.uniform(-rotation_deg, rotation_deg)) if rotation_deg else 0.0
            rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
            centre = np.array([tw / 2, th / 2])
            m = np.eye(3)
            m[:2, :2] = rot
            m[:2, 2] = true_t + centre - rot @ centre
            f = None
            if elastic_px:
                wl = 1.3 * max(th, tw)
                a = rng.uniform(-1, 1, 2) * elastic_px / np.sqrt(2)
                b = rng.uniform(-1, 1, 2) * elastic_px / np.sqrt(2)
                f = ((a[0], a[1], wl), (b[0], b[1], wl), float(rng.uniform(0, 2 * np.pi)))
            gx, gy = np.meshgrid(np.arange(tw, dtype=float), np.arange(th, dtype=float))
            pts = np.stack([gx.ravel(), gy.ravel()], 1)
            where = apply(m, pts)
            if f is not None:
                where = where + _field_at(f, pts)
            mx = where[:, 0].reshape(th, tw).astype(np.float32)
            my = where[:, 1].reshape(th, tw).astype(np.float32)
            t = cv2.remap(srcf, mx, my, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
            if noise:
                t = t + rng.normal(0, noise, t.shape).astype(np.float32)
            if dtype.kind in "ui":
                info = np.iinfo(dtype)
                t = np.clip(np.round(t), info.min, info.max)
            tiles.append(t.astype(dtype))
            nominal.append(nom)
            mats.append(m)
            fields.append(f)
    return SimulatedGrid(tiles, np.array(nominal), mats, fields)


def placement_error(
    truth, estimate, shapes: list[tuple[int, int]], *, points: int = 9, indices=None
) -> np.ndarray:
    """Per-point placement error (px) of an estimate against the truth, after the best rigid
    alignment of the whole estimate onto the truth (where the mosaic sits is free).

    Parameters
    ----------
    truth, estimate
        Callables ``f(k, pts)`` mapping tile ``k``'s pixels to source / mosaic pixels.
    shapes
        (H, W) of every tile.
    points
        An n x n grid of points per tile is compared.
    indices
        Tiles to compare (default all).

    Returns
    -------
    numpy.ndarray
        (tiles, points * points) distances in px.
    """
    ks = list(range(len(shapes))) if indices is None else list(indices)
    T, E = [], []
    for k in ks:
        h, w = shapes[k]
        gx, gy = np.meshgrid(np.linspace(0, w - 1, points), np.linspace(0, h - 1, points))
        pts = np.stack([gx.ravel(), gy.ravel()], 1)
        T.append(truth(k, pts))
        E.append(estimate(k, pts))
    t, e = np.concatenate(T), np.concatenate(E)
    tc, ec = t.mean(0), e.mean(0)
    u, _, vt = np.linalg.svd((e - ec).T @ (t - tc))
    d = np.sign(np.linalg.det(u @ vt))
    rot = (u @ np.diag([1, d]) @ vt).T
    aligned = (e - ec) @ rot.T + tc
    return np.linalg.norm(aligned - t, axis=1).reshape(len(ks), -1)
