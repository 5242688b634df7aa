"""Fitting a Gaussian mixture to one volume block by gradient descent (torch).

Importing this module needs torch (an optional extra); :mod:`.compress` imports it only when a
fit starts, so reading and decoding ``.hgm`` files work without torch.

The fit follows the 3D Gaussian-splatting recipe adapted to volumes with additive
("fluorescence") blending: Gaussians start where the data are (importance-sampled occupied
voxels), Adam moves all parameters under an edge-aware L1 + L2 + SSIM loss, and every few
steps Gaussians with large positional gradients are cloned (small ones) or split (large ones)
while faint or degenerate ones are pruned, until the budget is reached. Empty space is left to
a constant background: no Gaussian is placed where the smoothed data are within noise of it.

Values are fitted normalised: ``(volume - background) / value_range``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from ..progress import Progress, ProgressGenerator
from ._torch import require_torch
from .cancel import CancelSignal, check_cancel
from .config import FitConfig
from .mixture import GaussianMixture, quaternion_to_matrix
from .normalise import Normalisation, occupancy
from .render_torch import render_torch

torch = require_torch()
F = torch.nn.functional

#: Edge of the random crop on which the SSIM term is evaluated each step (SSIM over the whole
#: block every step would cost ten times the rendering).
_SSIM_CROP = (12, 48, 48)
#: Amplitudes (normalised) never go below this; the pruning threshold is far above it.
_MIN_AMPLITUDE = 1e-6


@dataclass
class BlockFit:
    """The result of fitting one block: Gaussians in normalised units, block coordinates."""

    centres: np.ndarray
    scales: np.ndarray
    rotations: np.ndarray
    amplitudes: np.ndarray
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def mixture(self, norm: Normalisation, offset=(0, 0, 0)) -> GaussianMixture:
        """Gaussians in volume units and volume coordinates (background not included)."""
        return GaussianMixture(
            self.centres.astype(np.float64) + np.asarray(offset, dtype=np.float64),
            self.scales.astype(np.float64),
            self.rotations.astype(np.float64),
            self.amplitudes.astype(np.float64) * norm.value_range,
            0.0,
        )


def initial_gaussians(
    x: np.ndarray, occ: np.ndarray, n: int, cfg: FitConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Place ``n`` Gaussians where the data are.

    First on the local maxima of the smoothed block (brightest first, sub-voxel by a parabola
    through the neighbours), then, if the budget is larger, on occupied voxels drawn half
    uniformly and half by brightness. Scales come from the distance to the three nearest
    neighbours (as 3D Gaussian splatting initialises from a point cloud), amplitudes from the
    smoothed data at the centre.
    """
    smooth = ndi.gaussian_filter(x, 1.0)
    peaks = (smooth == ndi.maximum_filter(smooth, size=5)) & occ & (smooth > 0)
    peak_idx = np.flatnonzero(peaks)
    peak_idx = peak_idx[np.argsort(-smooth.ravel()[peak_idx], kind="stable")][:n]
    centres = _subvoxel(smooth, np.stack(np.unravel_index(peak_idx, x.shape), 1))
    rest = n - len(peak_idx)
    if rest > 0:
        idx = np.setdiff1d(np.flatnonzero(occ), peak_idx, assume_unique=True)
        if len(idx) == 0:
            idx = np.setdiff1d(np.arange(x.size), peak_idx, assume_unique=True)
        w = np.clip(smooth.ravel()[idx], 0, None).astype(np.float64)
        # half uniform, half by brightness (all uniform where nothing is above background)
        p = np.full(len(idx), 0.5 / len(idx))
        p += 0.5 * w / w.sum() if w.sum() > 0 else 0.5 / len(idx)
        p /= p.sum()
        pick = rng.choice(idx, size=min(rest, len(idx)), replace=False, p=p)
        extra = np.stack(np.unravel_index(pick, x.shape), 1).astype(np.float64)
        extra += rng.uniform(-0.5, 0.5, extra.shape)
        centres = np.concatenate([centres, extra])
    n = len(centres)
    if n > 3:
        dist, _ = cKDTree(centres).query(centres, k=4)
        spacing = dist[:, 1:].mean(1)
    else:
        spacing = np.full(n, 4.0)
    sigma = np.clip(cfg.init_sigma * spacing, cfg.min_sigma, cfg.max_sigma)
    scales = np.repeat(sigma[:, None], 3, 1)
    rotations = np.tile([1.0, 0.0, 0.0, 0.0], (n, 1))
    at = np.clip(np.round(centres).astype(int), 0, np.array(x.shape) - 1)
    amps = np.clip(smooth[tuple(at.T)], 0, None) * 0.6
    return centres, scales, rotations, amps


