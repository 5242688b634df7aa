"""Repair of damaged sections from their neighbours (flow-guided inpainting).

For a section with local damage (fold, tear, debris: a mask from the QC), the neighbours are
interpolated to its place (motion-compensated, :mod:`core.interpolate.flow`: the same synthesis
whole-section replacement uses) and that interpolation fills the masked region, grown by a
margin and into what the damage left around it (:func:`grown_damage`) and feathered over a few
pixels outside it; every other pixel keeps its measured value. So inside the damage the repair
equals whole-section replacement and over the section it is better (the undamaged pixels stay
measured). (Filling the tissue a fold or tear pushed aside from the section's own pixels,
moved back by a flow against the interpolation, was tried: the flow's error (0.9-3.3 px)
exceeded the displacement (1.6-2.4 px), and even a per-pixel oracle choosing the better of the
two gained only 0.7-1.5 dB over the interpolation on skin. An earlier version bent the
interpolation onto the section by a flow filled into the mask and added a brightness
correction carried in from around the damage; both extrapolate across the mask and measured
4-7 dB worse inside it.) Blurred regions
keep their own low frequencies and take only the detail from the
neighbours. A section is replaced as a whole only when most of it is damaged or it is a copy of
its neighbour; a contrast swing is rescaled to its neighbours' stain, a misaligned section is
shifted back. Every repaired pixel is recorded as synthetic.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import dask.array as da
import numpy as np

from ..image import OPAQUE_OD, optical_density, tissue_mask
from ..interpolate.flow import cast_like, estimate_pair_flow, luminance, synthesize
from ..progress import Progress, ProgressGenerator
from .detect import KINDS
from .masks import encode_mask

#: A section is replaced as a whole when more than this fraction of it is damaged.
REPLACE_FRACTION = 0.5


@dataclass
class RepairedSection:
    """What restore did to one section.

    Parameters
    ----------
    z
        The section's z number.
    kinds
        The QC flags it acted on.
    action
        ``inpainted``, ``replaced``, ``rescaled`` or ``realigned`` (joined with ``+``).
    synthetic
        Boolean mask of the pixels made from the neighbours (None when none were).
    """

    z: int
    kinds: list[str]
    action: str
    synthetic: np.ndarray | None = None
    #: for a section replaced as a whole: where its planes came from, as the volume's
    #: per-plane sources say it (``{"between": [z_a, z_b], "t": t, "replaces": z}``)
    source: dict | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record for the volume's metadata (``extra["restored"]``)."""
        frac = float(self.synthetic.mean()) if self.synthetic is not None else 0.0
        d = {
            "z": int(self.z),
            "kinds": list(self.kinds),
            "action": self.action,
            "synthetic_fraction": round(frac, 5),
        }
        if self.synthetic is not None and 0 < frac < 1:
            d["synthetic_mask"] = encode_mask(self.synthetic.astype(np.uint8))
        return d


@dataclass
class RestoreResult:
    """The restored volume and what was done to each repaired section."""

    volume: Any
    repaired: list[RepairedSection] = field(default_factory=list)


def _f32(img: np.ndarray) -> np.ndarray:
    return img.astype(np.float32, copy=False)


def interpolate_between(
    prev: np.ndarray | None, nxt: np.ndarray | None, t: float = 0.5
) -> np.ndarray:
    """The section at ``t`` between two neighbours (motion-compensated), or the one neighbour
    there is, as float32.

    Parameters
    ----------
    prev, nxt
        The neighbouring sections (either may be None, not both).
    t
        Where the section lies between them (0: at ``prev``; 0.5: halfway).
    """
    if prev is not None and nxt is not None:
        return synthesize(prev, nxt, estimate_pair_flow(prev, nxt), float(t))
    return _f32(prev if prev is not None else nxt).copy()


