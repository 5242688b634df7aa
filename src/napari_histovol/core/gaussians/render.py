"""Footprint-proportional evaluation of Gaussian mixtures on voxel grids.

Each Gaussian is evaluated only on the grid points inside its truncated footprint: a patch
around its centre whose half-widths come from its covariance. Gaussians are grouped into buckets
of equal patch size so that a bucket is one batched tensor computation; the values are then
scattered into the output. The cost is the sum of the footprints (about ``N x patch`` voxel
evaluations), not ``N x voxels``.

Two entry points share :func:`patch_contributions`:

* :func:`render_torch` is differentiable (``index_add_``) and is what the fit calls;
* :func:`render_region` is the decoder: float64, accumulated with ``numpy.bincount`` in Gaussian
  order, so that a region of interest gives the same numbers as the same crop of the whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .mixture import TRUNCATION, GaussianMixture, half_widths, rotation_matrices

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


def _precisions(scales: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """Inverse covariances ``R diag(1/s^2) R^T``, ``(N, 3, 3)``, differentiable."""
    inv = 1.0 / (scales * scales)
    return torch.einsum("nij,nj,nkj->nik", rot, inv, rot)


def patch_plan(
    centres: torch.Tensor,
    scales: torch.Tensor,
    quats: torch.Tensor,
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
    with torch.no_grad():
        step_t = torch.as_tensor(step, dtype=centres.dtype)
        centre_idx = (centres - torch.as_tensor(origin, dtype=centres.dtype)) / step_t
        centre_idx = centre_idx - torch.as_tensor(start, dtype=centres.dtype)
        hw = half_widths(scales, rotation_matrices(quats)) / step_t
        base = torch.round(centre_idx).long().cpu().numpy()
        need = _bucket(np.maximum(np.ceil(hw.cpu().numpy() + 0.5).astype(np.int64), 1))
    pad = 2 * int(need.max()) if len(need) else 0
    return need, base, pad


@dataclass
class _Chunk:
    """One batch of equally sized patches: which Gaussians, their offsets and values."""

    sel: torch.Tensor  # (n,) Gaussian indices
    flat: torch.Tensor  # (n*P,) indices into the padded grid
    e: torch.Tensor  # (n, Kz, Ky, Kx) exp(-q/2) inside the truncation, 0 outside
    dz: torch.Tensor  # (n, Kz) grid coordinate minus centre, per axis
    dy: torch.Tensor  # (n, Ky)
    dx: torch.Tensor  # (n, Kx)


def _chunks(
    centres: torch.Tensor,
    prec: torch.Tensor,
    shape: tuple[int, int, int],
    plan: tuple[np.ndarray, np.ndarray, int],
    origin,
    step,
    start,
) -> Iterator[_Chunk]:
    """Evaluate the unit-amplitude patches of all Gaussians, bucket by bucket (no autograd).

    Patches are evaluated separably: the quadratic form ``d^T P d`` is assembled from per-axis
    terms broadcast over the patch, so only a handful of operations touch every patch voxel.
    """
    dev, dt = centres.device, centres.dtype
    need, base, pad = plan
    padded = [s + 2 * pad for s in shape]
    stride_z, stride_y = padded[1] * padded[2], padded[2]
    keys = need[:, 0] * 1_000_000 + need[:, 1] * 1_000 + need[:, 2]
    order = np.argsort(keys, kind="stable")
    uniq, firsts = np.unique(keys[order], return_index=True)
    bounds = list(firsts) + [len(order)]
    origin_t = torch.as_tensor(origin, dtype=dt, device=dev)
    step_t = torch.as_tensor(step, dtype=dt, device=dev)
    start_t = torch.as_tensor(start, device=dev)
    t2 = TRUNCATION**2
    with torch.no_grad():
        for g in range(len(uniq)):
            members = order[bounds[g] : bounds[g + 1]]
            hz, hy, hx = (int(h) for h in need[members[0]])
            vol = (2 * hz + 1) * (2 * hy + 1) * (2 * hx + 1)
            per = max(1, _MAX_BATCH_VOXELS // vol)
            for s in range(0, len(members), per):
                sel_np = members[s : s + per]
                sel = torch.as_tensor(sel_np, device=dev)
                b = torch.as_tensor(base[sel_np], device=dev)
                idx, d = [], []
                for ax, h in enumerate((hz, hy, hx)):
                    i = b[:, ax : ax + 1] + torch.arange(-h, h + 1, device=dev)  # (n, K)
                    coord = origin_t[ax] + (i + start_t[ax]).to(dt) * step_t[ax]
                    idx.append(i + pad)
                    d.append(coord - centres[sel, ax : ax + 1])
                dz, dy, dx = d
                pe = prec[sel][:, :, :, None, None, None]  # (n, 3, 3, 1, 1, 1)

                def pz(i: int, j: int, pe=pe) -> torch.Tensor:
                    return pe[:, i, j]

                dz4, dy4, dx4 = dz[:, :, None, None], dy[:, None, :, None], dx[:, None, None, :]
                q = (pz(0, 0) * dz4 + 2 * pz(0, 1) * dy4) * dz4 + pz(1, 1) * dy4 * dy4
                q = q + (pz(2, 2) * dx4 + 2 * pz(0, 2) * dz4) * dx4
                q = q + (2 * pz(1, 2) * dy4) * dx4
                e = torch.exp(q * -0.5)
                e.masked_fill_(q > t2, 0.0)
                flat = (idx[0] * stride_z)[:, :, None, None] + (idx[1] * stride_y)[:, None, :, None]
                flat = (flat + idx[2][:, None, None, :]).reshape(-1)
                yield _Chunk(sel, flat, e, dz, dy, dx)


class _Splat(torch.autograd.Function):
    """Sum of Gaussian patches on a padded flat grid, with a hand-written backward pass.

    Inputs are centres, precision matrices and amplitudes. The backward pass needs one gather
    of the output gradient and three partial sums per patch; every derivative then follows from
    per-axis tensors (the patch is a separable grid), which is several times cheaper than
    letting autograd differentiate the broadcast expression.
    """

    @staticmethod
    def forward(ctx, centres, prec, amps, shape, plan, origin, step, start):
        size = int(np.prod([s + 2 * plan[2] for s in shape]))
        out = torch.zeros(size, dtype=centres.dtype, device=centres.device)
        chunks = []
        for c in _chunks(centres, prec, shape, plan, origin, step, start):
            val = c.e * amps[c.sel][:, None, None, None]
            out.index_add_(0, c.flat, val.reshape(-1))
            chunks.append(c)
        ctx.chunks = chunks
        ctx.save_for_backward(prec, amps)
        ctx.n = len(centres)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        prec, amps = ctx.saved_tensors
        g_mu = torch.zeros(ctx.n, 3, dtype=grad_out.dtype)
        g_prec = torch.zeros(ctx.n, 3, 3, dtype=grad_out.dtype)
        g_amp = torch.zeros(ctx.n, dtype=grad_out.dtype)
        for c in ctx.chunks:
            we = grad_out.index_select(0, c.flat).reshape(c.e.shape) * c.e
            w_zy = we.sum(3)  # (n, Kz, Ky)
            w_zx = we.sum(2)  # (n, Kz, Kx)
            w_yx = we.sum(1)  # (n, Ky, Kx)
            w_z, w_y, w_x = w_zy.sum(2), w_zy.sum(1), w_zx.sum(1)
            a = amps[c.sel]
            g_amp[c.sel] = w_z.sum(1)
            dz, dy, dx = c.dz, c.dy, c.dx
            # S_ij = sum over the patch of w d_i d_j, S_i = sum of w d_i (w = grad * e).
            s_1 = torch.stack([(w_z * dz).sum(1), (w_y * dy).sum(1), (w_x * dx).sum(1)], 1)
            s_zz, s_yy, s_xx = (
                (w_z * dz * dz).sum(1),
                (w_y * dy * dy).sum(1),
                (w_x * dx * dx).sum(1),
            )
            s_zy = torch.einsum("nij,ni,nj->n", w_zy, dz, dy)
            s_zx = torch.einsum("nij,ni,nj->n", w_zx, dz, dx)
            s_yx = torch.einsum("nij,ni,nj->n", w_yx, dy, dx)
            s_2 = torch.stack(
                [
                    torch.stack([s_zz, s_zy, s_zx], 1),
                    torch.stack([s_zy, s_yy, s_yx], 1),
                    torch.stack([s_zx, s_yx, s_xx], 1),
                ],
                1,
            )
            # value = a exp(-q/2), q = d^T P d, d = coord - centre
            g_prec[c.sel] = -0.5 * a[:, None, None] * s_2
            g_mu[c.sel] = a[:, None] * torch.einsum("nij,nj->ni", prec[c.sel], s_1)
        return g_mu, g_prec, g_amp, None, None, None, None, None


def _crop(padded: torch.Tensor | np.ndarray, shape, pad: int):
    p = padded.reshape([s + 2 * pad for s in shape])
    return p[pad : pad + shape[0], pad : pad + shape[1], pad : pad + shape[2]]


def render_torch(
    centres: torch.Tensor,
    scales: torch.Tensor,
    quats: torch.Tensor,
    amps: torch.Tensor,
    shape: tuple[int, int, int],
    origin=(0.0, 0.0, 0.0),
    step=(1.0, 1.0, 1.0),
    start=(0, 0, 0),
) -> torch.Tensor:
    """Differentiable sum of the Gaussians on a grid (no background), ``shape`` tensor."""
    plan = patch_plan(centres, scales, quats, origin, step, start)
    if len(amps) == 0:
        return torch.zeros(shape, dtype=centres.dtype)
    prec = _precisions(scales, rotation_matrices(quats))
    out = _Splat.apply(centres, prec, amps, shape, plan, origin, step, start)
    return _crop(out, shape, plan[2])


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
    with torch.no_grad():
        t = [
            torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float64)
            for a in (sub.centres, sub.scales, sub.rotations, sub.amplitudes)
        ]
        plan = patch_plan(*t[:3], origin, step, tuple(start))
        pad = plan[2]
        prec = _precisions(t[1], rotation_matrices(t[2]))
        acc = np.zeros(int(np.prod([s + 2 * pad for s in shape])), dtype=np.float64)
        for c in _chunks(t[0], prec, shape, plan, origin, step, tuple(start)):
            val = c.e * t[3][c.sel][:, None, None, None]
            np.add.at(acc, c.flat.numpy(), val.reshape(-1).numpy())
    out = np.array(_crop(acc, shape, pad))
    out += mix.background
    return out
