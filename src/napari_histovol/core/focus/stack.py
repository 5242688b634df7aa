"""Focus over a stack of sections: per-plane scores and maps, planes blurry relative to the
stack, and the best plane of a focus series with a sub-step estimate."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InputError
from ..io.volume import Volume
from ..progress import Progress, ProgressGenerator, drain
from .maps import check_tile, robust_z
from .registry import DEFAULT_METRIC, get_metric


def best_plane(
    scores: Sequence[float] | np.ndarray, positions: Sequence[float] | None = None
) -> tuple[int, float]:
    """Index of the sharpest plane and a sub-step estimate.

    The estimate is the vertex of a parabola through the log-scores of the peak and its
    neighbours (a Gaussian focus curve), clamped to half-way to either neighbour; at either end
    of the stack it is the peak itself. With ``positions`` (the planes' z, which a gap makes
    uneven) the parabola is fitted at those positions and the estimate is a position; without,
    the planes are one step apart and the estimate is a fractional index. (Fitted as if even,
    the peak beside a gap of three sections came out at 3.29 where the curve peaks at 4.13.)

    Raises
    ------
    InputError
        When there are no scores.
    """
    s = np.asarray(scores, float)
    if s.size == 0:
        raise InputError("No planes to choose the sharpest from; give at least one section.")
    x = np.arange(s.size, dtype=float) if positions is None else np.asarray(positions, float)
    k = int(np.argmax(s))
    if k == 0 or k == s.size - 1:
        return k, float(x[k])
    y0, y1, y2 = np.log(np.maximum(s[k - 1 : k + 2], 1e-12))
    x0, x1, x2 = x[k - 1 : k + 2]
    # the vertex of the parabola through (x0, y0), (x1, y1), (x2, y2)
    a = ((y2 - y1) / (x2 - x1) - (y1 - y0) / (x1 - x0)) / (x2 - x0)
    if a >= 0:
        return k, float(x1)
    b = (y1 - y0) / (x1 - x0) - a * (x0 + x1)
    vertex = -b / (2 * a)
    return k, float(np.clip(vertex, x1 - 0.5 * (x1 - x0), x1 + 0.5 * (x2 - x1)))


def iter_focus_stack(
    volume: Volume,
    *,
    metric: str = DEFAULT_METRIC,
    tile: int | None = None,
    threshold: float = 3.5,
    min_tissue: float = 0.1,
) -> ProgressGenerator[dict]:
    """Score every plane of a volume (and its tiles with ``tile``); flag planes and tiles that
    are blurry relative to the others; pick the best plane.

    Parameters
    ----------
    volume
        Sections or a focus series, ``(Z, Y, X)`` or ``(Z, Y, X, C)``.
    metric
        A name from :data:`.registry.METRICS` (``model`` is the learned regressor).
    tile
        Tile size in pixels for focus maps, or None for whole planes only.
    threshold
        Flag when the robust z-score is below ``-threshold``.
    min_tissue
        Tiles with less tissue than this fraction score 0 and are never flagged.

    Yields
    ------
    Progress
        One per plane (stage ``"focus"``).

    Returns
    -------
    dict
        The report: ``metric``, ``threshold``, ``planes`` (``z``, ``file``, ``score``,
        ``robust_z``, ``out_of_focus``, ``defocus_um`` for the learned metric, ``tiles`` with
        ``tile``; ``synthetic`` for generated planes, which are scored but never flagged, best
        or worst), ``flagged_z``, ``best_plane``, ``best_plane_index``, ``best_plane_subframe``
        and ``worst_plane``.

    Raises
    ------
    InputError
        For an unknown metric, a tile that does not fit the planes, or an empty volume (all
        checked before any plane is scored).
    """
    m = get_metric(metric)
    n = int(volume.shape[0])
    if n == 0:
        raise InputError("The volume has no planes to score; give at least one section.")
    check_tile(tile, volume.shape[1:3], min_tile=m.min_tile, metric=metric)
    meta = volume.meta.with_planes(n)
    zs = list(meta.z_numbers)
    measured = []
    for i in range(n):
        img = np.asarray(volume.data[i].compute())
        measured.append(m.measure(img, tile=tile, min_tissue=min_tissue, threshold=threshold))
        yield Progress(i + 1, n, f"z {zs[i]}", stage="focus")
    scores = [p.score for p in measured]
    # generated planes (interpolated, reconstructed) are scored but not judged: a build's
    # interpolated plane was flagged blurry, and its z fed to `interpolate --replace`
    synthetic = np.asarray(meta.synthetic, bool)
    judged = np.flatnonzero(~synthetic) if (~synthetic).any() else np.arange(n)
    arr = np.asarray(scores, dtype=float)
    z = np.zeros(n)
    z[judged] = robust_z(arr[judged])
    flags = np.zeros(n, bool)
    flags[judged] = z[judged] < -threshold
    k_judged, sub = best_plane([scores[i] for i in judged], [zs[i] for i in judged])
    k = int(judged[k_judged])
    planes = []
    for i, p in enumerate(measured):
        entry = {
            "z": zs[i],
            "file": meta.files[i],
            "score": scores[i],
            "robust_z": None if synthetic[i] else float(z[i]),  # not judged
            "out_of_focus": bool(flags[i]),
        }
        if synthetic[i]:
            entry["synthetic"] = True
        if p.defocus_um is not None:
            entry["defocus_um"] = p.defocus_um
        if p.focus_map is not None:
            fm = p.focus_map
            entry["tiles"] = {
                "shape": list(fm.scores.shape),
                "tile_px": tile,
                "flagged": 0 if synthetic[i] else int(fm.flags.sum()),
                "scores": fm.scores.round(8).tolist(),
                "tissue": fm.tissue.round(3).tolist(),
                "out_of_focus": (fm.flags & ~synthetic[i]).tolist(),
            }
        planes.append(entry)
    defocus = [p.defocus_um for i, p in enumerate(measured) if p.defocus_um is not None]
    flat = len(defocus) >= 3 and float(np.ptp(defocus)) < FLAT_MODEL_SPREAD_UM
    if flat:
        import warnings

        from ..errors import HistovolWarning

        warnings.warn(
            f"The focus model's defocus estimates hardly change across the {len(defocus)} "
            f"planes ({min(defocus):.2f}-{max(defocus):.2f} µm): these images are unlike "
            "those it learned from (0.5 µm pixels, NA 0.5), so its best plane means nothing "
            "here; score them with a classical metric such as laplacian.",
            HistovolWarning,
            stacklevel=2,
        )
    return {
        "metric": metric,
        "threshold": threshold,
        "model_estimates_flat": flat,
        "planes": planes,
        "flagged_z": [zs[i] for i in range(n) if flags[i]],
        "best_plane": zs[k],
        "best_plane_index": k,
        "best_plane_subframe": sub if len(judged) > 1 else float(zs[k]),
        "worst_plane": zs[int(judged[np.argmin(arr[judged])])],
    }


#: The learned metric's defocus estimates must span at least this much (µm, its validation
#: error is 0.4 µm) across a stack of three planes or more, or the stack is taken to be outside
#: what it learned: on DFNN's light-sheet stack it said 5.25-5.27 µm for all 34 planes and
#: picked a plane 10 frames from focus, with no word (a helper's journey).
FLAT_MODEL_SPREAD_UM = 0.5


def focus_stack(
    volume: Volume,
    *,
    metric: str = DEFAULT_METRIC,
    tile: int | None = None,
    threshold: float = 3.5,
    min_tissue: float = 0.1,
) -> dict:
    """:func:`iter_focus_stack` run to the end (same parameters); returns the report."""
    return drain(
        iter_focus_stack(
            volume, metric=metric, tile=tile, threshold=threshold, min_tissue=min_tissue
        )
    )


__all__ = ["best_plane", "focus_stack", "iter_focus_stack"]
