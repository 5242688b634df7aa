"""Section QC: which sections of a stack are folded, torn, blurred, dirty, off in contrast,
duplicated, missing or misaligned, with a score per kind and a mask of local damage.

The reference for a section is the stack itself. Every section is reduced to one tissue-bright
channel (stained brightfield: optical density against the bare slide, :func:`core.image.
slide_colour`; gray: :func:`core.image.registration_channel`; one normalisation for the whole
stack, so a contrast swing stays visible) at a working size, and compared with its neighbours:

- **prediction residual** (fold, tear, debris): the section is predicted from its two
  neighbours by motion-compensated interpolation (DIS optical flow,
  :mod:`core.interpolate.flow`) and from each neighbour alone; each prediction is bent onto the
  section by a *smooth* flow (heavily smoothed, so it can follow the slow deformation of a real
  section but cannot explain structure that appears or vanishes). The smallest of the three
  residuals where they agree in sign is kept (natural change along z and the echo of a
  neighbour's damage are explained by one side), in units of the stack's typical residual (the
  median over sections of its 99th percentile on the tissue), at a fine and a coarse scale. It
  is split into components with more tissue than predicted (a fold doubles the tissue) and less
  (a tear shows the slide). Long thin components are folds (more) or tears (less), and so is
  a short crack (less, thin: at least a tenth of the side and three times longer than wide);
  small compact ones are debris (fine scale only); small pieces beside a fold or tear belong
  to it.
- **crack line** (tear; brightfield and EM): the residual averaged along straight segments 15 %
  of the side long, across a crack's width less its surround, in twelve directions. A thin
  crack across sparse or busy tissue is, pixel by pixel, often no stronger than structure that
  ends between sections, but it runs on; compact change (round holes, rings) does not. A
  neighbour's crack echoes in the sections predicted from it, at half strength: a line that
  a neighbour holds nearby at 0.8 times the strength or more is the neighbour's.
- **lost material** (tear; stained brightfield): a thin line where both neighbours hold material
  and the section holds none, each section's material cut at its own level, so a crack
  is found between sections of different stains, where its residual is no larger than the
  stains' difference.
- **sharpness on tissue** (blur): per tile, high-pass over band-pass energy (independent of
  contrast) against the same tile of the neighbours; only tiles with tissue count, so a blurred
  half section is found and stroma is not called blurry.
- **stain** (contrast): the gain of the section against each of its four nearest sections
  (median log ratio over the tissue both hold), the median of those four.
- **identity** (duplicate): the difference to the previous section against the stack's typical
  difference between neighbours.
- **numbering** (missing): z numbers absent from the sequence.
- **position** (misaligned): the offset to each neighbour (normalised cross-correlation)
  against the neighbours' offset to each other.

Every kind's raw score is then calibrated on the stack's own distribution of that score
(:class:`QCSettings` ``calibrate_z`` and ``floor``), so one set of settings serves EM,
fluorescence and brightfield stacks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np
from scipy import ndimage as ndi

from ..image import (
    OPAQUE_OD,
    TISSUE_OD,
    auto_channel,
    background_value,
    optical_density,
    registration_channel,
    slide_colour,
    tissue_mask,
)
from ..interpolate.flow import estimate_pair_flow, synthesize, warp_by_flow
from ..progress import Progress, ProgressGenerator

#: Every flag a section can carry, in the order masks number them (label k+1 is KINDS[k]).
KINDS = ("fold", "tear", "blur", "debris", "contrast", "duplicate", "missing", "misaligned")
#: Kinds that come with a mask of the damaged pixels.
LOCAL_KINDS = ("fold", "tear", "blur", "debris")
#: the largest score reported (1 is the threshold)
SCORE_CAP = 100.0


@dataclass(frozen=True)
class QCSettings:
    """Thresholds of the section QC (defaults chosen on one stack, checked on the others).

    Parameters
    ----------
    work_side
        Longest side, in pixels, at which sections are compared (larger ones are downsized).
    residual_z
        A pixel is damage when its residual exceeds this many typical residuals (a typical
        residual: the stack's median of each section's 99th percentile of the residual).
    min_mass
        A component is damage when its summed excess residual (in typical residuals times
        pixels, at a 256-pixel working side) exceeds this.
    blur_ratio
        A tile is blurred when its sharpness is below this fraction of its neighbours'.
    blur_fraction
        A section is blurred when this fraction of its tissue tiles is.
    contrast_ratio
        A section's stain is off when its gain against its near sections (less their trend)
        is this factor or its inverse.
    duplicate_ratio
        A section duplicates the previous one when their difference is below this fraction of
        the stack's typical difference between neighbours.
    misaligned_px
        A section is misaligned when it is off both its neighbours by this fraction of the
        working side (less half their offset to each other) (raised by the calibration where the stack's own
        sections jitter more).
    tiles
        Tiles per side for the sharpness map.
    calibrate_z
        Per-stack calibration: a kind's raw score (in units of the threshold above) is divided
        by the larger of ``floor`` and the stack's median of that score plus ``calibrate_z``
        robust standard deviations (1.4826 MAD over the sections), so a stack whose clean
        sections naturally score high (nuclei that appear and vanish, EM whose neighbours
        barely match) raises its own bar, and one whose clean sections score near 0 lowers it
        to ``floor``. 0 turns calibration off (absolute thresholds).
    floor
        The lowest calibrated threshold per kind, as a fraction of the absolute one.
    """

    work_side: int = 512
    residual_z: float = 1.6
    min_mass: float = 100.0
    blur_ratio: float = 0.4
    blur_fraction: float = 0.12
    contrast_ratio: float = 1.45
    duplicate_ratio: float = 0.1
    misaligned_px: float = 0.03
    tiles: int = 8
    calibrate_z: float = 4.0
    floor: tuple[tuple[str, float], ...] = (
        ("fold", 0.5),
        ("tear", 0.5),
        ("debris", 0.5),
        ("blur", 0.8),
        ("contrast", 1.0),
        ("misaligned", 1.0),
    )


@dataclass
class SectionQC:
    """The QC of one section (or one missing z number).

    Parameters
    ----------
    z
        The section's z number.
    file
        Its source file name ("" for a missing number or a volume without files).
    flags
        Kinds of damage found, most severe first.
    scores
        A score per kind (0 is clean; flagged above 1 for every kind but ``missing``).
    mask
        uint8 labels at full section size (label k+1 is ``KINDS[k]``), or None when no local
        damage was found.
    synthetic
        A plane this product generated (interpolated or restored): not judged, no flags.
    """

    z: int
    file: str = ""
    flags: list[str] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    mask: np.ndarray | None = None
    synthetic: bool = False

    def largest_score(self) -> tuple[str | None, float]:
        """The kind with the largest score (``missing``, a flag rather than a score, left out)
        and that score; (None, 0.0) for a section without scores."""
        scores = {k: v for k, v in self.scores.items() if k != "missing"}
        if not scores:
            return None, 0.0
        kind = max(scores, key=scores.get)
        return kind, float(scores[kind])

    def to_dict(self) -> dict[str, Any]:
        """The section's entry of QC.json (the mask is added by the report writer)."""
        entry = {
            "z": int(self.z),
            "file": self.file,
            "flags": list(self.flags),
            "scores": {k: round(float(v), 4) for k, v in self.scores.items()},
        }
        if self.synthetic:
            entry["synthetic"] = True  # a generated plane: not judged
        return entry


@dataclass
class QCReport:
    """Section QC of a stack: one :class:`SectionQC` per present section and missing number."""

    sections: list[SectionQC]
    shape: tuple[int, int]

    @property
    def flagged_z(self) -> list[int]:
        """z numbers of the present sections with at least one flag (missing numbers are not
        sections to replace: interpolation fills them)."""
        return sorted(s.z for s in self.sections if s.flags and s.flags != ["missing"])

    #: whether the stack was aligned by this product (QC compares aligned sections)
    aligned: bool = True

    def section(self, z: int) -> SectionQC | None:
        """The entry of z number ``z`` (None when the report has none)."""
        return next((s for s in self.sections if s.z == z), None)

    @property
    def alignment_note(self) -> str | None:
        """A sentence for the user when the stack was not aligned and local damage or a
        misalignment was flagged (a shift or rotation between sections reads as damage)."""
        kinds = {"fold", "tear", "debris", "misaligned"}
        if self.aligned or not any(kinds & set(s.flags) for s in self.sections):
            return None
        return (
            "these sections were not aligned by napari-histovol, and a shift or rotation "
            "between sections reads as a fold, tear or debris: align them first (histovol "
            "align, or the Align tab) and run QC on the aligned stack"
        )


# ------------------------------------------------------------------------------ per section


