"""The differentiable renderer the fit optimises through (torch).

It evaluates the same patches as the decoder (:mod:`.render`: patch plan, patch geometry and
quadratic form are shared) and adds them with ``index_add_``; the backward pass is written by
hand. Importing this module needs torch; only the fit does (see :mod:`._torch`).
"""

from __future__ import annotations

import numpy as np

from ._torch import require_torch
from .mixture import TRUNCATION, quaternion_entries
from .render import crop_padded, patch_chunks, patch_plan, precisions, quadratic_form

torch = require_torch()


def rotation_matrices(q: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``(N, 3, 3)`` from quaternions ``(N, 4)`` (normalised here), torch,
    differentiable (the formula is :func:`.mixture.quaternion_entries`)."""
    q = q / q.norm(dim=1, keepdim=True).clamp_min(1e-12)
    rows = quaternion_entries(*q.unbind(1))
    return torch.stack([torch.stack(row, -1) for row in rows], dim=1)


class _Chunk:
    """One batch of equally sized patches as tensors, kept for the backward pass."""

    __slots__ = ("sel", "flat", "e", "dz", "dy", "dx")

    def __init__(self, sel, flat, e, dz, dy, dx) -> None:
        self.sel, self.flat, self.e, self.dz, self.dy, self.dx = sel, flat, e, dz, dy, dx


def _chunks(centres, prec, shape, plan, origin, step, start):
    """Unit-amplitude patch values of all Gaussians, bucket by bucket (no autograd)."""
    dt = centres.dtype
    t2 = TRUNCATION**2
    with torch.no_grad():
        c_np = centres.detach().cpu().numpy()
        for c in patch_chunks(c_np, shape, plan, origin, step, start):
            sel = torch.from_numpy(c.sel)
            dz, dy, dx = (torch.from_numpy(d).to(dt) for d in (c.dz, c.dy, c.dx))
            q = quadratic_form(prec[sel], dz, dy, dx)
            e = torch.exp(q * -0.5)
            e.masked_fill_(q > t2, 0.0)
            yield _Chunk(sel, torch.from_numpy(c.flat), e, dz, dy, dx)


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
    if len(amps) == 0:
        return torch.zeros(shape, dtype=centres.dtype)
    with torch.no_grad():
        plan = patch_plan(
            centres.detach().cpu().numpy(),
            scales.detach().cpu().numpy(),
            quats.detach().cpu().numpy(),
            origin,
            step,
            start,
        )
    prec = precisions(scales, rotation_matrices(quats))
    out = _Splat.apply(centres, prec, amps, shape, plan, origin, step, start)
    return crop_padded(out, shape, plan[2])