def feather(mask: np.ndarray) -> np.ndarray:
    """Blend weight of a repair: 1 on ``mask``, falling linearly to 0 over a few pixels
    (1/128 of the longest side, at least 2) outside it.

    Parameters
    ----------
    mask
        Boolean mask of the pixels to rebuild.

    Returns
    -------
    numpy.ndarray
        float32 weights in [0, 1], same shape as ``mask``.
    """
    grow = max(2, max(mask.shape[:2]) // 128)
    dist = cv2.distanceTransform((~mask.astype(bool)).astype(np.uint8), cv2.DIST_L2, 3)
    return np.clip(1.0 - dist / (grow + 1), 0.0, 1.0).astype(np.float32)


def inpaint_from_neighbours(
    cur: np.ndarray,
    damaged: np.ndarray,
    prev: np.ndarray | None,
    nxt: np.ndarray | None,
    *,
    blurred: np.ndarray | None = None,
    t: float = 0.5,
) -> np.ndarray:
    """Repair the damaged pixels of one section from its neighbours.

    Parameters
    ----------
    cur
        The damaged section (2D or RGB).
    damaged
        Boolean mask of the pixels to rebuild (folds, tears, debris).
    prev, nxt
        Its aligned neighbours (either may be None, not both).
    blurred
        Boolean mask of blurred pixels: they keep their low frequencies and take the detail
        of the neighbours.
    t
        Where the section lies between its neighbours (0.5: halfway).

    Returns
    -------
    numpy.ndarray
        The repaired section, same dtype as ``cur``.
    """
    return _inpaint(cur, damaged, prev, nxt, blurred, t)[0]


def _inpaint(cur, damaged, prev, nxt, blurred, t) -> tuple[np.ndarray, np.ndarray]:
    """:func:`inpaint_from_neighbours`, and the mask of the pixels it rebuilt (``damaged``
    grown by :func:`grown_damage`)."""
    c = _f32(cur)
    # the same synthesis from both neighbours as whole-section replacement: inside the damage
    # the fill is exactly that interpolation, so the repair is never worse there; outside it
    # the measured section is kept, with a feathered seam just outside the mask
    pred = interpolate_between(prev, nxt, t)
    h, w = c.shape[:2]
    bad = damaged.astype(bool)
    pred = stain_matched(pred, c, bad)
    bad = grown_damage(c, pred, bad)
    out = c.copy()
    if bad.any():
        alpha = feather(bad)
        a = alpha[..., None] if c.ndim == 3 else alpha
        out = out * (1 - a) + pred * a
    if blurred is not None and blurred.any():
        s = max(1.5, max(h, w) / 256)
        detail = pred - cv2.GaussianBlur(pred, (0, 0), s)
        low = cv2.GaussianBlur(out, (0, 0), s)
        b = cv2.GaussianBlur(blurred.astype(np.float32), (0, 0), 2.0)
        b = b[..., None] if c.ndim == 3 else b
        out = out * (1 - b) + (low + detail) * b
    return cast_like(out, cur.dtype), bad


#: How far (share of the longest side) a damage mask may grow into what differs from the
#: neighbours' interpolation, and by how many times the section's typical difference from it.
GROW_REACH = 0.05
GROW_LEVEL = 2.0
#: ... and how far, and by how many times its 90th percentile difference, for what stands
#: out far more.
GROW_FAR_REACH = 0.5
GROW_FAR_LEVEL = 4.0
#: The difference is smoothed over this many pixels (Gaussian sigma) before it is judged.
GROW_SMOOTH = 2.5


def grown_damage(cur: np.ndarray, pred: np.ndarray, damaged: np.ndarray) -> np.ndarray:
    """``damaged`` grown into the pixels around it that differ from the neighbours'
    interpolation ``pred`` (smoothed over :data:`GROW_SMOOTH` px) by more than
    :data:`GROW_LEVEL` times the section's typical difference (its median outside the reach),
    connected to the damage, within :data:`GROW_REACH` of the longest side.

    A QC mask outlines what stood out at its scales; a fold's or a tear's faint rim, the
    last pixels of a crack and the soft edge of a dust grain are left outside it, and a repair
    that stops at the mask leaves them: a piece of a skin tear showed after repair (a
    helper's journey). Only what differs in the damage's own sign is taken (darker for a fold
    or dust on a slide, brighter where a tear shows the slide), so tissue a fold pushed a few
    pixels aside, which differs both ways, keeps its measured pixels. What stands out
    :data:`GROW_FAR_LEVEL` times the section's 90th percentile difference is taken farther, within
    :data:`GROW_FAR_REACH` (a skin tear masked in two pieces kept 15 px of crack 15-20 px from
    both). On the QC benchmark (``--trials 6``, seed 0, ten stacks) the repaired region's PSNR
    rose by 0.0-2.5 dB on every stack against the mask as detected, the section's moved by
    -1.9 to +1.0 dB (grown without regard to sign: region +0.0-1.6 dB, section down to
    -3.0 dB). The far reach was then widened from 15 % to half the side (cracks run on far
    beyond a mask that caught one piece of them): region +0.98 and +0.46 dB on the two skin
    stacks, -0.00 to +0.02 dB on the other eight; section +0.0 to +0.83 dB on all ten.

    Parameters
    ----------
    cur
        The damaged section (float, 2D or RGB).
    pred
        The interpolation of its neighbours at its place (same shape).
    damaged
        Boolean mask of the detected damage.

    Returns
    -------
    numpy.ndarray
        The grown boolean mask (``damaged`` itself when it is empty).
    """
    if not damaged.any():
        return damaged
    reach = _dilated(damaged, GROW_REACH, least=2)
    far = _within(damaged, GROW_FAR_REACH)
    # signed and smoothed: what the damage left (a darker or brighter remnant) keeps its sign
    # over a few pixels, the edges of tissue pushed aside by a few pixels do not
    signed = cv2.GaussianBlur(luminance(cur) - luminance(pred), (0, 0), GROW_SMOOTH)
    outside = np.abs(signed[~reach] if (~reach).any() else signed)
    typical = float(np.median(outside)) + 1e-6
    # where most of a section is empty its median difference is about 0: "far more" is
    # measured against the 90th percentile (what tissue changes by from section to section)
    high = float(np.percentile(outside, 90)) + 1e-6
    # the same sign as the damage itself (darker for a fold or dust on a slide, brighter where
    # a tear shows the slide): its remnant, not tissue pushed a few pixels aside
    sign = np.sign(np.median(signed[damaged]))
    # and farther where it stands out far more: the rest of a crack between two pieces of a
    # mask (a helper's skin tear kept 15 px of crack 15-20 px from its mask)
    off = (signed * sign > GROW_LEVEL * typical) & reach
    off |= (signed * sign > GROW_FAR_LEVEL * high) & far
    _, lab = cv2.connectedComponents((off | damaged).astype(np.uint8), connectivity=8)
    touching = np.unique(lab[damaged])
    return damaged | (off & np.isin(lab, touching[touching > 0]))


#: Fewest sound tissue pixels (share of the section) on which a fill's stain is matched.
STAIN_MATCH_MIN_SHARE = 0.02
#: A fill's stain is matched only where a channel's absorbance differs from the section's by
#: this factor or more. Between sections of one stain the interpolation's own blur lowers it
#: by 11-21 % (skin H&E); matching them anyway cost that stack's repairs 2.4 dB (+4.1 -> +1.7
#: over whole-section replacement). ANHIR's stains differ by factors of 2 to 5.
STAIN_MATCH_MIN_GAIN = 1.25


def stain_matched(pred: np.ndarray, cur: np.ndarray, damaged: np.ndarray) -> np.ndarray:
    """The neighbours' interpolation ``pred`` in the stain of a stained brightfield section
    ``cur`` (RGB on a bright slide): each channel's optical density scaled so that its mean
    over the section's sound area (outside ``damaged``, opaque pixels left out) is the
    section's, where they differ by :data:`STAIN_MATCH_MIN_GAIN` or more. Serial sections
    are often stained for different markers (ANHIR's lung: H&E beside CD31): without this a
    tear in a CD31 section was filled with H&E pink (a helper's journey). Gray and
    fluorescence sections, and sections with too little sound tissue, are returned as they
    are.
    """
    from ..image import background_value, from_optical_density, is_bright_background

    if cur.ndim != 3 or not is_bright_background(cur):
        return pred
    sound = ~cv2.dilate(damaged.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    if sound.mean() < 0.5 or tissue_mask(luminance(cur)).mean() < STAIN_MATCH_MIN_SHARE:
        return pred
    bg = background_value(cur)
    # the stain's absorbance summed over the same sound area of both (neighbouring sections
    # hold about as much tissue there, in slightly different places: lung's alveolar walls
    # move, so one image's tissue pixels are the other's air, and medians over each one's own
    # tissue were set by where Otsu split two different stains)
    od_cur, od_pred = optical_density(cur, bg), optical_density(pred, bg)
    # opaque pixels (dust, the dark rim of a fold) are no stain and would dominate the sums
    stain = sound & (od_cur.sum(axis=-1) < OPAQUE_OD) & (od_pred.sum(axis=-1) < OPAQUE_OD)
    if stain.mean() < 0.5:
        return pred
    gain = od_cur[stain].mean(axis=0) / np.maximum(od_pred[stain].mean(axis=0), 1e-3)
    if np.all(np.abs(np.log(gain)) < np.log(STAIN_MATCH_MIN_GAIN)):
        return pred  # the same stain: the interpolation is left as it is
    gain = np.clip(gain, 0.25, 4.0).astype(np.float32)
    return from_optical_density(od_pred * gain, bg)


def match_stain(
    cur: np.ndarray, refs: list[np.ndarray], damaged: np.ndarray | None = None
) -> np.ndarray:
    """Rescale a section's stain (per channel, on its tissue) to the mean and spread of its
    neighbours'.

    Parameters
    ----------
    cur
        The section with a contrast swing.
    refs
        Its neighbours.
    damaged
        Boolean mask of local damage (fold, tear, dust) left out of the statistics of the
        section and of its neighbours: a saturated fold across a dim fluorescence plane set
        the section's mean and spread, and the rescale changed every sound pixel (PSNR there
        against the undamaged plane 29.6-30.5 dB; 34.4-35.6 dB measured without the fold).
    """
    c = _f32(cur)
    sound = np.ones(c.shape[:2], bool) if damaged is None else ~damaged.astype(bool)
    if sound.mean() < 0.25:
        sound[:] = True  # too little left to measure on
    t = tissue_mask(luminance(c)) & sound

    def stats(x, m):
        v = x[m] if m.any() else x.reshape(-1, *x.shape[2:])
        return v.mean(axis=0), v.std(axis=0) + 1e-6

    mc, sc = stats(c, t)
    ms, ss = zip(
        *[stats(_f32(r), tissue_mask(luminance(_f32(r))) & sound) for r in refs], strict=True
    )
    mr, sr = np.mean(ms, axis=0), np.mean(ss, axis=0)
    return cast_like(mr + (c - mc) * (sr / sc), cur.dtype)


def realign(cur: np.ndarray, refs: list[np.ndarray]) -> np.ndarray:
    """Shift a section back onto its neighbours (phase correlation against their mean), only
    where the shift brings it closer to them.

    A fold's dark band can pull the QC's offset and the phase correlation alike: a folded
    skin section flagged misaligned was shifted whole, its sound tissue fell from 60 to 19 dB
    PSNR and the fold stayed (a helper's journey). The section is shifted only when its mean
    absolute difference from the neighbours' mean, over the pixels both cover, drops by
    :data:`REALIGN_MIN_GAIN` or more; otherwise it is returned as it is (the same object).

    Parameters
    ----------
    cur
        The misaligned section.
    refs
        Its neighbours.
    """
    from ..image import background_value

    ref = np.mean([luminance(_f32(r)) for r in refs], axis=0).astype(np.float32)
    lum = np.ascontiguousarray(luminance(_f32(cur)), dtype=np.float32)
    win = cv2.createHanningWindow(ref.shape[::-1], cv2.CV_32F)
    # phaseCorrelate windows its inputs in place: it gets copies
    (dx, dy), _ = cv2.phaseCorrelate(ref.copy(), lum.copy(), win)
    h, w = cur.shape[:2]
    m = np.float32([[1, 0, -dx], [0, 1, -dy]])
    moved = cv2.warpAffine(lum, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=np.nan)
    both = np.isfinite(moved)
    if not both.any():
        return cur
    after = float(np.mean(np.abs(moved[both] - ref[both])))
    before = float(np.mean(np.abs(lum[both] - ref[both])))
    if after > (1 - REALIGN_MIN_GAIN) * before:
        return cur
    bg = tuple(float(v) for v in np.atleast_1d(background_value(cur))) + (0.0,) * 3
    return cv2.warpAffine(cur, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=bg[:4])


#: A section is shifted back only when that lowers its mean absolute difference from its
#: neighbours by this share or more: sections shifted by 2-8 % of their side lowered it by
#: 33-51 %, folded ones (whose band pulled the phase correlation 1-2 px) by 7-18 %, on
#: drifting, bending crops of the skin slide.
REALIGN_MIN_GAIN = 0.25


def repair_section(
    cur: np.ndarray,
    labels: np.ndarray | None,
    flags: list[str],
    prev: np.ndarray | None,
    nxt: np.ndarray | None,
    t: float = 0.5,
) -> tuple[np.ndarray, RepairedSection]:
    """Repair one section as its QC flags and mask say.

    Parameters
    ----------
    cur
        The section.
    labels
        Its QC mask (label k+1 is ``KINDS[k]``) or None.
    flags
        Its QC flags.
    prev, nxt
        Its neighbours (either may be None, not both).
    t
        Where the section lies between them (0.5: halfway).

    Returns
    -------
    repaired, record
        The repaired section and a :class:`RepairedSection` (z set to 0; the caller fills it).
    """
    refs = [r for r in (prev, nxt) if r is not None]
    local = labels > 0 if labels is not None else np.zeros(cur.shape[:2], bool)
    blur = labels == KINDS.index("blur") + 1 if labels is not None else local
    hard = local & ~blur
    out, actions = cur, []
    syn = np.zeros(cur.shape[:2], bool)
    if "duplicate" in flags or hard.mean() > REPLACE_FRACTION:
        out = cast_like(interpolate_between(prev, nxt, t), cur.dtype)
        return out, RepairedSection(0, list(flags), "replaced", np.ones(cur.shape[:2], bool))
    if "misaligned" in flags:
        moved = realign(out, refs)
        if moved is not out:
            actions.append("realigned")
        out = moved
    hard = _with_margin(hard)
    if "contrast" in flags:
        out = match_stain(out, refs, hard)
        actions.append("rescaled")
    if hard.any() or blur.any():
        out, rebuilt = _inpaint(out, hard, prev, nxt, blur, t)
        syn = (feather(rebuilt) > 0) | blur if hard.any() else blur
        actions.append("inpainted")
    return out, RepairedSection(
        0, list(flags), "+".join(actions) or "none", syn if syn.any() else None
    )


#: damage masks are grown by this share of the section's longest side before they are
#: rebuilt (a detection's outline falls inside the damage's faint rim)
REPAIR_MARGIN = 0.015


def _with_margin(mask: np.ndarray) -> np.ndarray:
    """``mask`` grown by :data:`REPAIR_MARGIN` of the longest side."""
    return _dilated(mask, REPAIR_MARGIN)


def _within(mask: np.ndarray, share: float) -> np.ndarray:
    """The pixels within ``share`` of the longest side of ``mask`` (exact Euclidean distance,
    whose cost does not grow with the reach: a disc kernel of half the side took 7 s on a
    1024 px section)."""
    r = max(2, int(round(share * max(mask.shape[:2]))))
    dist = cv2.distanceTransform(
        (~mask.astype(bool)).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE
    )
    return dist <= r


def _dilated(mask: np.ndarray, share: float, least: int = 0) -> np.ndarray:
    """``mask`` grown by ``share`` of the longest side (a disc, ``least`` px or more; the
    mask itself where that is under a pixel or the mask is empty)."""
    r = max(least, int(round(share * max(mask.shape[:2]))))
    if r < 1 or not mask.any():
        return mask
    ker = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2)
    return cv2.dilate(mask.astype(np.uint8), ker).astype(bool)


def whole_section_replacement(stack: np.ndarray, pos: int) -> np.ndarray:
    """The peer of restore: section ``pos`` replaced by the interpolation of its neighbours.

    Parameters
    ----------
    stack
        Sections as one array (z first).
    pos
        Index of the section to replace.
    """
    prev = stack[pos - 1] if pos > 0 else None
    nxt = stack[pos + 1] if pos + 1 < len(stack) else None
    return cast_like(interpolate_between(prev, nxt), stack.dtype)


def _neighbour_index(i: int, step: int, n: int, skip: set[int]) -> int | None:
    j = i + step
    while 0 <= j < n and j in skip:
        j += step
    return j if 0 <= j < n else None


def _neighbours(zs, sections: dict, index: int) -> tuple[int | None, int | None, set[int]]:
    """The sections to repair section ``index`` from, one on each side (None: none), and
    which of them are off in stain. The nearest section that is neither a copy, misaligned
    nor off in stain serves; where a side has none, the nearest one off in stain only (its
    structure is sound: its levels are matched before use, see :func:`_match_levels`)."""
    flags = {i: set(sections.get(z, {}).get("flags") or ()) for i, z in enumerate(zs)}
    bad = {i for i, f in flags.items() if f & {"duplicate", "misaligned", "contrast"}}
    off_stain = {i for i in bad if not flags[i] & {"duplicate", "misaligned"}}
    bad.discard(index)
    picked = []
    for step in (-1, 1):
        j = _neighbour_index(index, step, len(zs), bad)
        if j is None:
            j = _neighbour_index(index, step, len(zs), bad - off_stain)
        picked.append(j)
    p, q = picked
    return p, q, {j for j in (p, q) if j in off_stain}


def _between(zs, p: int | None, q: int | None, index: int) -> float:
    """Where section ``index`` lies between its neighbours ``p`` and ``q`` by z number (a
    neighbour beyond a skipped section is farther away)."""
    if p is None or q is None or zs[q] == zs[p]:
        return 0.5
    return float((zs[index] - zs[p]) / (zs[q] - zs[p]))


def _match_levels(img: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``img`` with its 2nd and 98th percentiles (per channel) mapped onto ``ref``'s: a
    section off in stain brought to its neighbour's levels."""
    a, r = img.astype(np.float32), ref.astype(np.float32)
    if a.ndim == 2:
        a, r = a[..., None], r[..., None]
    out = np.empty_like(a)
    for c in range(a.shape[-1]):
        lo, hi = np.percentile(a[..., c], (2, 98))
        rlo, rhi = np.percentile(r[..., c], (2, 98))
        out[..., c] = (a[..., c] - lo) * ((rhi - rlo) / max(hi - lo, 1e-6)) + rlo
    return cast_like(out.reshape(img.shape), img.dtype)


def _levelled(load, p, q, off_stain: set[int], cur: np.ndarray):
    """The two neighbours read, those off in stain matched to the other one (or, without a
    sound other one, to the section being repaired)."""
    a, b = load(p), load(q)
    if p in off_stain:
        a = _match_levels(a, b if b is not None and q not in off_stain else cur)
    if q in off_stain:
        b = _match_levels(b, a if a is not None and p not in off_stain else cur)
    return a, b


def restore_array(stack: np.ndarray, meta, report, pos: int) -> np.ndarray:
    """Repair section ``pos`` of an in-memory stack with a QC report (for tests and benchmarks):
    :func:`repair_at` on the stack, the section as it is where there is nothing to repair from.

    Parameters
    ----------
    stack
        Sections as one array (z first).
    meta
        The stack's :class:`core.io.VolumeMeta` (z numbers).
    report
        A :class:`QCReport` or the list of section dicts :func:`read_qc_report` gives.
    pos
        Index of the section to repair.
    """
    from ..io import Volume

    volume = Volume(da.from_array(stack, chunks=(1,) + stack.shape[1:]), meta)
    fixed, _ = repair_at(volume, report, pos)
    return np.asarray(stack[pos]).copy() if fixed is None else fixed


def _by_z(report) -> dict[int, dict]:
    if isinstance(report, dict):  # already by z
        return report
    if hasattr(report, "sections") and not isinstance(report, list):
        return {s.z: {"flags": list(s.flags), "mask": s.mask} for s in report.sections}
    return {int(s["z"]): s for s in report}


def iter_restore(volume, report) -> ProgressGenerator[RestoreResult]:
    """Repair the sections a QC report flags, from their neighbours.

    Parameters
    ----------
    volume
        A :class:`core.io.Volume` (the stack the QC was run on).
    report
        A :class:`QCReport`, or the section list of :func:`read_qc_report` (dicts with ``z``,
        ``flags`` and ``mask``: uint8 labels at full size or None).

    Yields
    ------
    Progress
        One step per repaired section.

    Returns
    -------
    RestoreResult
        The volume (lazy: untouched sections are read from the input) with replaced sections
        flagged synthetic and ``meta.extra["restored"]`` saying what was done where.
    """
    from ..errors import InputError

    meta = volume.meta.with_planes(volume.shape[0])
    sections = _by_z(report)
    zs = list(meta.z_numbers)
    _check_report_matches(sections, meta)
    todo = [i for i, z in enumerate(zs) if sections.get(z, {}).get("flags")]
    for i in todo:
        m = sections[zs[i]].get("mask")
        if m is not None and tuple(m.shape) != tuple(volume.shape[1:3]):
            raise InputError(
                f"The QC mask of section {zs[i]} is {m.shape[1]} x {m.shape[0]} pixels but the "
                f"section is {volume.shape[2]} x {volume.shape[1]}; run the QC on this stack."
            )
    done = []
    for k, i in enumerate(todo):
        fixed, rec = repair_at(volume, sections, i)
        if rec is None or rec.action == "none":
            continue  # nothing to repair from, or nothing to do
        done.append((i, fixed, rec))
        yield Progress(k + 1, len(todo), f"repaired section {zs[i]} ({rec.action})", "restore")
    return RestoreResult(apply_repairs(volume, done), [r for _, _, r in done])


def _z_text(zs) -> str:
    from ..io.naming import format_ranges

    return f"z {format_ranges(zs)}"


def _check_report_matches(sections: dict[int, dict], meta) -> None:
    """Refuse a QC report made on another stack: restore with one said "0 sections repaired"
    and exited 0, which reads as "nothing needed repair" (a helper's journey). A report
    matches when its flagged sections are sections of the stack and, where both name their
    files, the names of the sections they share agree (at least one)."""
    from ..errors import InputError

    zs = set(int(z) for z in meta.z_numbers)
    listed = set(sections)
    # a missing section is flagged at a number the stack lacks (a gap): that is no mismatch
    flagged = {z for z, s in sections.items() if set(s.get("flags") or ()) - {"missing"}}
    hint = "run histovol qc on this stack and restore with that report"
    if listed and not listed & zs:
        raise InputError(
            f"The QC report is not about this stack: it lists sections {_z_text(listed)}, the "
            f"stack holds {_z_text(zs)}; {hint}."
        )
    # sections the stack does not hold, other than its own missing ones: a report of the
    # 22-plane interpolated volume was taken for its 6-section source (a helper's chain)
    extra = sorted(
        z
        for z, sec in sections.items()
        if z not in zs and set(sec.get("flags") or ()) != {"missing"}
    )
    if extra:
        raise InputError(
            f"The QC report is not about this stack: it lists sections {_z_text(extra)}, which "
            f"this stack does not hold (it holds {_z_text(zs)}); {hint}."
        )
    absent = sorted(flagged - zs)
    if absent:
        raise InputError(
            f"The QC report flags {_z_text(absent)}, which this stack does not hold (it holds "
            f"{_z_text(zs)}); {hint}."
        )
    by_z = dict(zip((int(z) for z in meta.z_numbers), meta.files, strict=True))
    named = [
        (z, str(sections[z]["file"]), by_z[z])
        for z in sorted(listed & zs)
        if sections[z].get("file") and by_z.get(z)
    ]
    if named and not any(a == b for _, a, b in named):
        z, a, b = named[0]
        raise InputError(
            f"The QC report is not about this stack: its section {z} is '{a}', the stack's is "
            f"'{b}'; {hint}."
        )


def repair_at(
    volume, report, index: int, *, replace_whole: bool = False
) -> tuple[np.ndarray | None, RepairedSection | None]:
    """Repair one section of a volume as its QC entry says, or replace it as a whole.

    Parameters
    ----------
    volume
        A :class:`core.io.Volume`.
    report
        A :class:`QCReport`, or the section list of :func:`read_qc_report`.
    index
        Index of the section in ``volume``.
    replace_whole
        Replace the section by the interpolation of its neighbours whatever its flags.

    Returns
    -------
    repaired, record
        The repaired section and its :class:`RepairedSection` (z set), or ``(None, None)``
        when the section has no usable neighbour (a copy with no neighbour but the section it
        copies has none). Neighbours that are copies or misaligned are skipped, and those off
        in stain too unless a side has no other (see :func:`_neighbours`).
    """
    sections = _by_z(report)
    zs = list(volume.meta.with_planes(volume.shape[0]).z_numbers)
    p, q, off_stain = _neighbours(zs, sections, index)
    sec = sections.get(zs[index]) or {"flags": [], "mask": None}
    copy_of = index - 1 if "duplicate" in (sec.get("flags") or ()) else None
    if (p is None and q is None) or (copy_of is not None and {p, q} <= {copy_of, None}):
        return None, None  # nothing to rebuild from but (at most) the section it copies

    def load(j):
        return None if j is None else np.asarray(volume.data[j].compute())

    cur = np.asarray(volume.data[index].compute())
    prev, nxt = _levelled(load, p, q, off_stain, cur)
    t = _between(zs, p, q, index)
    if replace_whole:
        fixed = cast_like(interpolate_between(prev, nxt, t), cur.dtype)
        flags = list(sec.get("flags") or [])
        rec = RepairedSection(int(zs[index]), flags, "replaced", np.ones(cur.shape[:2], bool))
    else:
        fixed, rec = repair_section(
            cur, sec.get("mask"), list(sec.get("flags") or []), prev, nxt, t
        )
        rec.z = int(zs[index])
    if rec.action == "replaced":
        # named on the canvas as regenerated from which sections (a dropped section read
        # only "synthetic (generated plane)": a helper's journey)
        if p is not None and q is not None:
            rec.source = {
                "between": [int(zs[p]), int(zs[q])],
                "t": round(float(t), 6),
                "replaces": int(zs[index]),
            }
    return fixed, rec


def apply_repairs(volume, repairs):
    """The volume with repaired sections in place (lazy elsewhere), replaced sections flagged
    synthetic and every repair listed in ``meta.extra["restored"]``.

    Parameters
    ----------
    volume
        A :class:`core.io.Volume`.
    repairs
        ``(index, repaired section, RepairedSection)`` triples; a later one for the same
        index wins.

    Returns
    -------
    Volume
        The restored volume.
    """
    from ..io import Volume

    meta = volume.meta.with_planes(volume.shape[0])
    planes = [volume.data[i] for i in range(volume.shape[0])]
    synthetic = list(meta.synthetic)
    records: dict[int, RepairedSection] = {}
    for i, fixed, rec in repairs:
        planes[i] = da.from_array(fixed, chunks=fixed.shape)
        synthetic[i] = synthetic[i] or rec.action == "replaced"
        records[i] = rec
    data = da.stack(planes).rechunk((1,) + tuple(volume.shape[1:]))
    extra = dict(meta.extra)
    extra["restored"] = [records[i].to_dict() for i in sorted(records)]
    replaced = sorted(i for i, r in records.items() if r.source is not None)
    if replaced:
        from ..sections import chain_plane_sources, recorded_plane_sources

        sources = list(
            recorded_plane_sources(meta) or [{"source_z": int(z)} for z in meta.z_numbers]
        )
        made = chain_plane_sources(meta, [records[i].source for i in replaced])
        for i, entry in zip(replaced, made, strict=True):
            sources[i] = entry
        extra["planes"] = sources
    return Volume(data, replace(meta, synthetic=tuple(synthetic), extra=extra))


def restore(volume, report) -> RestoreResult:
    """:func:`iter_restore` run to the end."""
    from ..progress import drain

    return drain(iter_restore(volume, report))


__all__ = [
    "REPLACE_FRACTION",
    "apply_repairs",
    "RepairedSection",
    "RestoreResult",
    "feather",
    "grown_damage",
    "inpaint_from_neighbours",
    "interpolate_between",
    "iter_restore",
    "match_stain",
    "realign",
    "repair_at",
    "repair_section",
    "restore",
    "restore_array",
    "whole_section_replacement",
]
