"""Apply a trained axial model to a volume, block by block with overlaps (no seams, bounded
memory), lazily as a dask array."""

from __future__ import annotations

import threading

import dask
import dask.array as da
import numpy as np
import torch

from ..progress import check_cancelled
from .geometry import AxialGeometry, gap_weight, linear_matrix, spline_matrix
from .network import AxialModel, pick_device

#: Output pixels per network call: bounds the activations (32 channels of float32: 64 MB
#: each), which dominate the peak memory of applying the model.
PIXELS_PER_CALL = 1 << 19
#: One network call at a time: blocks computed on dask's threads share the model (moving it
#: to the GPU while another thread runs it gave garbage there), and torch already spreads
#: one call over the cores.
_NET_LOCK = threading.Lock()


def reconstruct_block(
    model: AxialModel, block: np.ndarray, geometry: AxialGeometry, *, device: str | None = None
) -> np.ndarray:
    """The reconstructed planes of a (n, Y, X[, C]) block of sections, as float32
    (n_out, Y, X[, C]) in the block's units; measured planes are copied unchanged.

    Parameters
    ----------
    model
        The trained axial model.
    block
        All sections of a lateral block (every z, a y-x window).
    geometry
        The grids (:func:`~.geometry.axial_geometry`) the model was trained for.
    device
        torch device (default: CUDA when present, else the CPU).
    """
    x = model.normalise(np.asarray(block))
    if x.ndim == 3:
        x = x[..., None]
    pos = np.asarray(geometry.positions)
    m_pos = geometry.model_positions
    spline = spline_matrix(pos, m_pos).astype(np.float32)
    gap = gap_weight(pos, m_pos).astype(np.float32)  # section units
    to_out = (
        np.eye(geometry.n_out, dtype=np.float32)
        if geometry.n_model == geometry.n_out and geometry.model_factor == geometry.factor
        else linear_matrix(m_pos, geometry.out_positions).astype(np.float32)
    )
    dev = pick_device(device)
    with _NET_LOCK:
        net = model.net.to(dev).eval()
    out = np.empty((geometry.n_out,) + x.shape[1:], np.float32)
    for c in range(x.shape[-1]):
        sp = np.tensordot(spline, x[..., c], axes=(1, 0))  # (n_model, Y, X)
        acc = np.zeros_like(sp)
        for o in geometry.orientations:
            acc += _run_slices(net, sp, gap, o, dev)
        acc /= len(geometry.orientations)
        out[..., c] = np.tensordot(to_out, acc, axes=(1, 0))
    out = model.denormalise(out)
    src = np.asarray(block, dtype=np.float32)
    if src.ndim == 3:
        src = src[..., None]
    for j, k in geometry.measured_out_planes().items():
        out[j] = src[k]
    return out if np.asarray(block).ndim == 4 else out[..., 0]


def reconstruct_window(
    model: AxialModel, sections: np.ndarray, positions, *, device: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The model's planes on its own grid over a few neighbouring sections (a live viewer's
    pair and its neighbours): (positions of the planes, planes as float32).

    Parameters
    ----------
    model
        A trained model (its ``model_factor`` and ``row_step`` set the grid).
    sections
        (k, Y, X[, C]) sections, k >= 2, at ``positions`` (section units, increasing).
    """
    pos = np.asarray(positions, dtype=float) - float(positions[0])
    geometry = AxialGeometry(
        tuple(pos), model.model_factor, model.model_factor, model.row_step, model.orientations
    )
    planes = reconstruct_block(model, sections, geometry, device=device)
    return geometry.out_positions + float(positions[0]), planes


def _run_slices(net, sp: np.ndarray, gap: np.ndarray, orientation: str, dev) -> np.ndarray:
    """The network over every y-z (``zy``) or x-z (``zx``) slice of ``sp`` (n_model, Y, X)."""
    n, h, w = sp.shape
    # slices as a batch: (count, 1, n_model, length)
    slices = sp.transpose(2, 0, 1) if orientation == "zy" else sp.transpose(1, 0, 2)
    count, length = slices.shape[0], slices.shape[2]
    per_call = max(1, PIXELS_PER_CALL // (n * length))
    res = np.empty_like(slices)
    g = torch.from_numpy(np.ascontiguousarray(np.broadcast_to(gap[:, None], (n, length))))
    with torch.no_grad():
        for i in range(0, count, per_call):
            s = torch.from_numpy(np.ascontiguousarray(slices[i : i + per_call]))[:, None].to(dev)
            gg = g[None, None].expand(s.shape[0], 1, n, length).to(dev)
            check_cancelled()  # an interrupted write stops here, not at the block's end
            with _NET_LOCK:
                res[i : i + per_call] = net(s, gg)[:, 0].cpu().numpy()
    return res.transpose(1, 2, 0) if orientation == "zy" else res.transpose(1, 0, 2)


def reconstruct_lazy(
    data: da.Array,
    model: AxialModel,
    geometry: AxialGeometry,
    *,
    block: int = 256,
    device: str | None = None,
) -> da.Array:
    """The reconstructed volume as a dask array of (n_out, block, block[, C]) chunks, each
    computed from its window of every section widened by the network's reach on each side, so
    blocks meet without seams."""
    from ..interpolate.flow import cast_like

    shape = data.shape
    h, w = shape[1], shape[2]
    halo = model.net.radius + 4
    rows = []
    for y0 in range(0, h, block):
        y1 = min(h, y0 + block)
        cols = []
        for x0 in range(0, w, block):
            x1 = min(w, x0 + block)
            ya, yb = max(0, y0 - halo), min(h, y1 + halo)
            xa, xb = max(0, x0 - halo), min(w, x1 + halo)

            def one(win, y0=y0, y1=y1, x0=x0, x1=x1, ya=ya, xa=xa):
                rec = reconstruct_block(model, win, geometry, device=device)
                return cast_like(rec[:, y0 - ya : y1 - ya, x0 - xa : x1 - xa], data.dtype)

            piece = dask.delayed(one, pure=False)(data[:, ya:yb, xa:xb])
            cols.append(
                da.from_delayed(
                    piece, shape=(geometry.n_out, y1 - y0, x1 - x0) + shape[3:], dtype=data.dtype
                )
            )
        rows.append(da.concatenate(cols, axis=2))
    return da.concatenate(rows, axis=1)