def _smooth(a: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(a, (0, 0), sigma) if sigma > 0 else a


def _resize(a: np.ndarray, shape: tuple[int, int], nearest: bool = False) -> np.ndarray:
    h, w = shape
    if a.shape[:2] == (h, w):
        return a
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
    return cv2.resize(a, (w, h), interpolation=interp)


def sharpness_tiles(chan: np.ndarray, tissue: np.ndarray, n: int) -> np.ndarray:
    """High-pass over band-pass energy per tile (``n x n`` tiles), NaN where a tile has little
    tissue or no structure: a contrast-free sharpness map.

    Parameters
    ----------
    chan
        A float32 tissue-bright channel.
    tissue
        Boolean tissue mask of the same shape.
    n
        Tiles per side.
    """
    g1 = _smooth(chan, 1.0)
    hp = (chan - g1) ** 2
    bp = (g1 - _smooth(chan, 3.0)) ** 2
    h, w = chan.shape
    out = np.full((n, n), np.nan, np.float32)
    ys = np.linspace(0, h, n + 1).astype(int)
    xs = np.linspace(0, w, n + 1).astype(int)
    bp_all = float(bp[tissue].mean()) if tissue.any() else float(bp.mean())
    for i in range(n):
        for j in range(n):
            t = tissue[ys[i] : ys[i + 1], xs[j] : xs[j + 1]]
            if t.mean() < 0.3:
                continue
            e_bp = float(bp[ys[i] : ys[i + 1], xs[j] : xs[j + 1]][t].mean())
            if e_bp < 0.05 * bp_all:
                # no detail left at all: as blurred as a tile gets (left unjudged, a tile
                # blurred past the band-pass went unseen; a tile as flat in its neighbours is
                # 0 against 0 there, and stays unjudged)
                out[i, j] = 0.0
                continue
            out[i, j] = float(hp[ys[i] : ys[i + 1], xs[j] : xs[j + 1]][t].mean()) / e_bp
    return out


def _offset(a: np.ndarray, b: np.ndarray, margin: float = 0.15) -> np.ndarray:
    """Where b's content lies relative to a's (dx, dy): normalised cross-correlation of b's
    central part (``margin`` of each side left out, so shifts up to that far are found) over
    a, both lightly smoothed. (Phase correlation whitens the spectrum and loses its peak on
    EM neighbours, whose fine detail changes from section to section.)"""
    a = _smooth(a.astype(np.float32), 2.0)
    b = _smooth(b.astype(np.float32), 2.0)
    h, w = a.shape
    py, px = max(1, int(margin * h)), max(1, int(margin * w))
    r = cv2.matchTemplate(a, b[py : h - py, px : w - px], cv2.TM_CCOEFF_NORMED)
    _, _, _, (x, y) = cv2.minMaxLoc(r)
    return np.array([px - x, py - y], np.float32)


def _outside(flow: np.ndarray) -> np.ndarray:
    """Pixels whose backward warp by ``flow`` samples beyond the image, grown by 2 pixels (the
    interpolation reaches into the reflected border there)."""
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    x, y = gx + flow[..., 0], gy + flow[..., 1]
    out = ((x < 0) | (x > w - 1) | (y < 0) | (y > h - 1)).astype(np.uint8)
    return cv2.dilate(out, np.ones((5, 5), np.uint8)).astype(bool)


def _fill_from(a: np.ndarray, b: np.ndarray, void_a, void_b):
    """``a`` and ``b`` with each one's alignment fill (``void_a``, ``void_b``; None: none)
    replaced by what the other holds there, and one value where both are fill: the straight
    edge of one section's fill has no counterpart in the other, and a flow between them drags
    the tissue beside it toward that edge (smoothed, over a band a tenth of the section deep:
    false tears along the fill of turned crops aligned by histovol)."""
    if void_a is None and void_b is None:
        return a, b
    va = np.zeros(a.shape[:2], bool) if void_a is None else void_a
    vb = np.zeros(b.shape[:2], bool) if void_b is None else void_b
    a2 = np.where(va & ~vb, b, a)
    b2 = np.where(vb & ~va, a, b)
    b2 = np.where(va & vb, a, b2)
    return a2, b2


def _predict(
    prev: np.ndarray | None,
    nxt: np.ndarray | None,
    cur: np.ndarray,
    smooth: float,
    voids: tuple = (None, None, None),
):
    """The section predicted from its neighbours and bent onto it by a smooth flow, and where
    the prediction holds nothing measured (it draws on what lies beyond a neighbour's border:
    tissue that drifts into view between sections has no counterpart there). ``voids``: the
    alignment fill of ``prev``, ``nxt`` and ``cur`` (None: none), left out of the flows
    (:func:`_fill_from`)."""
    void_p, void_n, void_c = voids
    if prev is not None and nxt is not None:
        prev, nxt = _fill_from(prev, nxt, void_p, void_n)
        pair = estimate_pair_flow(prev, nxt)
        pred = synthesize(prev, nxt, pair, 0.5)
        outside = _outside(-0.25 * pair.f_ab + 0.25 * pair.f_ba) | _outside(
            0.25 * pair.f_ab - 0.25 * pair.f_ba
        )
        void_pred = None if void_p is None or void_n is None else void_p & void_n
    else:
        pred = (prev if prev is not None else nxt).astype(np.float32)
        outside = np.zeros(pred.shape[:2], bool)
        void_pred = void_p if prev is not None else void_n
    cur_f, pred = _fill_from(cur, pred, void_c, void_pred)
    f = estimate_pair_flow(cur_f, pred).f_ab  # cur(x) ~ pred(x + f)
    f = np.dstack([_smooth(f[..., 0], smooth), _smooth(f[..., 1], smooth)])
    moved = warp_by_flow(outside.astype(np.float32), f) > 0.5
    return warp_by_flow(pred, f), moved | _outside(f)


@dataclass(frozen=True)
class _Piece:
    """The geometry of a group of at least two pixels."""

    #: (x, y) mean of its pixels
    centre: np.ndarray
    #: unit (x, y) vector along its main axis
    axis: np.ndarray
    #: four standard deviations along the main axis, in pixels
    length: float
    #: the square root of the ratio of the two axes' variances
    elong: float


def _length_elong(major, minor):
    """:class:`_Piece`'s length and elongation from the variances along its two axes (floats
    or arrays)."""
    major = np.maximum(major, 1e-6)
    return 4 * np.sqrt(major), np.sqrt(major / np.maximum(minor, 0.25))


def _piece(pix: np.ndarray) -> _Piece:
    """:class:`_Piece` of the True pixels of ``pix``."""
    ys, xs = np.nonzero(pix)
    ev, vec = np.linalg.eigh(np.cov(np.vstack([xs, ys])))  # ascending
    length, elong = _length_elong(float(ev[1]), float(ev[0]))
    return _Piece(np.array([xs.mean(), ys.mean()]), vec[:, 1], float(length), float(elong))


def _shape(pix: np.ndarray) -> tuple[float, float]:
    """Length and elongation (see :class:`_Piece`) of a group of at least two pixels."""
    p = _piece(pix)
    return p.length, p.elong


def _components(z: np.ndarray, sign: int, k: float, side: float):
    """Groups of pixels with ``sign * z > k``: pieces closer than 3 % of the side are one group
    (a fold's band breaks up where the tissue under it is pale). Returns a list of dicts with
    the group's pixels, sign, area, length (fraction of the side), elongation and mass."""
    m = ((sign * z) > k).astype(np.uint8)
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
    r = max(2, int(0.03 * side))
    ker = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2)
    n, lab = cv2.connectedComponents(cv2.dilate(m, ker), connectivity=8)
    closed = cv2.morphologyEx(m, cv2.MORPH_CLOSE, ker).astype(bool)
    # hysteresis: the damage's weaker rim (residual above k / 2) joined to its strong core
    weak = ((sign * _smooth(z.astype(np.float32), 1.0)) > k / 2).astype(np.uint8)
    _, wlab = cv2.connectedComponents(weak | m, connectivity=8)
    comps = []
    for c in range(1, n):
        group = lab == c
        pix = group & m.astype(bool)
        area = int(pix.sum())
        if area < 4:
            continue
        length, elong = _shape(pix)
        mass = float(np.clip(sign * z[pix] - k, 0, 20).sum())
        rim = np.isin(wlab, np.unique(wlab[pix])) & group
        comps.append(
            {
                "pix": (group & closed) | rim,
                "sign": sign,
                "area": area,
                "length": length / side,
                "elong": elong,
                "mass": mass,
            }
        )
    return comps


#: A blob of added material is not debris when a neighbour holds material at least this
#: dense (share of the blob's median in the tissue-bright channel) within a few pixels of it:
#: the same structure, changed in shape (a dividing cell's chromosomes at the top plane of a
#: monolayer, where one neighbour is all there is to explain it). Injected dust is denser
#: than any tissue (brightfield, EM) or brighter than any nucleus (fluorescence).
SAME_MATERIAL_SHARE = 0.9

#: A component with less material than predicted is a crack (a tear) when it is at least this
#: long (share of the side) and this many times longer than wide: a tear opens 1.5-3 % of the
#: side and runs at least a tenth of it, so it is 3 or more times longer than wide.
CRACK_LENGTH = 0.1
CRACK_ELONGATION = 3.0


#: The line of lost material is looked for at this working side: its smoothing, the slack
#: for the alignment and the smallest piece are in its pixels, scaled to the working side (at
#: a 512 px side, finer alveolar walls broke a crack through lung into short pieces: 2 of 12
#: tears found on ANHIR's 5 % images, against 8 of 12 at 256 px)
_LINE_SIDE = 256.0


def _material(chan: np.ndarray) -> np.ndarray:
    """Where a section holds material: its lightly smoothed working channel (more material is
    higher in every channel kind, the slide at about 0) above a quarter of its own 99th
    percentile. Each section is cut at its own level, so a neighbour stained for another
    marker, or swung, counts alike; a level set by the section's densest material, not by
    Otsu's split of its histogram, which debris moves (dust on skin drew lines of "lost"
    pale stroma)."""
    sm = cv2.GaussianBlur(chan, (0, 0), max(1.0, max(chan.shape) / _LINE_SIDE))
    top = float(np.percentile(sm, 99))
    return sm > 0.25 * top if top > 0 else np.zeros(chan.shape, bool)


def _lost_line(
    cur: np.ndarray, before: np.ndarray, after: np.ndarray, exclude: np.ndarray
) -> tuple[float, np.ndarray]:
    """The longest thin line where both neighbours hold material (within a pixel: what the
    alignment leaves) and the section holds none: a crack that opened in it. Whether the
    pixels hold material is asked of each section alone (`_material`), not how much, so it
    holds between sections of different stains, where the prediction residual of a crack is
    no larger than the stains' own difference. Structure that ends between sections leaves
    a compact hole, not a line.

    Returns
    -------
    length, pixels
        The line's length as a share of the side (0 without one: at least
        ``CRACK_ELONGATION`` times longer than wide) and its pixels."""
    side = float(max(cur.shape))
    u = max(1.0, side / _LINE_SIDE)  # working pixels per pixel at the line's own side
    slack = np.ones((2 * round(u) + 1,) * 2, np.uint8)
    both = cv2.erode((before & after).astype(np.uint8), slack).astype(bool)
    lost = (both & ~cur & ~exclude).astype(np.uint8)
    lost = cv2.morphologyEx(lost, cv2.MORPH_OPEN, np.ones((round(2 * u),) * 2, np.uint8))
    n, lab, stats, _ = cv2.connectedComponentsWithStats(lost, connectivity=8)
    best, pix = 0.0, np.zeros(cur.shape, bool)
    lines = []  # (length as a share of the side, members' centres, pixels) of every thin line
    groups, pieces = _collinear_groups(lab, stats, u, side)
    for members in groups:
        centres = [pieces[c].centre for c in members] if len(members) > 1 else []
        if centres and not any(_is_line(pieces[c], side, 0.5) for c in members):
            continue  # a chain grows from a piece that is itself half a crack
        piece = np.isin(lab, members)
        length, elong = _shape(piece)
        if elong >= CRACK_ELONGATION:
            lines.append((length / side, centres, piece))
    if not lines:
        return best, pix
    best = max(x[0] for x in lines)
    # every line as long as a crack goes into the mask (a crack that bends is seen as several:
    # on ANHIR its straight part through the lesion was left out beside the longer chain of
    # pieces where it bent), or the longest line when none is
    for length, centres, piece in lines:
        if length >= CRACK_LENGTH or length == best:
            pix |= _bridged(piece, centres, cur, u)
    return best, pix


#: The crack line: the residual is averaged along segments this share of the side long (a
#: crack's shortest run, ``CRACK_LENGTH``) in ``_LINE_ANGLES`` directions, across a profile as
#: wide as a crack opens (``_LINE_WIDTH`` of the side: 1.5-3 % wide cracks), less its surround.
_LINE_ANGLES = 12
_LINE_WIDTH = 0.006
_LINE_LENGTH = 0.15
#: A line of lost material whose mean residual along a crack's length is this many typical
#: residuals is a crack before calibration (the stack's clean sections set the bar above it).
LINE_LEVEL = 0.75


