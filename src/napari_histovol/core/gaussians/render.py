"""Footprint-proportional evaluation of Gaussian mixtures on voxel grids (numpy).

Each Gaussian is evaluated only on the grid points inside its truncated footprint: a patch
around its centre whose half-widths come from its covariance. Gaussians are grouped into buckets
of equal patch size so that a bucket is one batched array computation; the values are then
scattered into the output. The cost is the sum of the footprints (about ``N x patch`` voxel
evaluations), not ``N x voxels``.

The patch geometry (:func:`patch_plan`, :func:`patch_chunks`) and the quadratic form
(:func:`quadratic_form`) serve two evaluators:

* :func:`render_region` here is the decoder: numpy only (reading an ``.hgm`` file never needs
  torch), float64, accumulated with ``numpy.add.at`` in Gaussian order, so that a region of
  interest gives the same numbers as the same crop of the whole;
* :func:`.render_torch.render_torch` is the differentiable renderer the fit calls (torch).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .mixture import TRUNCATION, GaussianMixture, footprint_half_widths, quaternion_to_matrix

#: Patch half-widths are rounded up to one of these, so that Gaussians of similar size share
#: one batched computation.
_LEVELS = np.concatenate([np.arange(1, 17), np.arange(18, 33, 2), np.arange(36, 65, 4)])

#: Most patch voxels evaluated in one batched tensor operation (bounds memory).
_MAX_BATCH_VOXELS = 4_000_000


def _bucket(h: np.ndarray) -> np.ndarray:
    """Round patch half-widths up to the nearest level (beyond the last: multiples of 16)."""
    idx = np.searchsorted(_LEVELS, h)
    over = idx >= len(_LEVELS)
    out = _LEVELS[np.minimum(idx, len(_LEVELS) - 1)]
    return np.where(over, 16 * np.ceil(h / 16).astype(np.int64), out)


def precisions(scales, rot):
    """Inverse covariances ``R diag(1/s^2) R^T``, ``(N, 3, 3)``, from scales ``(N, 3)`` and
    rotation matrices ``(N, 3, 3)``: numpy arrays or torch tensors (differentiable)."""
    return (rot * (1.0 / (scales * scales))[:, None, :]) @ rot.swapaxes(1, 2)


def patch_plan(
    centres: np.ndarray,
    scales: np.ndarray,
    rotations: np.ndarray,
    origin=(0.0, 0.0, 0.0),
    step=(1.0, 1.0, 1.0),
    start=(0, 0, 0),
) -> tuple[np.ndarray, np.ndarray, int]:
    """Patch half-widths per Gaussian (bucketed), patch centres (grid index) and the padding.

    The patch of Gaussian ``i`` covers grid points ``base_i +- need_i``, which contains every
    point of its truncated footprint. ``pad`` is twice the largest half-width: a grid padded by it on
    every side holds all patches of Gaussians whose footprint meets the grid (their patch
    centre lies at most one half-width outside it), so no patch needs clipping.
    """
    step = np.asarray(step, dtype=np.float64)
    centre_idx = (np.asarray(centres, dtype=np.float64) - np.asarray(origin, np.float64)) / step
    centre_idx = centre_idx - np.asarray(start, dtype=np.float64)
    hw = footprint_half_widths(scales, rotations) / step
    base = np.round(centre_idx).astype(np.int64)
    need = _bucket(np.maximum(np.ceil(hw + 0.5).astype(np.int64), 1))
    pad = 2 * int(need.max()) if len(need) else 0
    return need, base, pad


@dataclass
class PatchChunk:
    """One batch of equally sized patches: which Gaussians, where their voxels go, and each
    patch voxel's offset from its Gaussian's centre per axis (the patch is a separable grid)."""

    sel: np.ndarray  # (n,) Gaussian indices
    flat: np.ndarray  # (n*P,) indices into the padded flat grid
    dz: np.ndarray  # (n, Kz) grid coordinate minus centre, per axis
    dy: np.ndarray  # (n, Ky)
    dx: np.ndarray  # (n, Kx)


def patch_chunks(
    centres: np.ndarray,
    shape: tuple[int, int, int],
    plan: tuple[np.ndarray, np.ndarray, int],
    origin,
    step,
    start,
) -> Iterator[PatchChunk]:
    """The patches of all Gaussians, bucket by bucket, in batches of bounded size."""
    need, base, pad = plan
    centres = np.asarray(centres, dtype=np.float64)
    padded = [s + 2 * pad for s in shape]
    stride_z, stride_y = padded[1] * padded[2], padded[2]
    keys = need[:, 0] * 1_000_000 + need[:, 1] * 1_000 + need[:, 2]
    order = np.argsort(keys, kind="stable")
    uniq, firsts = np.unique(keys[order], return_index=True)
    bounds = list(firsts) + [len(order)]
    origin = np.asarray(origin, dtype=np.float64)
    step = np.asarray(step, dtype=np.float64)
    start = np.asarray(start, dtype=np.int64)
    for g in range(len(uniq)):
        members = order[bounds[g] : bounds[g + 1]]
        hz, hy, hx = (int(h) for h in need[members[0]])
        vol = (2 * hz + 1) * (2 * hy + 1) * (2 * hx + 1)
        per = max(1, _MAX_BATCH_VOXELS // vol)
        for s in range(0, len(members), per):
            sel = members[s : s + per]
            b = base[sel]
            idx, d = [], []
            for ax, h in enumerate((hz, hy, hx)):
                i = b[:, ax : ax + 1] + np.arange(-h, h + 1)  # (n, K)
                coord = origin[ax] + (i + start[ax]) * step[ax]
                idx.append(i + pad)
                d.append(coord - centres[sel, ax : ax + 1])
            flat = (idx[0] * stride_z)[:, :, None, None] + (idx[1] * stride_y)[:, None, :, None]
            flat = (flat + idx[2][:, None, None, :]).reshape(-1)
            yield PatchChunk(sel, flat, *d)


def quadratic_form(prec, dz, dy, dx):
    """``d^T P d`` over a batch of separable patches, ``(n, Kz, Ky, Kx)``.

    ``prec`` holds the patches' precision matrices ``(n, 3, 3)`` and ``dz, dy, dx`` the per-axis
    offsets ``(n, K)``; assembled from per-axis terms broadcast over the patch, so only a
    handful of operations touch every patch voxel. Plain arithmetic: numpy arrays and torch
    tensors alike.
    """
    pe = prec[:, :, :, None, None, None]  # (n, 3, 3, 1, 1, 1)
    dz4, dy4, dx4 = dz[:, :, None, None], dy[:, None, :, None], dx[:, None, None, :]
    q = (pe[:, 0, 0] * dz4 + 2 * pe[:, 0, 1] * dy4) * dz4 + pe[:, 1, 1] * dy4 * dy4
    q = q + (pe[:, 2, 2] * dx4 + 2 * pe[:, 0, 2] * dz4) * dx4
    return q + (2 * pe[:, 1, 2] * dy4) * dx4


def crop_padded(padded, shape, pad: int):
    """The unpadded grid of a flat padded one (numpy array or torch tensor)."""
    p = padded.reshape([s + 2 * pad for s in shape])
    return p[pad : pad + shape[0], pad : pad + shape[1], pad : pad + shape[2]]


def select_near(mix: GaussianMixture, lo, hi) -> np.ndarray:
    """Indices (in order) of the Gaussians whose footprint box meets the box ``[lo, hi]``."""
    if len(mix) == 0:
        return np.zeros(0, dtype=np.int64)
    ext = mix.extents()
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    hit = np.all((mix.centres + ext >= lo) & (mix.centres - ext <= hi), axis=1)
    return np.flatnonzero(hit)


def render_region(
    mix: GaussianMixture,
    shape: tuple[int, int, int],
    origin=(0.0, 0.0, 0.0),
    step=(1.0, 1.0, 1.0),
    start=(0, 0, 0),
) -> np.ndarray:
    """Evaluate a mixture (background included) on a grid or a box of it, float64.

    Only the Gaussians whose footprint reaches the box are evaluated, and every voxel adds its
    contributions one by one in a fixed order (bucket, then Gaussian index), so a region gives
    exactly the numbers of the same crop of the whole grid.

    Parameters
    ----------
    mix
        The mixture, in its own voxel coordinates.
    shape
        Size of the box to evaluate ``(nz, ny, nx)``.
    origin, step
        Mixture coordinate of the full grid's point 0 and its spacing in mixture voxels.
    start
        Index of the box's first point in the full grid.
    """
    shape = tuple(int(s) for s in shape)
    origin = np.asarray(origin, dtype=np.float64)
    step = np.asarray(step, dtype=np.float64)
    start = np.asarray(start, dtype=np.int64)
    lo = origin + start * step
    hi = origin + (start + np.asarray(shape) - 1) * step
    near = select_near(mix, lo, hi)
    if not len(near):
        return np.full(shape, float(mix.background))
    sub = mix.subset(near)
    plan = patch_plan(sub.centres, sub.scales, sub.rotations, origin, step, start)
    pad = plan[2]
    prec = precisions(np.asarray(sub.scales, np.float64), quaternion_to_matrix(sub.rotations))
    amps = np.asarray(sub.amplitudes, dtype=np.float64)
    acc = np.zeros(int(np.prod([s + 2 * pad for s in shape])), dtype=np.float64)
    t2 = TRUNCATION**2
    for c in patch_chunks(sub.centres, shape, plan, origin, step, start):
        q = quadratic_form(prec[c.sel], c.dz, c.dy, c.dx)
        e = np.exp(q * -0.5)
        e[q > t2] = 0.0
        e *= amps[c.sel][:, None, None, None]
        np.add.at(acc, c.flat, e.reshape(-1))
    out = np.array(crop_padded(acc, shape, pad))
    out += mix.background
    return out
