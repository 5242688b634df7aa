"""Motion-compensated frame synthesis from dense optical flow in both directions.

Flow a->b and b->a come from OpenCV's DIS optical flow (coarse-to-fine, so large tissue motion
is followed) on a jointly normalised 8-bit luminance copy, downsized to at most ``max_side``
pixels for speed and scaled back. The flows from the intermediate frame at time t are
approximated from the two (Jiang et al., Super SloMo, 2018):
F_t->a = -(1-t) t F_ab + t^2 F_ba,  F_t->b = (1-t)^2 F_ab - t(1-t) F_ba.
Both sections are warped to t and blended with weights (1-t) V_a and t V_b, where V is a
forward-backward consistency visibility (occluded or inconsistent pixels trust the other side).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

DIS_PRESET = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM
CONSISTENCY_PX = 1.5
#: DIS needs a few pyramid levels of its 8-pixel patches: smaller sections are padded to this
#: (edge pixels repeated) for the flow, which is then cropped back.
MIN_FLOW_SIDE = 32


@dataclass
class PairFlow:
    f_ab: np.ndarray  # (H, W, 2) a(x) ~ b(x + f_ab)
    f_ba: np.ndarray
    vis_a: np.ndarray  # (H, W) visibility weights in frame a
    vis_b: np.ndarray


def luminance(img: np.ndarray) -> np.ndarray:
    f = img.astype(np.float32, copy=False)
    if f.ndim == 3:
        return f[..., 0] * 0.299 + f[..., 1] * 0.587 + f[..., 2] * 0.114
    return f


def _to8(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lo = float(min(np.percentile(a, 0.5), np.percentile(b, 0.5)))
    hi = float(max(np.percentile(a, 99.5), np.percentile(b, 99.5)))
    scale = 255.0 / (hi - lo) if hi > lo else 1.0
    return tuple(np.clip((x - lo) * scale, 0, 255).astype(np.uint8) for x in (a, b))


def warp_by_flow(img: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Backward warp: out(x) = img(x + flow(x)) (bilinear, edges reflected)."""
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(
        img, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )


def estimate_pair_flow(a: np.ndarray, b: np.ndarray, *, max_side: int = 1024) -> PairFlow:
    """Flows in both directions between two sections and their visibility weights."""
    la, lb = luminance(a), luminance(b)
    h, w = la.shape
    s = min(1.0, max_side / max(h, w))
    if s < 1:
        size = (max(1, round(w * s)), max(1, round(h * s)))
        la = cv2.resize(la, size, interpolation=cv2.INTER_AREA)
        lb = cv2.resize(lb, size, interpolation=cv2.INTER_AREA)
    a8, b8 = _to8(la, lb)
    f_ab, f_ba = _dis_both_ways(a8, b8)
    err_a = np.linalg.norm(f_ab + warp_by_flow(f_ba, f_ab), axis=-1)
    err_b = np.linalg.norm(f_ba + warp_by_flow(f_ab, f_ba), axis=-1)
    vis_a = np.exp(-(((err_a * (1 / s if s < 1 else 1)) / CONSISTENCY_PX) ** 2)).astype(np.float32)
    vis_b = np.exp(-(((err_b * (1 / s if s < 1 else 1)) / CONSISTENCY_PX) ** 2)).astype(np.float32)
    if s < 1:
        up = lambda f: cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR)  # noqa: E731
        f_ab, f_ba = up(f_ab) / s, up(f_ba) / s
        vis_a, vis_b = up(vis_a), up(vis_b)
    return PairFlow(f_ab.astype(np.float32), f_ba.astype(np.float32), vis_a, vis_b)


def _dis_both_ways(a8: np.ndarray, b8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DIS flow a->b and b->a; sections smaller than :data:`MIN_FLOW_SIDE` are padded for it."""
    h, w = a8.shape
    ph, pw = max(0, MIN_FLOW_SIDE - h), max(0, MIN_FLOW_SIDE - w)
    if ph or pw:
        pad = lambda x: cv2.copyMakeBorder(x, 0, ph, 0, pw, cv2.BORDER_REPLICATE)  # noqa: E731
        a8, b8 = pad(a8), pad(b8)
    dis = cv2.DISOpticalFlow_create(DIS_PRESET)
    f_ab = dis.calc(a8, b8, None)[:h, :w]
    f_ba = dis.calc(b8, a8, None)[:h, :w]
    return np.ascontiguousarray(f_ab), np.ascontiguousarray(f_ba)


def synthesize(a: np.ndarray, b: np.ndarray, flow: PairFlow, t: float) -> np.ndarray:
    """The frame at time t in (0, 1) between sections a (t=0) and b (t=1), as float32."""
    f_ta = -(1 - t) * t * flow.f_ab + t * t * flow.f_ba
    f_tb = (1 - t) ** 2 * flow.f_ab - t * (1 - t) * flow.f_ba
    af, bf = a.astype(np.float32, copy=False), b.astype(np.float32, copy=False)
    wa, wb = warp_by_flow(af, f_ta), warp_by_flow(bf, f_tb)
    va = warp_by_flow(flow.vis_a, f_ta) * (1 - t) + 1e-4
    vb = warp_by_flow(flow.vis_b, f_tb) * t + 1e-4
    if wa.ndim == 3:
        va, vb = va[..., None], vb[..., None]
    return (va * wa + vb * wb) / (va + vb)


def cast_like(frame: np.ndarray, like: np.dtype) -> np.ndarray:
    """Round and clip a float frame back to the sections' dtype."""
    like = np.dtype(like)
    if like.kind in "ui":
        info = np.iinfo(like)
        return np.clip(np.rint(frame), info.min, info.max).astype(like)
    return frame.astype(like)
