"""From probabilities to an object: a seeded watershed in each section, and propagation of the
object from the clicked section through its neighbours.

In a section, the object is the watershed basin of its seeds on the distance to the edge of the
probable-object region, competing with the basins of other objects, of negative clicks and of
every other distance peak (other nuclei, other cells behind a membrane). Basins joined to the
object by a wide neck are merged into it; basins behind a narrow neck stay apart. The next
section is seeded by the core of the previous one where it is still probable, so the object
follows the aligned structure and stops where it ends (no probable core left, no overlap).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

#: a neighbouring basin joins the object when the neck between them is at least this share of
#: the smaller basin's half-width
NECK = 0.6
#: the core of a section that seeds the next: where the distance to the edge is at least this
#: share of its maximum
CORE = 0.5
#: an object grown by more than this factor from one section to the next is clipped to the
#: previous section's neighbourhood
MAX_GROWTH = 2.5
#: propagation stops below this many pixels, or when less than this share of a section overlaps
#: the previous one
MIN_AREA = 4
MIN_OVERLAP = 0.2
#: pixels an outline may move to reach the strongest edge
SNAP = 3


def _adjacent_pairs(lab: np.ndarray, dist: np.ndarray, a: int):
    """For every label b touching label ``a`` (4-connected), the highest pass (saddle) height
    ``min(dist at a, dist at b)`` along their shared border: dict b -> saddle."""
    out: dict[int, float] = {}
    for sl_a, sl_b in (
        ((slice(None), slice(None, -1)), (slice(None), slice(1, None))),
        ((slice(None, -1), slice(None)), (slice(1, None), slice(None))),
    ):
        for s1, s2 in ((sl_a, sl_b), (sl_b, sl_a)):
            la, lb = lab[s1], lab[s2]
            sel = (la == a) & (lb != a) & (lb > 0)
            if not sel.any():
                continue
            b = lb[sel]
            h = np.minimum(dist[s1][sel], dist[s2][sel])
            for v in np.unique(b):
                out[int(v)] = max(out.get(int(v), 0.0), float(h[b == v].max()))
    return out


def segment_section(
    prob: np.ndarray,
    seeds: np.ndarray,
    *,
    blockers: np.ndarray | None = None,
    exclude: np.ndarray | None = None,
    threshold: float = 0.5,
    neck: float = NECK,
    edges: np.ndarray | None = None,
    snap: int = SNAP,
    return_blocked: bool = False,
):
    """The object in one section: seeded watershed on the probable-object region.

    Parameters
    ----------
    prob
        (Y, X) object probability.
    seeds
        (Y, X) bool: pixels known to be the object (clicks, scribbles, the core carried over
        from the neighbouring section).
    blockers
        (Y, X) bool: pixels known not to be the object (negative clicks and scribbles).
    exclude
        (Y, X) bool: pixels that belong to other objects (kept apart).
    threshold
        Probability above which a pixel may be the object.
    neck
        Neck-to-width ratio above which a neighbouring basin is merged into the object.
    edges
        (Y, X) edge strength (fine-scale gradient magnitude of the image); when given, the
        object's outline is moved to the strongest edge within ``snap`` pixels.
    snap
        How far (pixels) the outline may move to reach an edge.

    return_blocked
        Also return the region won by the blockers' basins (carried to the next section so
        that a negative click holds through the volume).

    Returns
    -------
    ndarray of bool
        The object's pixels (holes filled); with ``return_blocked`` a pair (object, blocked).
    """
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    seeds = seeds.astype(bool)
    empty = np.zeros(prob.shape, bool)
    if not seeds.any():
        return (empty, empty) if return_blocked else empty
    p = ndi.gaussian_filter(prob.astype(np.float32), 1.0)
    fg = (p > threshold) | seeds
    if blockers is not None:
        fg |= blockers
    if exclude is not None:
        fg &= ~exclude
        seeds = seeds & ~exclude
    if blockers is not None:
        seeds = seeds & ~blockers
    if not seeds.any():
        return (empty, empty) if return_blocked else empty
    dist = ndi.distance_transform_edt(fg).astype(np.float32)
    dist = ndi.gaussian_filter(dist, 0.7) * fg
    markers = np.zeros(prob.shape, np.int32)
    peaks = peak_local_max(dist, min_distance=3, threshold_abs=1.5, exclude_border=False)
    # a peak whose inscribed disk holds a seed or a blocker belongs to that seed or blocker
    to_seed = ndi.distance_transform_edt(~seeds)
    to_block = (
        ndi.distance_transform_edt(~blockers) if blockers is not None and blockers.any() else None
    )
    n = 3
    for y, x in peaks:
        reach = max(3.0, float(dist[y, x]))
        if to_seed[y, x] <= reach or (to_block is not None and to_block[y, x] <= reach):
            continue
        markers[y, x] = n
        n += 1
    if blockers is not None:
        markers[blockers & fg] = 2
    markers[seeds] = 1
    lab = watershed(-dist, markers, mask=fg)
    peak = ndi.maximum(dist, lab, index=np.arange(lab.max() + 1))
    for _ in range(50):
        merged = False
        saddles = _adjacent_pairs(lab, dist, 1)
        p1 = float(dist[lab == 1].max()) if (lab == 1).any() else 0.0
        for b, h in sorted(saddles.items(), key=lambda t: -t[1]):
            if b < 3:
                continue
            if h >= neck * min(p1, float(peak[b])):
                lab[lab == b] = 1
                merged = True
        if not merged:
            break
    obj = ndi.binary_fill_holes(lab == 1)
    if edges is not None and snap > 0:
        obj = snap_to_edges(obj, edges, snap, seeds=seeds, blockers=blockers)
    obj = _drop_spurs(obj, seeds, float(peak[1]) if len(peak) > 1 else 0.0)
    if exclude is not None:
        obj &= ~exclude
    if return_blocked:
        return obj, (lab == 2) & ~obj
    return obj


def _drop_spurs(obj: np.ndarray, seeds: np.ndarray, half_width: float) -> np.ndarray:
    """Open away threads thinner than a fifth of the object's width (a leak along a line) and
    keep the parts connected to the seeds."""
    r = int(np.clip(round(0.2 * half_width), 1, 3))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    opened = ndi.binary_opening(obj, structure=yy**2 + xx**2 <= r * r)
    lab, n = ndi.label(opened)
    if n == 0:
        return obj & seeds
    keep = np.unique(lab[seeds & opened])
    keep = keep[keep > 0]
    if not len(keep):
        return obj
    return np.isin(lab, keep) | (seeds & obj)


def snap_to_edges(
    obj: np.ndarray,
    edges: np.ndarray,
    snap: int,
    *,
    seeds: np.ndarray | None = None,
    blockers: np.ndarray | None = None,
) -> np.ndarray:
    """Move an object's outline to the strongest image edge within ``snap`` pixels: a watershed
    on the edge strength between the object shrunk and grown by ``snap`` pixels."""
    from skimage.segmentation import watershed

    if not obj.any():
        return obj
    inner = ndi.binary_erosion(obj, iterations=snap)
    if seeds is not None:
        inner |= seeds & obj
    if not inner.any():
        return obj
    markers = np.zeros(obj.shape, np.int32)
    markers[~ndi.binary_dilation(obj, iterations=snap)] = 2
    if blockers is not None:
        markers[blockers] = 2
    markers[inner] = 1
    out = watershed(edges, markers) == 1
    return ndi.binary_fill_holes(out)


def core_of(mask: np.ndarray, share: float = CORE) -> np.ndarray:
    """The inner part of a section's object that seeds the next section."""
    if not mask.any():
        return mask
    dist = ndi.distance_transform_edt(mask)
    out = mask & (dist >= max(1.0, share * float(dist.max())))
    return out if out.any() else mask


def carry_over(prev: np.ndarray, new: np.ndarray) -> np.ndarray | None:
    """Check an object propagated from ``prev`` to ``new``: None when the object ended (too
    small, no overlap); ``new`` clipped to ``prev``'s neighbourhood when it grew too fast."""
    area, prev_area = int(new.sum()), int(prev.sum())
    if area < MIN_AREA:
        return None
    if prev_area and area > MAX_GROWTH * prev_area:
        r = max(2, int(round(0.35 * np.sqrt(prev_area / np.pi))))
        new = new & ndi.binary_dilation(prev, iterations=r)
        area = int(new.sum())
        if area < MIN_AREA:
            return None
    if (new & prev).sum() < MIN_OVERLAP * area:
        return None
    return new
