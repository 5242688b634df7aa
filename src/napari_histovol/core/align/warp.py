"""Warp full-resolution sections with their transforms, strip by strip, lazily (dask).

Output pixel p takes the source at ``matrix @ (p + field(p))`` (bicubic: bilinear resampling
blurred every section but the reference by up to 40 % of its fine detail, and QC read the
sharper reference as damage); outside the source
is filled with the section's own background (white on a brightfield slide), the dtype is kept
and integer values are rounded and saturated, never wrapped.
"""

from __future__ import annotations

import os
from dataclasses import replace

import cv2
import dask.array as da
import numpy as np

from ..errors import InputError
from ..image import background_value
from ..io.volume import Volume
from .transforms import SectionTransform, load_transforms, scale_matrix

_CV_DTYPES = (np.uint8, np.uint16, np.int16, np.float32)
_CV_MAX_SIDE = 32000  # OpenCV's remap/warpAffine work on images below SHRT_MAX pixels a side
STRIP_ROWS = 1024


def warp_section(
    plane: np.ndarray,
    t: SectionTransform,
    out_shape: tuple[int, int],
    *,
    fill: np.ndarray | None = None,
    strip_rows: int = STRIP_ROWS,
) -> np.ndarray:
    """Warp one (Y, X[, C]) section into an ``out_shape`` aligned frame."""
    if fill is None:
        fill = background_value(plane)
    work = plane
    if plane.dtype not in _CV_DTYPES:
        work = plane.astype(np.float32)
    if work.ndim == 3 and work.shape[2] > 4:
        return np.stack(
            [
                warp_section(plane[..., c], t, out_shape, fill=np.asarray(fill).reshape(-1)[c])
                for c in range(plane.shape[2])
            ],
            axis=-1,
        )
    border = tuple(float(v) for v in np.atleast_1d(fill)) + (0.0,) * 3
    H, W = out_shape
    out = np.empty((H, W) + plane.shape[2:], dtype=work.dtype)
    big = max(plane.shape[:2]) >= _CV_MAX_SIDE or max(H, W) >= _CV_MAX_SIDE
    if t.field is None and not big:
        out[...] = cv2.warpAffine(
            work,
            t.matrix[:2],
            (W, H),
            flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=border[:4],
        ).reshape(out.shape)
    else:
        m = t.matrix.astype(np.float64)
        xs = np.arange(W, dtype=np.float64)
        for y0 in range(0, H, strip_rows):
            y1 = min(H, y0 + strip_rows)
            yy, xx = np.meshgrid(np.arange(y0, y1, dtype=np.float64), xs, indexing="ij")
            if t.field is not None:
                d = t.displacement_on_grid(np.arange(y0, y1, dtype=np.float64), xs)
                xx = xx + d[0]
                yy = yy + d[1]
            mx = (m[0, 0] * xx + m[0, 1] * yy + m[0, 2]).astype(np.float32)
            my = (m[1, 0] * xx + m[1, 1] * yy + m[1, 2]).astype(np.float32)
            out[y0:y1] = _remap(work, mx, my, border, big).reshape(out[y0:y1].shape)
    if out.dtype != plane.dtype:
        if plane.dtype.kind in "ui":
            info = np.iinfo(plane.dtype)
            out = np.clip(np.rint(out), info.min, info.max)
        out = out.astype(plane.dtype)
    return out


def _remap(img: np.ndarray, mx: np.ndarray, my: np.ndarray, border: tuple, big: bool) -> np.ndarray:
    if not big:
        return cv2.remap(
            img, mx, my, cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT, borderValue=border[:4]
        )
    from scipy import ndimage as ndi

    chans = [img] if img.ndim == 2 else [img[..., c] for c in range(img.shape[2])]
    outs = [
        ndi.map_coordinates(c, [my, mx], order=3, mode="constant", cval=border[i])
        for i, c in enumerate(chans)
    ]
    return outs[0] if img.ndim == 2 else np.stack(outs, axis=-1)


def warp_volume(
    data: da.Array, transforms: list[SectionTransform], out_shape: tuple[int, int]
) -> da.Array:
    """Lazily warp every section of a (Z, Y, X[, C]) dask array (one task per section)."""
    data = data.rechunk((1,) + data.shape[1:])
    H, W = out_shape
    chunks = ((1,) * data.shape[0], (H,), (W,)) + tuple((c,) for c in data.shape[3:])

    def fn(block, block_info=None):
        z = block_info[0]["chunk-location"][0]
        t = transforms[z]
        if t.is_identity and block.shape[1:3] == (H, W):
            return block
        return warp_section(block[0], t, (H, W))[None]

    return da.map_blocks(fn, data, dtype=data.dtype, chunks=chunks)


def apply_transforms(volume: Volume, transforms_path: str | os.PathLike) -> Volume:
    """Re-apply a ``T.json`` to a volume: another channel, or a higher-resolution copy of the
    same sections (matrices are scaled by the ratio of the files' sizes)."""
    tf = load_transforms(transforms_path)
    meta = volume.meta.with_planes(volume.shape[0])
    if len(tf.transforms) != volume.shape[0]:
        raise InputError(
            f"The transforms file has {len(tf.transforms)} slices but the input has "
            f"{volume.shape[0]}; give the same sections."
        )
    shapes = meta.extra.get("source_shapes") or [list(volume.shape[1:3])] * volume.shape[0]
    offsets = meta.extra.get("canvas_offsets") or [[0, 0]] * volume.shape[0]
    ks = [shapes[i][0] / tf.source_shapes[i][0] for i in range(len(shapes))]
    kx = [shapes[i][1] / tf.source_shapes[i][1] for i in range(len(shapes))]
    k = float(np.median(ks))
    if max(abs(a - k) for a in ks + kx) > 0.02 * k:
        raise InputError(
            "The sections are not a uniformly scaled copy of those the transforms were made for."
        )
    out_shape = (round(tf.canvas[0] * k), round(tf.canvas[1] * k))
    K = np.linalg.inv(scale_matrix(1.0 / k)) if k != 1 else np.eye(3)  # old pixel -> new pixel
    transforms = []
    for i, t in enumerate(tf.transforms):
        m_file = K @ t.matrix @ np.linalg.inv(K)
        off = np.array([[1, 0, offsets[i][1]], [0, 1, offsets[i][0]], [0, 0, 1.0]])
        fld = None if t.field is None else t.field * k
        transforms.append(SectionTransform(off @ m_file, fld, t.field_scale / k))
    data = warp_volume(volume.data, transforms, out_shape)
    extra = {kk: v for kk, v in meta.extra.items() if kk not in ("canvas_offsets", "source_shapes")}
    # the sections are aligned as the transforms say (QC and the widgets read this key)
    extra["alignment"] = {"applied": os.fspath(transforms_path)}
    return Volume(data, replace(meta, extra=extra))