def _subvoxel(v: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Refine integer peak positions by a parabola through each axis' neighbours."""
    out = at.astype(np.float64)
    for ax in range(3):
        lo, hi = at.copy(), at.copy()
        lo[:, ax] = np.maximum(at[:, ax] - 1, 0)
        hi[:, ax] = np.minimum(at[:, ax] + 1, v.shape[ax] - 1)
        a, b, c = v[tuple(lo.T)], v[tuple(at.T)], v[tuple(hi.T)]
        den = a - 2 * b + c
        shift = np.where(den < 0, 0.5 * (a - c) / np.where(den < 0, den, -1), 0.0)
        out[:, ax] += np.clip(shift, -0.5, 0.5)
    return out


def _gauss_kernel(sigma: float = 1.5, radius: int = 4) -> torch.Tensor:
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-t * t / (2 * sigma * sigma))
    return k / k.sum()


def ssim3d_torch(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean 3D SSIM of two volumes (Gaussian window sigma 1.5), differentiable."""
    k = _gauss_kernel()
    st = torch.stack([a, b, a * a, b * b, a * b])[:, None]
    for dim in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + dim] = len(k)
        st = F.conv3d(st, k.view(shape))
    mx, my, sxx, syy, sxy = st[:, 0]
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    vx, vy, cxy = sxx - mx * mx, syy - my * my, sxy - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean()


def edge_weights(x: np.ndarray, strength: float) -> np.ndarray:
    """``1 + strength * |grad| / mean |grad|`` of the lightly smoothed block."""
    if strength <= 0:
        return np.ones_like(x)
    g = ndi.gaussian_gradient_magnitude(x, 1.0)
    return (1.0 + strength * g / max(float(g.mean()), 1e-12)).astype(np.float32)


class _Params:
    """The optimised tensors and their Adam optimiser (rebuilt after densification)."""

    def __init__(self, centres, scales, rotations, amps, cfg: FitConfig):
        t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
        self.mu = t(centres).requires_grad_()
        self.log_s = t(np.log(scales)).requires_grad_()
        self.quat = t(rotations).requires_grad_()
        # Amplitudes are optimised as logarithms: steps are relative, whatever the data's scale,
        # and amplitudes stay positive (additive, fluorescence-like blending).
        self.log_a = t(np.log(np.maximum(amps, _MIN_AMPLITUDE))).requires_grad_()
        self.opt = torch.optim.Adam(
            [
                {"params": [self.mu], "lr": cfg.lr_position},
                {"params": [self.log_s], "lr": cfg.lr_scale},
                {"params": [self.quat], "lr": cfg.lr_rotation},
                {"params": [self.log_a], "lr": cfg.lr_amplitude},
            ]
        )
        self.grad_acc = torch.zeros(len(self.log_a))
        self.grad_steps = 0

    def numpy(self):
        with torch.no_grad():
            q = self.quat / self.quat.norm(dim=1, keepdim=True).clamp_min(1e-12)
            return (
                self.mu.numpy().astype(np.float64),
                np.exp(self.log_s.numpy()).astype(np.float64),
                q.numpy().astype(np.float64),
                np.exp(self.log_a.numpy()).astype(np.float64),
            )

    def render(self, shape, origin=(0.0, 0.0, 0.0), step=(1.0, 1.0, 1.0)):
        return render_torch(
            self.mu, self.log_s.exp(), self.quat, self.log_a.exp(), shape, origin, step
        )

    def __len__(self) -> int:
        return len(self.log_a)

    def project(self, shape, cfg: FitConfig) -> None:
        """Keep parameters valid: scales in range, amplitudes non-negative, centres inside."""
        with torch.no_grad():
            self.log_s.clamp_(math.log(cfg.min_sigma), math.log(cfg.max_sigma))
            self.log_a.clamp_(min=math.log(_MIN_AMPLITUDE))
            for ax, n in enumerate(shape):
                self.mu[:, ax].clamp_(-0.5, n - 0.5)
            self.quat /= self.quat.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _densify(p: _Params, n_target: int, cfg: FitConfig, shape, rng, steps_left: int) -> _Params:
    """Prune faint / degenerate Gaussians, then clone or split those with large gradients."""
    mu, s, q, a = p.numpy()
    grad = (p.grad_acc / max(p.grad_steps, 1)).numpy()
    aniso = s.max(1) / s.min(1)
    keep = (a > cfg.prune_amplitude) & (aniso < cfg.max_anisotropy)
    if keep.sum() < 1:
        keep[np.argmax(a)] = True
    mu, s, q, a, grad = mu[keep], s[keep], q[keep], a[keep], grad[keep]
    room = n_target - len(a)
    if room > 0:
        # Grow by at most a third per step, but enough to reach the budget by the last one.
        k = min(room, max(1, len(a) // 3, math.ceil(room / max(1, steps_left))))
        chosen = np.argsort(-grad)[:k]
        big = s[chosen].max(1) > 1.5 * cfg.min_sigma * 2
        new_mu, new_s, new_q, new_a = [], [], [], []
        rot = quaternion_to_matrix(q[chosen])
        for j, i in enumerate(chosen):
            if big[j]:
                # Split along the longest axis into two narrower Gaussians.
                axis = rot[j][:, np.argmax(s[i])]
                off = axis * s[i].max() * 0.5
                mu[i] = mu[i] - off
                s[i] = np.maximum(s[i] / 1.6, cfg.min_sigma)
                new_mu.append(mu[i] + 2 * off)
                new_s.append(s[i].copy())
            else:
                # Clone: share the amplitude, nudge the copies apart.
                off = rng.normal(size=3)
                off *= 0.5 * s[i].mean() / max(np.linalg.norm(off), 1e-9)
                mu[i] = mu[i] - off / 2
                a[i] = a[i] * 0.5
                new_mu.append(mu[i] + off)
                new_s.append(s[i].copy())
            new_q.append(q[i].copy())
            new_a.append(a[i])
        if new_mu:
            mu = np.concatenate([mu, np.array(new_mu)])
            s = np.concatenate([s, np.array(new_s)])
            q = np.concatenate([q, np.array(new_q)])
            a = np.concatenate([a, np.array(new_a)])
    for ax, n in enumerate(shape):
        mu[:, ax] = np.clip(mu[:, ax], -0.5, n - 0.5)
    return _Params(mu, s, q, a, cfg)


def iter_fit_block(
    x: np.ndarray,
    n_target: int,
    cfg: FitConfig,
    norm: Normalisation,
    *,
    context: np.ndarray | None = None,
    time_budget: float | None = None,
    label: str = "fit",
    cancel: CancelSignal | None = None,
) -> ProgressGenerator[BlockFit]:
    """Fit ``n_target`` Gaussians to a normalised block ``x``; yields progress.

    Parameters
    ----------
    x
        Block values, normalised (``Normalisation.forward``), float32.
    n_target
        Number of Gaussians to end with (densification grows to it).
    context
        Normalised values that Gaussians fitted elsewhere already add inside this block
        (neighbouring blocks); the fit explains the rest.
    time_budget
        Seconds after which the optimisation stops.
    label
        Names the block in progress messages.
    cancel
        Checked before the set-up and between two optimiser steps; once it is set the fit
        raises :class:`.cancel.FitCancelled` (it computes at most the step it is in).
    """
    check_cancel(cancel)
    t0 = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    shape = x.shape
    target = torch.from_numpy(np.ascontiguousarray(x))
    ctx = torch.from_numpy(np.ascontiguousarray(context)) if context is not None else None
    occ = occupancy(x if context is None else x - context, norm, cfg.occupancy_threshold)
    weights = torch.from_numpy(edge_weights(x, cfg.edge_weight))
    n_target = max(1, int(n_target))
    n0 = max(1, int(round(n_target * cfg.init_fraction)))
    resid0 = x if context is None else x - context
    mu0, s0, q0, a0 = initial_gaussians(resid0, occ, n0, cfg, rng)
    # Overlapping initial Gaussians overshoot: scale all amplitudes by the least-squares factor.
    with torch.no_grad():
        t32 = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
        r = render_torch(t32(mu0), t32(s0), t32(q0), t32(a0), shape)
        resid_t = torch.from_numpy(np.ascontiguousarray(resid0))
        a0 = a0 * float((r * resid_t).sum() / (r * r).sum().clamp_min(1e-12))
    p = _Params(mu0, s0, q0, np.clip(a0, 0, None), cfg)
    mse0 = float((target**2).mean()) if ctx is None else float(((target - ctx) ** 2).mean())
    mse0 = max(mse0, 1e-12)
    l10 = max(float(target.abs().mean()), 1e-12)
    history: list[dict] = []
    last_densify = int(cfg.densify_until * cfg.iterations)
    crop = [min(c, s) for c, s in zip(_SSIM_CROP, shape, strict=True)]
    use_ssim = cfg.ssim_weight > 0 and all(c >= 9 for c in crop)
    it = 0
    n_coarse = int(cfg.coarse_fraction * cfg.iterations)
    for it in range(cfg.iterations):
        check_cancel(cancel)
        # Position steps shrink geometrically to a twentieth over the fit.
        p.opt.param_groups[0]["lr"] = cfg.lr_position * 0.05 ** (it / cfg.iterations)
        if it < n_coarse:
            # A random half-resolution lattice: an unbiased estimate of the loss at 1/8 the
            # cost (axes shorter than 8 voxels stay whole).
            step = tuple(2 if n >= 8 else 1 for n in shape)
            phase = tuple(int(rng.integers(0, st)) for st in step)
            sl = tuple(slice(ph, None, st) for ph, st in zip(phase, step, strict=True))
        else:
            step, phase, sl = (1, 1, 1), (0, 0, 0), (slice(None),) * 3
        tgt, w = target[sl], weights[sl]
        pred = p.render(tgt.shape, phase, step)
        if ctx is not None:
            pred = pred + ctx[sl]
        err = pred - tgt
        loss = cfg.l1_weight * (w * err.abs()).mean() / l10
        mse = (err * err).mean()
        loss = loss + cfg.l2_weight * (w * err * err).mean() / mse0
        if use_ssim and all(c <= n for c, n in zip(crop, tgt.shape, strict=True)):
            o = [int(rng.integers(0, n - c + 1)) for n, c in zip(tgt.shape, crop, strict=True)]
            cs = tuple(slice(a, a + c) for a, c in zip(o, crop, strict=True))
            loss = loss + cfg.ssim_weight * (1 - ssim3d_torch(pred[cs], tgt[cs]))
        p.opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            p.grad_acc += p.mu.grad.norm(dim=1)
            p.grad_steps += 1
        p.opt.step()
        p.project(shape, cfg)
        psnr = -10 * math.log10(max(float(mse.detach()), 1e-20))
        if it % 10 == 0 or it == cfg.iterations - 1:
            history.append(
                {
                    "iteration": it,
                    "loss": float(loss.detach()),
                    "psnr": psnr,
                    "gaussians": len(p),
                }
            )
        elapsed = time.perf_counter() - t0
        if (it + 1) % cfg.densify_every == 0 and it + 1 < last_densify:
            steps_left = (last_densify - it - 1) // cfg.densify_every + 1
            p = _densify(p, n_target, cfg, shape, rng, steps_left)
        yield Progress(
            it + 1,
            cfg.iterations,
            f"{label}: loss {float(loss.detach()):.4f}, PSNR {psnr:.2f} dB, {len(p)} Gaussians",
            "fit",
        )
        if time_budget is not None and elapsed > time_budget:
            break
    mu, s, q, a = p.numpy()
    keep = a > 0
    return BlockFit(mu[keep], s[keep], q[keep], a[keep], history, time.perf_counter() - t0)