def _line_kernels(side: float) -> list[np.ndarray]:
    """Zero-mean kernels that average a ridge profile (core sigma ``_LINE_WIDTH`` of the side,
    less a surround three times wider) along a segment ``CRACK_LENGTH`` of the side long, one
    per direction; scaled so that a line of residual 1 as wide as the core gives about 1."""
    sigma = max(1.0, _LINE_WIDTH * side)
    half = max(3, round(_LINE_LENGTH * side / 2))
    size = 2 * max(half, round(6 * sigma)) + 1
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) - size // 2
    kernels = []
    for k in range(_LINE_ANGLES):
        th = np.pi * k / _LINE_ANGLES
        along = xx * np.cos(th) + yy * np.sin(th)
        across = -xx * np.sin(th) + yy * np.cos(th)
        core = np.exp(-0.5 * (across / sigma) ** 2)
        wide = np.exp(-0.5 * (across / (2 * sigma)) ** 2) / 2
        ker = (np.abs(along) <= half) * (core - wide)
        ker -= ker.mean()
        kernels.append((ker / ker[ker > 0].sum()).astype(np.float32))
    return kernels


def _crack_line(lost: np.ndarray, kernels: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """How strongly a straight run of lost material (``lost``: the residual in typical
    residuals, positive where material is missing) passes through each pixel, and in which
    direction (index into ``kernels``). A crack is thin and runs on: averaged along its
    length it stands out of residual that is as strong pixel by pixel but compact (structure
    that ends between sections leaves round holes and rings)."""
    resp = np.stack(
        [cv2.filter2D(lost, cv2.CV_32F, k, borderType=cv2.BORDER_REPLICATE) for k in kernels]
    )
    best = resp.argmax(axis=0)
    return np.take_along_axis(resp, best[None], axis=0)[0], best


def _straight_only(strength: np.ndarray, low: float) -> np.ndarray:
    """``strength`` where it is at least ``low`` in a group of pixels as long as a crack
    (``CRACK_LENGTH`` of the side) and ``CRACK_ELONGATION`` times longer than wide (see
    :class:`_Piece`), 0 elsewhere: a ring of change round a vessel whose wall moved between
    sections answers the straight kernels along its tangents, and a short gap between
    collagen fibres answers them at its middle, but neither is a crack's line."""
    n, lab = cv2.connectedComponents((strength >= low).astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros_like(strength)
    ys, xs = np.nonzero(lab)
    labels = lab[ys, xs]
    count = np.maximum(np.bincount(labels, minlength=n), 1)
    mx, my = np.bincount(labels, xs, n) / count, np.bincount(labels, ys, n) / count
    dx, dy = xs - mx[labels], ys - my[labels]
    sxx = np.bincount(labels, dx * dx, n) / np.maximum(count - 1, 1)
    syy = np.bincount(labels, dy * dy, n) / np.maximum(count - 1, 1)
    sxy = np.bincount(labels, dx * dy, n) / np.maximum(count - 1, 1)
    half, root = (sxx + syy) / 2, np.sqrt(((sxx - syy) / 2) ** 2 + sxy**2)
    length, elong = _length_elong(half + root, half - root)  # the covariance's eigenvalues
    keep = (elong >= CRACK_ELONGATION) & (length >= CRACK_LENGTH * max(strength.shape))
    keep[0] = False
    return np.where(keep[lab], strength, 0).astype(strength.dtype)


def _straight_peak(strength: np.ndarray) -> np.ndarray:
    """``strength`` without its strongest stretches that are no crack's line (see
    `_straight_only`), each taken down to half its peak: what is left peaks on a line."""
    for _ in range(8):
        peak = float(strength.max())
        if peak <= 0:
            break
        kept = _straight_only(strength, 0.5 * peak)
        if float(kept.max()) >= peak:
            break
        strength = np.where((strength >= 0.5 * peak) & (kept == 0), 0, strength)
    return strength


def _crack_line_mask(
    strength: np.ndarray, direction: np.ndarray, level: float, kernels: list[np.ndarray]
) -> np.ndarray:
    """The pixels of the crack lines whose strength reaches ``level``, followed down to half
    of it (the crack's weaker stretches): each such pixel's segment, along its direction (the
    support of its kernel's core). Where the line, followed that far, merges into what is no
    line, it is followed down to the level, then to half its peak, where it is straight (a
    short crack from the border was flagged with no mask at all)."""
    out = np.zeros(strength.shape, bool)
    peak = float(strength.max())
    for low in (0.5 * level, level, 0.5 * peak):
        line = _straight_only(strength, low)
        _, lab = cv2.connectedComponents((line > 0).astype(np.uint8), connectivity=8)
        hit = np.isin(lab, np.unique(lab[line >= level])) & (lab > 0)
        if hit.any():
            break
    for k, ker in enumerate(kernels):
        here = (hit & (direction == k)).astype(np.uint8)
        if here.any():
            out |= cv2.dilate(here, (ker > 0.5 * ker.max()).astype(np.uint8)) > 0
    return out


def _is_line(piece: _Piece, side: float, share: float) -> bool:
    """Whether a piece is a thin line ``share`` of a crack long or longer (see
    ``CRACK_LENGTH`` and ``CRACK_ELONGATION``): specks along skin's surface, each too short
    to be a line, chained into a false crack (1.4) on a held-out stack."""
    return piece.elong >= CRACK_ELONGATION and piece.length / side >= share * CRACK_LENGTH


def _bridged(piece: np.ndarray, centres: list[np.ndarray], cur: np.ndarray, u: float):
    """The pixels of a chain of pieces (``piece``; ``centres``: the (x, y) centre of each, none
    for a line of one piece) and, between consecutive pieces, those of a band along the
    segment joining them where the section holds no material (``cur`` False): the crack runs
    on where the neighbours hold no material either, and the mask should cover it there too."""
    if len(centres) < 2:
        return piece
    centres = np.array(centres)
    d = centres - centres.mean(axis=0)
    axis = np.linalg.eigh(d.T @ d)[1][:, 1]
    ordered = centres[np.argsort(d @ axis)]
    band = np.zeros(piece.shape, np.uint8)
    for a, b in zip(ordered[:-1], ordered[1:], strict=True):
        cv2.line(band, tuple(map(round, a)), tuple(map(round, b)), 1, max(1, round(3 * u)))
    return piece | (band.astype(bool) & ~cur)


#: Pieces of lost material are one crack when the segment between their centres runs along
#: the axis of each piece that has one (within ``_CHAIN_ANGLE`` degrees; a compact piece has
#: none, but one of the two must) and no more than ``_CHAIN_GAP`` of the side lies between
#: them: through airy tissue (lung's alveoli) a neighbour holds no material on much of a
#: crack's line, so the crack is seen as a row of short pieces (a tear across ANHIR's lung
#: scored 0.6 on its longest piece, 6 % of the side, while it crossed two thirds of it).
_CHAIN_ANGLE = 15.0
_CHAIN_GAP = 0.15
#: Pieces within this share of the side from the border are not chained: there the sections
#: of a block drift in and out of view along lines parallel to the edge (specks along skin's
#: surface at the top of the crops chained into false cracks).
_CHAIN_MARGIN = 0.06


def _collinear_groups(lab: np.ndarray, stats: np.ndarray, u: float, side: float):
    """Labels of ``lab`` (components, with ``stats`` from OpenCV) grouped into chains of
    pieces that lie along one line (see ``_CHAIN_ANGLE``); a gently curved crack chains
    through its locally straight pieces. Pieces under ``8 u^2`` pixels (``u``: working pixels
    per pixel at the line's own side) are left out, as a crack of one piece would be, and so
    are pieces near the border (``_CHAIN_MARGIN``); a piece left out is its own group when
    it is large enough.

    Returns
    -------
    groups, pieces
        The groups (arrays of labels) and the :class:`_Piece` of every label that may be
        chained (every member of a group of two or more)."""
    h, w = lab.shape
    margin = _CHAIN_MARGIN * side
    big = [c for c in range(1, stats.shape[0]) if stats[c, cv2.CC_STAT_AREA] >= 8 * u * u]
    ids = [
        c
        for c in big
        if min(
            stats[c, cv2.CC_STAT_LEFT],
            stats[c, cv2.CC_STAT_TOP],
            w - stats[c, cv2.CC_STAT_LEFT] - stats[c, cv2.CC_STAT_WIDTH],
            h - stats[c, cv2.CC_STAT_TOP] - stats[c, cv2.CC_STAT_HEIGHT],
        )
        >= margin
    ]
    pts, pieces, axis = {}, {}, {}
    for c in ids:
        here = lab == c
        ys, xs = np.nonzero(here)
        pts[c] = np.column_stack([xs, ys]).astype(np.float32)
        pieces[c] = _piece(here)
        # an axis only for a piece that has one (half again as long as wide)
        axis[c] = pieces[c].axis if pieces[c].elong > 1.5 else None
    parent = {c: c for c in ids}

    def root(c):
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    cos_max = np.cos(np.deg2rad(_CHAIN_ANGLE))
    for x, a in enumerate(ids):
        for b in ids[x + 1 :]:
            if axis[a] is None and axis[b] is None:
                continue
            seg = pieces[b].centre - pieces[a].centre
            dist = float(np.hypot(*seg))
            if dist == 0 or any(
                abs(float(axis[c] @ seg)) / dist < cos_max for c in (a, b) if axis[c] is not None
            ):
                continue
            if _nearest(pts[a], pts[b]) <= _CHAIN_GAP * side:
                parent[root(a)] = root(b)
    chains: dict[int, list[int]] = {}
    for c in ids:
        chains.setdefault(root(c), []).append(c)
    groups = [np.array(members) for members in chains.values()]
    groups += [np.array([c]) for c in set(big) - set(ids)]
    return groups, pieces


def _nearest(a: np.ndarray, b: np.ndarray) -> float:
    """The smallest distance between two sets of points."""
    from scipy.spatial import cKDTree

    return float(cKDTree(b).query(a, k=1)[0].min())


#: How far (in the stack's contrast range, its 1st to 99.5th percentile) below the emptiest
#: pixels (0.1th percentile) of both neighbours a compact loss of material must lie to be a
#: hole or a bubble rather than structure that ends between sections.
HOLE_MARGIN = 0.1
#: The smallest hole, in units of the smallest debris mass (other debris needs 0.25 of it).
HOLE_MIN_MASS = 0.05


def _displaced_reach(side: float) -> int:
    """How far (pixels) from a fold or tear the tissue it pushed aside lies: 4 % of the side."""
    return max(3, int(0.04 * side))


def _classify_local(
    z: np.ndarray,
    nbz: np.ndarray | None,
    s: QCSettings,
    material: tuple[np.ndarray, np.ndarray] | None = None,
    hole: tuple[np.ndarray, float] | None = None,
):
    """Fold, tear and debris masks and scores from a residual map in typical residuals
    (``nbz``: the neighbours' largest absolute residual within a few pixels: damage of a
    neighbour echoes, at about half strength, in the sections predicted from it, and natural
    change moves a little from section to section; a component that a neighbour matches is
    left out). ``material``: the section's tissue-bright channel and the neighbours' densest
    material within a few pixels; a blob of added material that a neighbour holds as densely
    there is the same structure changed (a dividing cell's chromosomes), not debris.
    ``hole``: the section's channel and the level below which a pixel is emptier than either
    neighbour holds anywhere; a compact loss of material below it is debris (a hole, a
    bubble), where structure that ends between sections leaves what surrounds it."""
    h, w = z.shape
    side = float(max(h, w))
    norm = (256.0 / side) ** 2  # masses are counted at a 256-pixel working side
    comps = _components(z, 1, s.residual_z, side) + _components(z, -1, s.residual_z, side)
    if nbz is not None:
        az = np.abs(z)
        comps = [c for c in comps if nbz[c["pix"]].mean() < 0.8 * az[c["pix"]].mean()]
    linear, blobs = [], []
    for c in comps:
        c["mass"] *= norm
        if c["length"] > 0.25 and c["elong"] > 2.5:
            linear.append(c)
        elif c["sign"] < 0 and c["length"] > CRACK_LENGTH and c["elong"] > CRACK_ELONGATION:
            # a short crack: a thin line where the slide shows. Structure that ends between
            # sections (a nucleus, an organelle) leaves a compact hole, not a line
            linear.append(c)
        else:
            blobs.append(c)
    masks = {k: np.zeros((h, w), bool) for k in ("fold", "tear", "debris")}
    scores = {k: 0.0 for k in masks}
    linear.sort(key=lambda c: -c["mass"])
    near = np.zeros((h, w), np.uint8)
    for c in linear:
        kind = "fold" if c["sign"] > 0 else "tear"
        masks[kind] |= c["pix"]
        scores[kind] += c["mass"] / s.min_mass
        near |= c["pix"].astype(np.uint8)
    if linear:
        r = _displaced_reach(side)
        near = cv2.dilate(near, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2))
    for c in blobs:
        if linear and (near[c["pix"]] > 0).mean() > 0.5:
            # a piece beside a fold or tear: displaced tissue of the same damage
            kind = "fold" if scores["fold"] >= scores["tear"] else "tear"
            masks[kind] |= c["pix"]
            scores[kind] += c["mass"] / s.min_mass
            continue
        if c["sign"] < 0:
            # less material than the neighbours predict: structure that ends between sections
            # takes it away; but not below what the emptiest pixels of both neighbours hold
            # (a hole, a bubble: on EM, white where no tissue is as pale). That level is
            # evidence enough for a smaller blob than other debris needs
            emptier = hole is not None and float(np.median(hole[0][c["pix"]])) < hole[1]
            if emptier and c["mass"] / s.min_mass >= HOLE_MIN_MASS:
                masks["debris"] |= c["pix"]
                scores["debris"] += c["mass"] / s.min_mass
            continue
        if c["mass"] / s.min_mass < 0.25:
            continue  # a small natural change between sections
        if material is not None:
            cur, near_material = material
            here = float(np.median(cur[c["pix"]]))
            if here > 0 and float(np.median(near_material[c["pix"]])) >= SAME_MATERIAL_SHARE * here:
                continue
        masks["debris"] |= c["pix"]
        scores["debris"] += c["mass"] / s.min_mass
    return masks, scores


#: A neighbour's residual within this fraction of the side counts against a component (natural
#: change, a dividing cell's chromosomes, moves by a few pixels from section to section).
_NEAR_SHARE = 0.02


def _log_gain(ref: np.ndarray, cur: np.ndarray, keep: np.ndarray | None = None) -> float:
    """log of the factor by which ``cur``'s distance from the background is ``ref``'s: the
    median log ratio of the two (both lightly smoothed, channel 0 at the stack's background)
    over the pixels where both hold tissue (above a quarter of their own 99th percentile, so a
    swing does not move the threshold). A stain or exposure swing scales every pixel by the
    same factor; structure that appears or vanishes between neighbours, a fold or debris move
    only some pixels, which the median leaves out. 0 when the two share too little tissue."""
    both = (ref > 0.25 * np.percentile(ref, 99)) & (cur > 0.25 * np.percentile(cur, 99))
    if keep is not None:
        both &= keep
    if both.sum() < max(16, 0.002 * both.size):
        return 0.0
    return float(np.median(np.log(cur[both] / ref[both])))


def _trend(near: list[int], log_gain, zpos: list[int], *, leave_one_out: bool = False) -> float:
    """The slow stain trend among the ``near`` sections, in log gain per z number: the median
    of their pairwise slopes, kept where at least 80 % of the pairs agree on its direction
    (sections whose stains differ at random have no trend), 0 with fewer than three.

    ``leave_one_out``: one of them may be damaged itself (a swung neighbour sets half of the
    pairs), so the trend must hold with any one of them left out: the one taken is the
    smallest of those slopes, and there is none where leaving one out turns its direction."""

    def slope(sub: list[int]) -> float:
        slopes = [
            log_gain(a, b) / (zpos[b] - zpos[a])
            for x, a in enumerate(sub)
            for b in sub[x + 1 :]
            if zpos[b] != zpos[a]
        ]
        if not slopes:
            return 0.0
        med = float(np.median(slopes))
        if med and np.mean(np.sign(slopes) == np.sign(med)) < 0.8:
            return 0.0
        return med

    if len(near) < 3:
        return 0.0  # two: no trend
    full = slope(near)
    if not full or not leave_one_out:
        return full
    without_one = [slope([k for k in near if k != j]) for j in near]
    if any(np.sign(x) != np.sign(full) for x in without_one):
        return 0.0
    return min(without_one, key=abs)


def _stain_dev(i: int, near: list[int], log_gain, zpos: list[int], s: QCSettings) -> float:
    """How far section ``i``'s stain is off its ``near`` sections, in units of
    ``log(contrast_ratio)``. ``log_gain(j, k)`` is section k's log gain against section j.
    A slow trend (fluorescence fading with depth, every nucleus ending at the top of a
    monolayer; see `_trend`) is taken out; the deviation is the median over the near sections
    of section i's gain less that trend, so one damaged neighbour does not set it and a
    section whose own stain swung is off all of them. Where the near sections all lie on one
    side (the ends of the stack), the trend is extrapolated, and an error in it grows with
    the distance: there it must hold with any one near section left out (a swung neighbour
    made a trend that the end section then sat off). Between near sections on both sides
    its errors cancel, and leaving one out would only weaken a real trend."""
    if not near:
        return 0.0
    one_side = all(zpos[j] > zpos[i] for j in near) or all(zpos[j] < zpos[i] for j in near)
    slope = _trend(near, log_gain, zpos, leave_one_out=one_side)
    devs = [log_gain(j, i) - slope * (zpos[i] - zpos[j]) for j in near]
    return float(abs(np.median(devs)) / np.log(s.contrast_ratio))


#: how many other sections, each predicted across a gap as wide, set the unit of a section
#: whose neighbours lie across a gap
SPAN_SAMPLES = 6
#: A section predicted from far is judged against its own residual's 99th percentile unless
#: that lies this many times above its 95th percentile times the stack's typical ratio of the
#: two (its tail is then damage, not natural change).
TAIL_SLACK = 1.5

#: A residual that a shift of this many working pixels explains is not damage.
_SLACK_PX = 0.75


def _edge_strength(img: np.ndarray) -> np.ndarray:
    """Gradient magnitude per pixel of ``img`` lightly smoothed (sigma 1)."""
    sm = _smooth(img.astype(np.float32), 1.0)
    gx = cv2.Sobel(sm, cv2.CV_32F, 1, 0, ksize=3) / 8
    gy = cv2.Sobel(sm, cv2.CV_32F, 0, 1, ksize=3) / 8
    return np.hypot(gx, gy)


def _unexplained(cur: np.ndarray, pred: np.ndarray, cur_edges: np.ndarray) -> np.ndarray:
    """``cur - pred`` less what a shift of up to :data:`_SLACK_PX` pixels explains (the local
    gradient times that shift, the larger of both images' gradients; ``cur_edges`` is
    :func:`_edge_strength` of ``cur``): the flow that bends the prediction is smooth, so along
    every strong edge it is off by a fraction of a pixel, and without the slack such an edge
    is a long thin band of residual, a false fold or tear."""
    r = cur - pred
    g = np.maximum(cur_edges, _edge_strength(pred))
    return (np.sign(r) * np.maximum(np.abs(r) - _SLACK_PX * g, 0)).astype(np.float32)


def _min_residual(rs: list[np.ndarray]) -> np.ndarray:
    """The smallest of several residuals where they agree in sign, 0 where they do not."""
    rs = np.stack(rs)
    sign = np.sign(rs[0])
    same = np.all(np.sign(rs) == sign, axis=0)
    return np.where(same, sign * np.abs(rs).min(axis=0), 0.0).astype(np.float32)


def _match_gain(pred: np.ndarray, cur: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    """The prediction with its tissue's median and gain set to the section's (a stain or
    exposure change is not local damage; a fold or debris hardly moves these robust figures)."""
    m = tissue if 0.02 < tissue.mean() < 0.98 else np.ones_like(tissue)
    first = _gain_fit(pred, cur, m)
    # fitted again on the three quarters it explains best: a fold over a fifth of the section
    # biased the gain, and the epidermis above it read as torn
    r = np.abs(cur - first)
    return _gain_fit(pred, cur, m & (r <= np.percentile(r[m], 75)))


def _gain_fit(pred: np.ndarray, cur: np.ndarray, m: np.ndarray) -> np.ndarray:
    """The prediction with its median and gain over ``m`` set to the section's."""
    p50, c50 = float(np.median(pred[m])), float(np.median(cur[m]))
    d = pred[m] - p50
    big = np.abs(d) > np.percentile(np.abs(d), 75)
    # the median ratio over the pixels far from the median: robust to the few a fold changes
    gain = float(np.median((cur[m][big] - c50) / d[big])) if big.sum() > 16 else 1.0
    gain = float(np.clip(gain, 0.25, 4.0))
    return ((pred - p50) * gain + c50).astype(np.float32)


# -------------------------------------------------------------------------------- the stack


class _Calibration:
    """Per-kind thresholds set by the stack's own distribution of raw scores (median + z MAD,
    never below the kind's floor); raw scores are in units of the absolute thresholds.

    Sections predicted from one side only (the ends of the stack, or beside a run of skipped
    sections) are judged against the stack's one-sided scores: what predicting inner sections
    from one neighbour alone gives there (structure that appears or vanishes along z is
    explained by neither side of an end section, so its natural residual is that of a
    one-sided prediction, not of the two-sided one), from a neighbour as far away along z (an
    end section beside a missing or skipped one is predicted across the gap, and sections two
    apart differ more than neighbours do)."""

    def __init__(self, s: QCSettings, skip: list[bool], raw: list[dict[str, float]]):
        self.z = s.calibrate_z
        self.floor = dict(s.floor)
        self.skip = skip
        self.raw = raw
        self.one_sided = [False] * len(raw)
        #: for a one-sided section: how far along z its one reference is
        self.reach = [1] * len(raw)
        #: one-sided scores of inner sections: (section, reach of its reference, raw scores)
        self.raw_one: list[tuple[int, int, dict[str, float]]] = []
        self.level: dict[str, float] = {}
        self.level_one: dict[tuple[int, str], float] = {}
        #: kinds whose level was set by fewer than 4 sections: which sections set it
        self.few: dict[str, list[bool]] = {}

    @staticmethod
    def _far(reach: int) -> int:
        return 2 if reach >= 2 else 1

    def _level(self, raw: list[dict[str, float]], k: str, use: list[bool]) -> float:
        if self.z <= 0:
            return 1.0
        v = np.array([r.get(k, 0.0) for r, u in zip(raw, use, strict=True) if u])
        if v.size < 2:
            return 1.0
        med = float(np.median(v))
        mad = 1.4826 * float(np.median(np.abs(v - med)))
        if v.size < 4:
            # too few sections to know what is normal: never below the absolute threshold,
            # but above it where the few all score high (three sections stained for
            # different markers are all 'off' each other)
            return max(1.0, med + self.z * mad)
        return max(self.floor.get(k, 1.0), med + self.z * mad)

    def fit(self, kinds: tuple[str, ...]) -> None:
        """Set the levels of ``kinds`` from the raw scores gathered so far."""
        usable = [not d for d in self.skip]
        for k in kinds:
            ones = [(self._far(r), d) for i, r, d in self.raw_one if usable[i] and k in d]
            if not ones:  # no one-sided scores of this kind: one level for every section
                self.level[k] = self._level(self.raw, k, usable)
                self._note_few(k, usable)
                self.level_one[(1, k)] = self.level_one[(2, k)] = self.level[k]
                continue
            two = [u and not o for u, o in zip(usable, self.one_sided, strict=True)]
            self.level[k] = self._level(self.raw, k, two)
            self._note_few(k, two)
            for far in (1, 2):
                pool = [d for f, d in ones if f == far]
                # without samples at this reach, the nearer reach (never a lower bar)
                self.level_one[(far, k)] = (
                    self._level(pool, k, [True] * len(pool))
                    if len(pool) >= 4
                    else self.level_one.get((1, k), self._level(self.raw, k, usable))
                )

    def _note_few(self, k: str, use: list[bool]) -> None:
        self.few.pop(k, None)
        if 2 <= sum(use) < 4:
            self.few[k] = list(use)

    def __call__(self, i: int, k: str) -> float:
        """Section ``i``'s calibrated score of kind ``k`` (flagged at >= 1)."""
        return self.raw[i].get(k, 0.0) / self.bar(i, k)

    def bar(self, i: int, k: str) -> float:
        """The raw score of kind ``k`` at which section ``i`` is flagged."""
        if self.one_sided[i]:
            level = self.level_one.get((self._far(self.reach[i]), k), 1.0)
        elif k in self.few and self.few[k][i]:
            # two or three sections cannot outvote one: a damaged section among them moved
            # the median to half its own score and set its own bar (ANHIR with one section
            # missing: two inner sections, debris scored 26 against a level of 91). Each is
            # judged against the others only
            others = [u and j != i for j, u in enumerate(self.few[k])]
            level = self._level(self.raw, k, others)
        else:
            level = self.level.get(k, 1.0)
        return level


def _work_channels(
    volume, s: QCSettings
) -> ProgressGenerator[tuple[list, tuple, str, list, float | None, list]]:
    """Each section's working channel (material high, the stack's 1st to 99.5th percentile
    scaled to 0-1) at the working size, its shape, the channel kind, each section's
    alignment fill, (stained brightfield) the level of :data:`OPAQUE_OD` on that scale, and
    each section's stained pixels (:func:`_stained`; None for other channel kinds)."""
    n = volume.shape[0]
    h, w = volume.shape[1:3]
    f = min(1.0, s.work_side / max(h, w))
    shape = (max(8, round(h * f)), max(8, round(w * f)))
    kind = auto_channel(np.asarray(volume.data[n // 2].compute()))
    chans, voids, stained, resampled = [], [], [], []
    for i in range(n):
        img = np.asarray(volume.data[i].compute())
        voids.append(_resize_mask(_warp_fill(img), shape))
        stained.append(None)
        if kind == "od":
            # against the bare slide, not the section's border: on a crop, or a section whose
            # alignment fill (the border's median) is tissue-coloured, every paler pixel held
            # no density at all, a different set on each section (a section of turned lung
            # crops read as debris all over its air spaces)
            slide = slide_colour(img)[:3]

            def channel(x, slide=slide):
                return optical_density(x, background=slide).sum(axis=-1)

            c = channel(img[..., :3])
            stained[-1] = _stained(c, shape)
            small = _resize(img[..., :3].astype(np.float32), shape)
        else:  # one offset for the whole stack (inverted gray is turned at its own maximum)
            sign = -1.0 if kind == "inverted" else 1.0

            def channel(x, sign=sign):
                return registration_channel(x, "intensity") * sign

            c = channel(img)
            small = _resize(img.astype(np.float32), shape)
        chans.append(_resize(c.astype(np.float32), shape))
        resampled.append(_resampling_residuals(channel, small))
        yield Progress(i + 1, 3 * n, f"reading section {i + 1} of {n}", "qc")
    lo = float(np.median([np.percentile(c, 1.0) for c in chans]))
    hi = float(np.median([np.percentile(c, 99.5) for c in chans]))
    scale = 1.0 / (hi - lo) if hi > lo else 1.0
    chans = [((c - lo) * scale).astype(np.float32) for c in chans]
    resampled = [tuple((x * scale).astype(np.float32) for x in r) for r in resampled]
    opaque = (OPAQUE_OD - lo) * scale if kind == "od" else None
    return chans, shape, kind, voids, opaque, stained, resampled


def _resampling_residuals(channel, small: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What resampling alone changes in a section (``small``: the section at the working
    size; ``channel``: how its working channel is made, before the stack's scaling), less
    what a small shift explains: between two copies resampled a quarter of a pixel either way
    (:func:`_quarter_shifts`), and between the section and itself as a half-pixel resampling
    smooths it (:func:`_half_pixel_blur`). Both are made from the resampled intensities, as
    an alignment resamples a section before its optical density is taken."""
    a, b = (channel(x).astype(np.float32) for x in _quarter_shifts(small))
    here = channel(small).astype(np.float32)
    smoothed = channel(_half_pixel_blur(small)).astype(np.float32)
    return (
        _unexplained(a, b, _edge_strength(a)),
        _unexplained(here, smoothed, _edge_strength(here)),
    )


def _quarter_shifts(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``img`` resampled (bilinear) a quarter of a pixel down and right, and a quarter up and
    left: two copies that differ as two sections resampled by an alignment do."""
    h, w = img.shape[:2]
    return tuple(
        cv2.warpAffine(
            img,
            np.float32([[1, 0, d], [0, 1, d]]),
            (w, h),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT,
        )
        for d in (0.25, -0.25)
    )


def _resampling_unit(resampled: list, tissue: list, coarse: float) -> tuple[float, float]:
    """The least residual two sections differ by: the median over sections of the 99th
    percentile, over the tissue, of the residual between two copies of the section resampled
    a quarter of a pixel either way (the first of :func:`_resampling_residuals`), at the fine
    scale and at the ``coarse`` one."""
    fine, wide = [], []
    for (u, _), t in zip(resampled, tissue, strict=True):
        if not t.any():
            continue
        fine.append(np.percentile(np.abs(_smooth(u, 1.5))[t], 99))
        wide.append(np.percentile(np.abs(_smooth(u, coarse))[t], 99))
    return (float(np.median(fine)), float(np.median(wide))) if fine else (0.0, 0.0)


def _half_pixel_blur(img: np.ndarray) -> np.ndarray:
    """``img`` as a bilinear resampling half a pixel off along both axes leaves it: smoothed
    by ``[1/4, 1/2, 1/4]`` both ways (the most an alignment's resampling smooths a section)."""
    k = np.array([[0.25, 0.5, 0.25]], np.float32)
    return cv2.sepFilter2D(img, -1, k, k, borderType=cv2.BORDER_REFLECT)


#: the smallest share of a section that a warp's fill must cover to be taken for one
_FILL_MIN_SHARE = 0.002


def _without_opaque(chan: np.ndarray, opaque: float | None) -> np.ndarray:
    """A working channel with its opaque pixels (above ``opaque``, stained brightfield only)
    set to its median: no tissue, no edge."""
    out = chan.copy()
    if opaque is not None:
        dust = chan > opaque
        if dust.any():
            out[dust] = float(np.median(out[~dust])) if (~dust).any() else 0.0
    return out


def _warp_fill(img: np.ndarray) -> np.ndarray:
    """Where an aligned section holds no data: the regions touching its border that hold
    exactly its fill colour (the alignment warps a section onto the stack's canvas and fills
    what it does not cover with that section's border median; measured pixels are never
    exactly one value over hundreds of pixels)."""
    fill = background_value(img)
    same = np.all(img == fill, axis=-1) if img.ndim == 3 else img == fill
    if same.mean() < _FILL_MIN_SHARE:
        return np.zeros(img.shape[:2], bool)
    _, lab, stats, _ = cv2.connectedComponentsWithStats(same.astype(np.uint8), connectivity=4)
    edge = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    # each region large by itself (single pixels at the fill's value are measured pixels)
    big = stats[:, cv2.CC_STAT_AREA] >= _FILL_MIN_SHARE * same.size
    edge = edge[(edge > 0) & big[edge]]
    return np.isin(lab, edge)


def _stained(od: np.ndarray, shape: tuple) -> np.ndarray:
    """A brightfield colour section's stained pixels at the working size, from its optical
    density summed over channels against the bare slide (:func:`.image.slide_colour`):
    lightly smoothed, above :data:`.image.TISSUE_OD`. Tissue is then also what Otsu's split
    leaves out when the section is all tissue (a crop inside a slide: the split fell between
    dense epidermis and pale stroma, and the blur of a user's half-blurred crop was judged on
    the rest)."""
    small = _resize(od.astype(np.float32), shape)
    return _smooth(small, max(1.0, max(shape) / 256)) > TISSUE_OD


def _resize_mask(mask: np.ndarray, shape: tuple) -> np.ndarray:
    """``mask`` at the working size, grown by a pixel (the warp blends the fill into the
    section's edge)."""
    small = _resize(mask.astype(np.uint8), shape, nearest=True)
    return cv2.dilate(small, np.ones((3, 3), np.uint8)).astype(bool)


def iter_section_qc(volume, *, settings: QCSettings | None = None) -> ProgressGenerator[QCReport]:
    """Find damaged, duplicated, missing and misaligned sections of a stack.

    Planes the metadata marks synthetic (interpolated or restored by this product, as in a
    built volume) are not judged and do not serve as neighbours: the measured sections are
    compared with each other, in their order, a filled gap between two of them counting as
    the distance it spans. A synthetic plane has an entry with ``synthetic`` set and no flags.

    Parameters
    ----------
    volume
        A :class:`core.io.Volume` of aligned sections (z, y, x[, c]).
    settings
        Thresholds (:class:`QCSettings`; defaults when None).

    Yields
    ------
    Progress
        One step per section read and per section judged.

    Returns
    -------
    QCReport
        One entry per section and per missing z number, masks at the sections' full size.
    """
    meta = volume.meta.with_planes(volume.shape[0])
    measured = [i for i, syn in enumerate(meta.synthetic) if not syn]
    if len(measured) == volume.shape[0] or len(measured) < 2:
        return (yield from _iter_qc(volume, settings))
    return (yield from _iter_measured_qc(volume, meta, measured, settings))


def _iter_measured_qc(volume, meta, measured: list[int], settings) -> ProgressGenerator[QCReport]:
    """:func:`iter_section_qc` of the measured planes ``measured`` of a volume that holds
    synthetic ones too."""
    from ..io import Volume
    from ..io.meta import planes_of

    zs = [int(meta.z_numbers[i]) for i in measured]
    pos = _section_positions(zs, meta.planes_per_section)
    sub_meta = replace(planes_of(meta, measured), z_numbers=tuple(pos), gaps=())
    sub = Volume(volume.data[np.asarray(measured)], sub_meta)
    rep = yield from _iter_qc(sub, settings)
    plane_z = dict(zip(pos, zs, strict=True))
    out = []
    for sec in rep.sections:
        if sec.z in plane_z:  # not the positions of filled gaps: they are synthetic planes
            sec.z = plane_z[sec.z]
            out.append(sec)
    for i, syn in enumerate(meta.synthetic):
        if syn:
            out.append(SectionQC(z=int(meta.z_numbers[i]), file=meta.files[i], synthetic=True))
    out += [SectionQC(z=int(g), flags=["missing"], scores={"missing": 1.0}) for g in meta.gaps]
    out.sort(key=lambda x: x.z)
    return QCReport(sections=out, shape=rep.shape, aligned=rep.aligned)


def _section_positions(plane_z: list[int], planes_per_section: float) -> list[int]:
    """Positions in sections of measured planes at ``plane_z`` (a filled gap counts as the
    sections it spans): by the planes per section the volume records (more than one: a
    volume with generated planes and none recorded says 1), else by the largest step that
    divides every step. The median step gave 4 for sections 1, 3, 4, 5, 7 built with
    2 frames between (planes 1, 7, 10, 13, 19), and sections 4 and 5 came out as one."""
    rel = np.asarray(plane_z, dtype=float) - plane_z[0]
    if planes_per_section > 1:
        pos = rel / planes_per_section
        whole = np.round(pos)
        if np.allclose(pos, whole, atol=1e-3) and len(set(whole)) == len(whole):
            return [int(p) for p in whole]
    steps = np.diff(np.asarray(plane_z, dtype=int))
    unit = int(np.gcd.reduce(steps)) if len(steps) else 1
    return [int(round(r / max(unit, 1))) for r in rel]


def _iter_qc(volume, settings) -> ProgressGenerator[QCReport]:
    """:func:`iter_section_qc` of a stack in which every plane is measured."""
    s = settings or QCSettings()
    meta = volume.meta.with_planes(volume.shape[0])
    n = volume.shape[0]
    if n < 2:
        from ..errors import InputError

        raise InputError(
            "Section QC compares each section with its neighbours, and this stack has only "
            f"{n} section; choose a stack of sections."
        )
    full = tuple(volume.shape[1:3])
    chans, shape, channel_kind, voids, opaque, stained, resampled = yield from _work_channels(
        volume, s
    )
    side = float(max(shape))
    # a section's position is set by its tissue, not by dust (black dust on ANHIR's pale Cc10
    # section moved its best match by 62-77 px, so it was called misaligned, its dust went
    # unjudged, and restore shifted it): a section is off its neighbours only when it is so
    # measured both as it is and with opaque pixels as its median (measured only the second
    # way, skin's darkest nuclei counted as opaque and a clean section read as misaligned;
    # tissue and sharpness measured so gave false blur beside sections whose contrast swing
    # had clipped to black)
    capped = [_without_opaque(c, opaque) for c in chans] if opaque is not None else None
    # stained brightfield: the slide is at no density, so tissue is the denser side (guessed
    # from the border, a crop's dense border took its densest tissue for the slide)
    high = True if channel_kind == "od" else None
    tissue = [tissue_mask(c, material_high=high) for c in chans]
    # an aligned section's fill (no data) is not tissue
    tissue = [t & ~v for t, v in zip(tissue, voids, strict=True)]
    # blur is judged, and a prediction's stain matched, on every stained pixel: Otsu's split
    # of a section that is all tissue (a crop inside a slide) left out its pale stroma, so a
    # user's half-blurred crop went unflagged (blur 0.62), and on a crop with a broad fold the
    # split kept the fold alone, the prediction was matched to it and the fold vanished from
    # the residual. Not for the residual's own scale and reach: with the stroma judged there
    # too, its natural texture read as tears on clean stacks
    stained_tissue = [
        t | (st & ~v) if st is not None else t
        for t, st, v in zip(tissue, stained, voids, strict=True)
    ]
    # consecutive differences and offsets (the stack's own scale of "normal")
    diffs = [float(np.abs(chans[i] - chans[i - 1]).mean()) for i in range(1, n)]
    # consecutive offsets: the median optical flow from each section to the next
    # (normalised cross-correlation: one global shift; the median of a dense flow and phase
    # correlation are both lost on EM pairs that barely match)
    ways = [chans] if capped is None else [chans, capped]
    steps = [[_offset(w[i - 1], w[i]) for i in range(1, n)] for w in ways]
    typ_diff = float(np.median(diffs)) if diffs else 0.0
    sharp = [sharpness_tiles(c, t, s.tiles) for c, t in zip(chans, stained_tissue, strict=True)]
    dup = [False] * n
    for i in range(1, n):
        # a copy is the later of two near-identical sections
        dup[i] = diffs[i - 1] < s.duplicate_ratio * max(typ_diff, 1e-6)
    # stain: gains against the nearest sections, on lightly smoothed channels (sections a few
    # pixels apart still compare pixel by pixel)
    soft = [np.maximum(_smooth(c, max(2.0, side / 64)), 1e-3) for c in chans]

    def near_sections(i, usable, k=4):
        """The ``k`` usable sections nearest to ``i`` along z (gaps count)."""
        js = [j for j in range(n) if j != i and usable[j]]
        return sorted(js, key=lambda j: (abs(zpos[j] - zpos[i]), j))[:k]

    gains: dict[tuple[int, int], float] = {}

    def gain(a, b):
        """Section b's log gain against section a (computed once per pair)."""
        if (a, b) not in gains:
            gains[(a, b)] = _log_gain(soft[a], soft[b])
            gains[(b, a)] = -gains[(a, b)]
        return gains[(a, b)]

    skip = list(dup)  # sections that cannot serve as a neighbour

    def step(j, d):
        j += d
        while 0 <= j < n and skip[j]:
            j += d
        return j

    def neighbours(i, far=False):
        """Indices of the nearest usable neighbours on each side (copies, misaligned and
        off-stain sections are skipped); ``far``: the next usable ones beyond them."""
        p, q = step(i, -1), step(i, 1)
        if far:
            p, q = (step(p, -1) if p >= 0 else p), (step(q, 1) if q < n else q)
        return (p if p >= 0 else None), (q if q < n else None)

    zpos = [int(z) for z in meta.z_numbers]  # positions along z (gaps count)
    raw: list[dict[str, float]] = [{} for _ in range(n)]
    cal = _Calibration(s, dup, raw)
    cand: list[dict[str, np.ndarray]] = [{} for _ in range(n)]
    # pass 1: identity, position and sharpness (no residual needed)
    for i in range(n):
        p, q = neighbours(i)
        nb = [j for j in (p, q) if j is not None and j != i]
        if i > 0:
            raw[i]["duplicate"] = float(
                s.duplicate_ratio * max(typ_diff, 1e-6) / max(diffs[i - 1], 1e-9)
            )
        if 0 < i < n - 1:
            # off both neighbours (a jump there and back) by more than they are off each
            # other (a drift moves every section; a section beside a jump is off one side only);
            # the stack's own jitter sets the bar through the calibration
            jumps = []
            for w, st in zip(ways, steps, strict=True):
                off = min(np.hypot(*st[i - 1]), np.hypot(*st[i]))
                across = np.hypot(*_offset(w[i - 1], w[i + 1]))
                jumps.append(max(0.0, float(off - across / 2)))
            raw[i]["misaligned"] = min(jumps) / (s.misaligned_px * side)
        if nb and not dup[i]:
            with np.errstate(all="ignore"):
                stackd = np.stack([sharp[j] for j in nb])
            seen = np.isfinite(stackd).sum(axis=0)
            srt = np.sort(np.where(np.isfinite(stackd), stackd, np.inf), axis=0)
            # the median of the near sections (a damaged neighbour does not set the level)
            med = np.take_along_axis(srt, ((np.maximum(seen, 1) - 1) // 2)[None], axis=0)[0]
            ref = np.where(seen > 0, med, np.nan)
            with np.errstate(all="ignore"):  # 0 / 0: a tile without detail in every section
                rel = sharp[i] / ref
            valid = np.isfinite(rel)
            if valid.sum() >= 4:
                low = valid & (rel < s.blur_ratio)
                raw[i]["blur"] = float(low.sum() / valid.sum()) / s.blur_fraction
                if len(nb) < 2 or any(abs(zpos[j] - zpos[i]) > 1 for j in nb):
                    # one reference, or one across a gap: weaker evidence
                    raw[i]["blur"] *= 0.5
                if low.any():
                    tiles = _resize(low.astype(np.uint8), shape, nearest=True).astype(bool)
                    cand[i]["blur"] = tiles & stained_tissue[i]
    cal.fit(("misaligned", "blur"))
    # sections that cannot be a reference: misaligned, or off in stain against the near ones
    not_dup = [not d for d in dup]
    for i in range(n):
        if not dup[i]:
            raw[i]["contrast"] = _stain_dev(i, near_sections(i, not_dup), gain, zpos, s)
    cal.fit(("contrast",))
    for i in range(n):
        skip[i] = dup[i] or cal(i, "misaligned") >= 1 or cal(i, "contrast") >= 1

    # prediction residuals from the two nearest usable neighbours together and from each
    # alone: damage of the section is in all three; structure that appears or vanishes along z
    # is explained by the side that has it, the echo of a neighbour's damage by the other side,
    # so the residual kept is the smallest of them (where they agree in sign)
    residuals = []
    residuals_one: list = [None] * n
    smooth = max(2.0, side / 16)
    coarse = max(3.0, side / 96)

    def scaled(rs, wide, t, span=None):
        # two scales: fine (damage with an edge) and coarse (a band whose every pixel is
        # within the natural change, as on EM, but which is coherent over its width)
        r, rc = (_min_residual([_smooth(x, sg) for x in rs]) for sg in (1.5, coarse))
        # the unit of residual: its 99th percentile over the tissue (a MAD underrates the
        # heavy tail of natural change, e.g. nuclei edges, and every edge became "damage")
        q95, q99 = (float(v) for v in np.percentile(np.abs(r[t] if t.any() else r), (95, 99)))
        q95c, q99c = (float(v) for v in np.percentile(np.abs(rc[t] if t.any() else rc), (95, 99)))
        return r, q99, wide, rc, q99c, q95, q95c, span

    edges = [_edge_strength(c) for c in chans]

    # what resampling alone changes in each section, less what a small shift explains, at each
    # scale (smoothed once: each section serves both its neighbours)
    resampling = {
        c: [_smooth(r[1], coarse if c else 1.5) for r in resampled] for c in (False, True)
    }

    def residual(i, pp, qq):
        """Section ``i`` less its prediction from sections ``pp`` and ``qq`` (either may be
        None), less what a small shift explains, 0 where the prediction holds nothing measured."""
        pred, beyond = _predict(
            chans[pp] if pp is not None else None,
            chans[qq] if qq is not None else None,
            chans[i],
            smooth,
            (
                voids[pp] if pp is not None else None,
                voids[qq] if qq is not None else None,
                voids[i],
            ),
        )
        pred = _match_gain(pred, chans[i], stained_tissue[i])
        return np.where(beyond, 0, _unexplained(chans[i], pred, edges[i]))

    def span_unit(d):
        """The median 99th percentile (fine, coarse) of the residuals of up to
        :data:`SPAN_SAMPLES` sections predicted from the sections ``d`` apart around them (None
        where no section has such neighbours)."""
        at = {zpos[j]: j for j in range(n) if not skip[j]}
        a = d // 2
        found = [
            (at[zpos[j] - a], j, at[zpos[j] + d - a])
            for j in range(n)
            if not skip[j] and zpos[j] - a in at and zpos[j] + d - a in at
        ]
        found = found[:: max(1, len(found) // SPAN_SAMPLES)][:SPAN_SAMPLES]
        q = []
        for pp, j, qq in found:
            rs = [residual(j, pp, qq), residual(j, pp, None), residual(j, None, qq)]
            x = scaled(rs, False, tissue[j])
            q.append((x[1], x[4]))
            yield Progress(2 * n, 3 * n, f"predicting sections across a gap of {d - 1}", "qc")
        return tuple(np.median(q, axis=0)) if q else None

    for i in range(n):
        near_pair = neighbours(i)
        if near_pair == (None, None):
            residuals.append(None)
            yield Progress(n + i + 1, 3 * n, f"comparing section {i + 1} of {n}", "qc")
            continue
        p, q = near_pair
        refs = [(p, q), (p, None), (None, q)]
        refs = [x for x in dict.fromkeys(refs) if x != (None, None)]
        rs = [residual(i, pp, qq) for pp, qq in refs]
        t = tissue[i]
        # a prediction across a gap (neighbours skipped) or from one side (the ends of the
        # stack) is judged against its own residual
        cal.one_sided[i] = None in near_pair
        if cal.one_sided[i]:
            cal.reach[i] = abs(zpos[p if p is not None else q] - zpos[i])
        span = None if cal.one_sided[i] else zpos[q] - zpos[p]
        residuals.append(scaled(rs, cal.one_sided[i] or span > 2, t, span))
        if not cal.one_sided[i]:  # what a prediction from one side gives on an inner section
            residuals_one[i] = [(zpos[i] - zpos[p], scaled(rs[1:2], True, t))]
        yield Progress(n + i + 1, 3 * n, f"comparing section {i + 1} of {n}", "qc")
    if any(o and r >= 2 for o, r in zip(cal.one_sided, cal.reach, strict=True)):
        # an end section predicted across a gap: what predictions across a gap give inside
        for i in range(n):
            if residuals_one[i] is None:
                continue
            p2 = step(neighbours(i)[0], -1)
            if p2 < 0:
                continue
            r = residual(i, p2, None)
            residuals_one[i].append((zpos[i] - zpos[p2], scaled([r], True, tissue[i])))
    scale = float(np.median([x[1] for x in residuals if x is not None] or [1.0])) or 1e-6
    scale_c = float(np.median([x[4] for x in residuals if x is not None] or [1.0])) or 1e-6
    # a section between neighbours further apart (beside a missing or skipped section) is
    # predicted across the gap, and sections further apart differ more: its unit is what
    # predictions across the same span give on sections that have their neighbours (judged
    # by its own residual instead, a fold over a tenth of a section beside a missing one set
    # its own unit and scored 0)
    span_units = {}
    for d in sorted({x[7] for x in residuals if x is not None and x[7] and x[7] > 2}):
        unit_d = yield from span_unit(d)
        if unit_d is not None:
            span_units[d] = unit_d
    # a section predicted from far (across a gap, or from one side) is judged against its own
    # residual's tail, estimated from its 95th percentile and the stack's typical ratio of the
    # 99th to the 95th: its own 99th percentile was set by damage over more than 1 % of its
    # tissue (black dust on an ANHIR section beside a missing one: 1.5 against its own 0.97)
    # never below what resampling alone leaves: sections that are near copies of each other
    # (crops of one image, turned and aligned again) differ only by their interpolation, and
    # in units of a smaller residual a half-blurred section read as dust all over
    floor, floor_c = _resampling_unit(resampled, tissue, coarse)
    scale, scale_c = max(scale, floor), max(scale_c, floor_c)
    tail = float(np.median([x[1] / max(x[5], 1e-9) for x in residuals if x is not None] or [1.0]))
    tail_c = float(np.median([x[4] / max(x[6], 1e-9) for x in residuals if x is not None] or [1.0]))

    def zmap_of(res, coarse_scale=False, values=None):
        """Residual in typical residuals (fine, or the coarse scale); ``values``: another map
        at that scale, put in the units of ``res``."""
        if coarse_scale:
            r, q99, q95, t, unit = res[3], res[4], res[6], tail_c, scale_c
        else:
            r, q99, q95, t, unit = res[0], res[1], res[5], tail, scale
        if values is not None:
            r = values
        if res[7] in span_units:
            return r / max(unit, span_units[res[7]][1 if coarse_scale else 0])
        # its own 99th percentile, unless its tail is far heavier than the stack's (damage)
        own = q99 if q99 <= TAIL_SLACK * q95 * t else q95 * t
        return r / (max(unit, own) if res[2] else unit)

    near_r = max(1, round(_NEAR_SHARE * side))
    near_kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * near_r + 1,) * 2)

    def neighbour_residual(i, coarse_scale):
        """The neighbours' largest absolute residual within a few pixels of each pixel (natural
        change, a dividing cell's chromosomes, moves that far from section to section); None
        without a usable neighbour. A neighbour predicted from section ``i`` alone (the end of
        the stack beside it) does not count: its residual is section i's own damage, echoed
        at full strength, and would explain it away (a crack across ISBI section 1)."""

        def from_i_alone(j):
            return cal.one_sided[j] and i in neighbours(j)

        nbz = [
            np.abs(zmap_of(residuals[j], coarse_scale))
            for j in (i - 1, i + 1)
            if 0 <= j < n and residuals[j] is not None and not dup[j] and not from_i_alone(j)
        ]
        return cv2.dilate(np.maximum.reduce(nbz), near_kernel) if nbz else None

    def explained_residual(i, coarse_scale):
        """What explains section ``i``'s residual at each pixel, on its scale: the
        neighbours' residual (:func:`neighbour_residual`) and what resampling alone changes
        in the neighbours it is predicted from (each less itself as an alignment's resampling
        smooths it: the optical density of a dark nucleus a few pixels across changes by
        several typical residuals from section to section of crops of one slide, each
        resampled at its own phase). The neighbours', not its own: damage darkens a
        section's texture, and its own resampling explained a fold's band away."""
        out = neighbour_residual(i, coarse_scale)
        for j in neighbours(i):
            if j is None:
                continue
            near = np.abs(zmap_of(residuals[i], coarse_scale, resampling[coarse_scale][j]))
            out = near if out is None else np.maximum(out, near)
        return out

    # each section's emptiest pixels (0.1th percentile of what it shows), the level below which
    # a neighbour's loss of material is a hole: once per section, not once per neighbour
    emptiest = [
        float(np.percentile(c[~v], 0.1)) if (~v).any() else None
        for c, v in zip(chans, voids, strict=True)
    ]

    def calibrated(i, k):
        """Section ``i``'s calibrated score of kind ``k``, the crack line's included."""
        return line_score.get(i, 0.0) if k == "line" else cal(i, k)

    def flagged_mask(j, kinds):
        """The union of section ``j``'s candidate masks of ``kinds`` that are flagged."""
        out = np.zeros(shape, bool)
        for k in kinds:
            if k in cand[j] and calibrated(j, k) >= 1:
                out |= cand[j][k]
        return out

    #: each section's fine-scale residual as local damage judges it (for the crack line)
    fine_z: dict[int, np.ndarray] = {}
    #: each section's crack-line strength and direction maps, its strongest line (in units of
    #: LINE_LEVEL) and that line's calibrated score
    lines: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    line_peak: dict[int, float] = {}
    line_score: dict[int, float] = {}

    # the reach of each scale's smoothing (fine: 1.5 px, coarse: ``coarse``) beyond the fill,
    # and the section's outer two pixels (a warp that reaches less than a pixel beyond the
    # section's edge blends the fill into its outer column without a run of fill pixels: a
    # column of 5 times the residual beside it). Not grown: a tear from the border, shortened
    # by a grown frame, fell below a tear's length and was missed
    rim_kernels = {
        c: cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1,) * 2)
        for c, r in ((False, 2 + 3), (True, 2 + math.ceil(2 * coarse)))
    }
    frame = np.ones(shape, bool)
    frame[2:-2, 2:-2] = False

    def local_damage(i, res, near_nb, keep=False):
        """Fold, tear and debris scores and masks of section ``i`` from its residual
        (``near_nb``: :func:`neighbour_residual` of the section at each scale; ``keep``: keep
        the fine-scale residual map in ``fine_z``)."""
        grown = cv2.dilate(tissue[i].astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
        ls_all: dict[str, float] = {}
        lm_all: dict[str, np.ndarray] = {}
        # fine scale: every kind; coarse scale: only long bands (folds, tears), whose pixels
        # may each be within the natural change (EM) while the band is coherent over its width
        # no comparison where this section or a neighbour it is predicted from holds no data
        # (the pair's prediction is wrong wherever either side is fill)
        void = voids[i].copy()
        for j in neighbours(i):
            if j is not None:
                void |= voids[j]
        # nor beside it, as far as the residual is smoothed, nor on the section's outer pixels
        # (the warp blends the fill into the rim of tissue beside it: smoothed, that step read
        # as a tear along the fill's edge of turned lung crops aligned by histovol)
        void_near = {
            c: (cv2.dilate(void.astype(np.uint8), k) > 0) | frame for c, k in rim_kernels.items()
        }
        # where one neighbour is all there is to explain a change (the ends of the stack,
        # beside a run of skipped sections), and in fluorescence, where a structure is at its
        # brightest in the plane through its middle (a nucleus brighter than both neighbours
        # read as debris at cells3d's plane 19) and a particle is brighter than any of it. Not
        # inside brightfield or EM stacks: there dust is no denser than dense tissue (the
        # tissue-bright channel saturates on both: skin's repairs fell from +4.2 to +0.7 dB)
        material = None
        if cal.one_sided[i] or channel_kind == "intensity":
            near_chans = [chans[j] for j in neighbours(i) if j is not None]
            material = (chans[i], cv2.dilate(np.maximum.reduce(near_chans), near_kernel))
        # a hole or bubble: emptier than the emptiest pixels either neighbour holds
        floors = [emptiest[j] for j in neighbours(i) if j is not None and emptiest[j] is not None]
        hole = (chans[i], min(floors) - HOLE_MARGIN) if floors else None
        for coarse_scale in (False, True):
            zmap = zmap_of(res, coarse_scale)
            zmap[~grown | void_near[coarse_scale]] = 0
            if "blur" in cand[i] and cal(i, "blur") >= 1:
                # a blurred region's residual is its lost detail, not structure
                zmap = np.where(cand[i]["blur"], zmap * 0.5, zmap)
            if keep and not coarse_scale:
                fine_z[i] = zmap
            lm, ls = _classify_local(zmap, near_nb[coarse_scale], s, material, hole)
            for k in ("fold", "tear") if coarse_scale else ("fold", "tear", "debris"):
                if k not in ls_all or ls[k] > ls_all[k]:
                    ls_all[k], lm_all[k] = ls[k], lm[k]
        return ls_all, lm_all

    # pass 2: local damage from the prediction residual (in the stack's typical residual)
    for i in range(n):
        res = residuals[i]
        if res is None or dup[i] or cal(i, "misaligned") >= 1:
            continue
        near_nb = {c: explained_residual(i, c) for c in (False, True)}
        ls_all, lm_all = local_damage(i, res, near_nb, keep=True)
        raw[i].update(ls_all)
        cand[i].update(lm_all)
        if residuals_one[i] is not None and any(cal.one_sided):
            for reach, res_one in residuals_one[i]:
                cal.raw_one.append((i, reach, local_damage(i, res_one, near_nb)[0]))
    cal.fit(("fold", "tear", "debris"))
    # a crack as a straight run of lost material in the residual: pixel by pixel a thin crack
    # across sparse or busy tissue is often no stronger than structure that ends between
    # sections, but along its length it is (synthetic blobs: 0 of 5 tears found without it).
    # Sections predicted from one side are left out (their natural residual is heavier), and
    # so are the band beside a fold or dust this section holds (material pushed aside) and
    # what a damaged neighbour covers (a blurred half predicts none of the section's detail:
    # ANHIR's lines of detail beside one read as tears). Not in fluorescence, where a thin
    # dark line inside a labelled structure is natural: the gap between a dividing cell's
    # chromosomes in cells3d (every second plane) stood out as a false tear
    kernels = _line_kernels(side)
    found = {
        i: _crack_line((-zmap).astype(np.float32), kernels)
        for i, zmap in fine_z.items()
        if channel_kind != "intensity"
    }
    fold_r = _displaced_reach(side)
    fold_kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * fold_r + 1,) * 2)
    for i, (strength, direction) in found.items():
        if cal.one_sided[i]:
            continue
        # (and its own blurred tiles: their residual is lost detail, and the nuclei cut at
        # the edge of a half blur read as a crack there once the fill no longer set the unit)
        beside = cv2.dilate(
            flagged_mask(i, ("fold", "debris", "blur")).astype(np.uint8), fold_kernel
        )
        # nor beside where this section or a neighbour holds no data (the edge of an
        # alignment's fill is a straight line, and the warp's interpolation blends it), nor
        # where a neighbour is damaged: it is no reference there
        unreferenced = voids[i].copy()
        for j in neighbours(i):
            if j is not None:
                unreferenced |= voids[j] | flagged_mask(j, ("fold", "tear", "debris", "blur"))
        beside |= cv2.dilate(unreferenced.astype(np.uint8), near_kernel)
        beside[:near_r], beside[-near_r:], beside[:, :near_r], beside[:, -near_r:] = 1, 1, 1, 1
        # a neighbour's crack echoes in the sections predicted from it (at half strength):
        # a line that a neighbour holds at least 0.8 times as strongly nearby is its
        nb = [cv2.dilate(found[j][0], near_kernel) for j in neighbours(i) if j in found]
        own = strength.copy()
        own[(beside > 0) | (np.maximum.reduce(nb) >= 0.8 * strength if nb else False)] = 0
        # the bar is set by how strongly the stack's sections answer the kernels at all; a
        # section is then scored on its lines only (scored on lines, sections without one
        # scored 0 and spread the stack's scores: an EM tear at 1.9 faced a bar of 3.9)
        raw[i]["line"] = float(own.max()) / LINE_LEVEL
        own = _straight_peak(own)
        line_peak[i] = float(own.max()) / LINE_LEVEL
        lines[i] = (own, direction)
    cal.fit(("line",))
    for i, (strength, direction) in lines.items():
        level = LINE_LEVEL * cal.bar(i, "line")
        line_score[i] = line_peak[i] / cal.bar(i, "line")
        if line_score[i] >= 1:
            cand[i]["line"] = _crack_line_mask(strength, direction, level, kernels) & (
                cv2.dilate((fine_z[i] < 0).astype(np.uint8), near_kernel) > 0
            )
    # a crack as a line of lost material (a tear between sections of other stains): not where
    # a section holds no data, nor along the border, nor where a neighbour is itself damaged
    # (its fold or blurred material is no reference). Stained brightfield only: there no
    # material is the bare slide, so the section is open. Not in fluorescence, where unlabelled
    # tissue is as dark as the background and a thin dark line inside a labelled structure is
    # natural (the gap between a dividing cell's chromosomes: 6 false tears on cells3d's
    # plane 21); nor on gray EM, whose pale cytoplasm is as empty as a crack and whose
    # membranes move from section to section (ISBI: 1-4 false tears per run)
    materials = [_material(c) for c in chans] if channel_kind == "od" else []
    for i in range(n if channel_kind == "od" else 0):
        p, q = neighbours(i)
        if residuals[i] is None or dup[i] or cal(i, "misaligned") >= 1 or None in (p, q):
            continue
        out_of_view = voids[i] | voids[p] | voids[q]
        for j in (p, q):
            out_of_view |= flagged_mask(j, ("fold", "tear", "debris", "blur"))
        out_of_view = cv2.dilate(out_of_view.astype(np.uint8), near_kernel).astype(bool)
        out_of_view[:near_r], out_of_view[-near_r:] = True, True
        out_of_view[:, :near_r], out_of_view[:, -near_r:] = True, True
        length, line = _lost_line(materials[i], materials[p], materials[q], out_of_view)
        raw[i]["crack"] = float(length / CRACK_LENGTH)
        cand[i]["crack"] = cv2.dilate(line.astype(np.uint8), near_kernel).astype(bool)
    cal.fit(("crack",))
    # pass 3: stain against the near sections, the local damage of both sections of each
    # pair left out (a fold is not a stain swing; nor is a neighbour's tear one of this
    # section: a clean ISBI section beside a torn one went from 0.99 to 1.03)
    usable = [not x for x in skip]
    hurt = [
        cv2.dilate(
            flagged_mask(i, ("fold", "tear", "debris", "crack", "line")).astype(np.uint8),
            np.ones((9, 9), np.uint8),
        )
        > 0
        for i in range(n)
    ]
    hurt_any = [h.any() for h in hurt]

    def gain_unhurt(a, b):
        if hurt_any[a] or hurt_any[b]:
            return _log_gain(soft[a], soft[b], ~(hurt[a] | hurt[b]))
        return gain(a, b)

    for i in range(n):
        near = near_sections(i, usable)
        if not near or dup[i]:
            continue
        raw[i]["contrast"] = _stain_dev(i, near, gain_unhurt, zpos, s)
    cal.fit(("contrast",))

    out: list[SectionQC] = []
    for i in range(n):
        z, file = meta.z_numbers[i], meta.files[i]
        sec = SectionQC(z=int(z), file=file)
        # capped: a copy's score is a ratio to a difference of about 0 (24 942 734 means
        # nothing more to a user than "far beyond the threshold")
        sec.scores = {k: min(cal(i, k), SCORE_CAP) for k in KINDS if k != "missing"}
        for cue in ("crack", "line"):  # a tear seen as a line of lost material
            crack = min(calibrated(i, cue), SCORE_CAP)
            if crack > sec.scores["tear"]:
                sec.scores["tear"] = crack
                if crack >= 1 and cue in cand[i]:
                    cand[i]["tear"] = cand[i].get("tear", np.zeros(shape, bool)) | cand[i][cue]
        flags = [k for k, v in sec.scores.items() if v >= 1]
        if "duplicate" in flags:
            flags = ["duplicate"]  # a copy is judged only as a copy
        elif "misaligned" in flags:
            flags = [f for f in flags if f not in ("fold", "tear", "debris")]
        # a whole-section cause (stain, position) comes before the local residual it leaves
        sec.flags = sorted(
            flags, key=lambda k: (k not in ("contrast", "misaligned"), -sec.scores[k])
        )
        lab = np.zeros(shape, np.uint8)
        # damage to rebuild before blur (whose repair keeps the section's low frequencies):
        # where blur tiles covered dust, the dust was smoothed into smudges, not removed
        for k in ("fold", "tear", "debris", "blur"):
            if k in cand[i] and k in sec.flags:
                where = cand[i][k]
                if k == "debris":
                    near = [tissue[j] for j in neighbours(i) if j is not None]
                    where = _with_enclosed_loss(where, tissue[i], near)
                lab[where & (lab == 0)] = KINDS.index(k) + 1
        if lab.any():
            sec.mask = _resize(lab, full, nearest=True)
        out.append(sec)
        yield Progress(2 * n + i + 1, 3 * n, f"judging section {i + 1} of {n}", "qc")
    for g in meta.gaps:
        out.append(SectionQC(z=int(g), flags=["missing"], scores={"missing": 1.0}))
    out.sort(key=lambda x: x.z)
    return QCReport(sections=out, shape=full, aligned="alignment" in (meta.extra or {}))


#: Share of its outline a patch of lost tissue must share with a debris mask to join it.
ENCLOSED_SHARE = 0.5


def _with_enclosed_loss(mask: np.ndarray, tissue_here: np.ndarray, tissue_near: list) -> np.ndarray:
    """A debris mask with the tissue its section lost inside it: a blot dark or empty enough
    to be no tissue is compared with its neighbours only along its rim, where it meets the
    tissue, so its mask was a ring (a black disc on EM: 36 % of it, and its repair left a black
    core). A patch that is tissue in a neighbour but not here joins the mask when at least
    :data:`ENCLOSED_SHARE` of its outline lies on the mask (a tissue edge that moved between
    sections lies along other tissue, not along a mask)."""
    if not mask.any() or not tissue_near:
        return mask
    lost = np.logical_or.reduce(tissue_near) & ~tissue_here & ~mask
    labels, n = ndi.label(lost)
    if n == 0:
        return mask
    grown = ndi.grey_dilation(labels, size=3)
    outline = (grown > 0) & (labels == 0)  # the pixels just outside each patch, by its label
    owner = grown[outline]
    total = np.bincount(owner, minlength=n + 1)
    shared = np.bincount(owner[mask[outline]], minlength=n + 1)
    # label 0 owns no outline pixel (0 of max(0, 1)), so it never joins
    join = np.flatnonzero(shared >= ENCLOSED_SHARE * np.maximum(total, 1))
    return mask | np.isin(labels, join) if join.size else mask


def section_qc(volume, *, settings: QCSettings | None = None) -> QCReport:
    """:func:`iter_section_qc` run to the end."""
    from ..progress import drain

    return drain(iter_section_qc(volume, settings=settings))


__all__ = [
    "KINDS",
    "LOCAL_KINDS",
    "QCReport",
    "QCSettings",
    "SectionQC",
    "iter_section_qc",
    "section_qc",
]
