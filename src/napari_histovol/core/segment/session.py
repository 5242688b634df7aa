"""An interactive segmentation: prompts in, objects out, refined after every click.

:class:`SegmentSession` holds the volume's lazy features, the clicks and scribbles, and each
object's per-section masks (cropped to the object, so a large volume is never held whole).
Every click retrains that object's classifier; :meth:`SegmentSession.segment_section` gives the
clicked section at once and :meth:`SegmentSession.iter_segment_object` propagates the object
through the volume.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..progress import Progress, ProgressGenerator, drain
from .classifier import PixelClassifier, disk_offsets, implicit_negatives
from .features import EDGE_FEATURE, FeatureStack, click_region
from .masks import SectionMask, crop_mask, label_plane, lazy_labels, voxel_counts
from .prompts import Prompt, Scribbles, check_prompts, object_ids, scribbled_objects
from .propagate import SNAP, carry_over, core_of, segment_section
from .watershed3d import ImageTerms, image_terms, is_volumetric, segment_object_3d

#: pixels around the clicks (in the section plane) that an object's features are computed on
DEFAULT_MARGIN = 128
_MAX_SCRIBBLE_SAMPLES = 3000
_POOL_PER_SECTION = 3000
#: share of a clicked blob's radius taken as object examples around the click
RADIUS_SHARE = 0.5
#: how many times a 3D object's window may grow in z (by 3, 6, 12, ... blob radii) while the
#: object reaches its top or bottom face
Z_GROWTHS = 5
#: in 3D, an object's window reaches this many radii of its first clicked blob around its
#: clicks (the object and a band of background for the classifier and the watershed; the
#: window in z reaches as far). Windows of 3 radii and of the whole 128 px margin give the same
#: objects to 3 decimals of Dice on cells3d, stardist's and the benchmark's synthetic nuclei;
#: on cells3d a click takes 1.1 s against 3.4 s on average. An object longer than the window
#: is cut by it, as it is by the look-alike seeds along it (a bright tube is cut at 1.5 blob
#: radii from the click with either window)
WINDOW_RADII = 3.0
MIN_WINDOW_MARGIN = 24
#: trees of the pixel classifier in 3D, where the watershed reads the probability only at 0.1
#: (background) and 0.5 (the first seed's depth): 16 give the same objects as 32 to 3 decimals
#: of Dice on cells3d, stardist's and the benchmark's synthetic nuclei, in half the time. Serial
#: sections keep 32 (their propagation follows the probability: EM 0.56 against 0.66 with 16)
TREES_IN_3D = 16
#: object probability above which a pixel may belong to the object: low, so that an object
#: reaches the foot of its edge (where the stain falls to the background), not its middle
DEFAULT_THRESHOLD = 0.3


def _look_alike_test(pos: np.ndarray, background: np.ndarray):
    """A test of a negative click's features: True when they are nearer (standardised feature
    space, median over the click's pixels) the object's examples than the background's (the
    implicit negatives). Such a click marks a neighbour of the same kind (a touching nucleus,
    the far side of a bridge): trained on as background it would teach the classifier that the
    object itself is background, so it acts as a watershed barrier only."""
    if not len(pos) or not len(background):
        return None
    sd = np.concatenate([pos, background]).std(axis=0) + 1e-6
    c_obj, c_bg = np.median(pos, axis=0), np.median(background, axis=0)

    def test(x: np.ndarray) -> bool:
        d_obj = np.sqrt((((x - c_obj) / sd) ** 2).mean(axis=1))
        d_bg = np.sqrt((((x - c_bg) / sd) ** 2).mean(axis=1))
        return bool(np.median(d_obj) < np.median(d_bg))

    return test


@dataclass
class SegmentSession:
    """Prompt-based 3D segmentation of one volume.

    Parameters
    ----------
    data
        (Z, Y, X) or (Z, Y, X, C) volume, numpy or dask (read section by section).
    rgb
        Whether the last axis holds colour channels (default: a 4D volume is RGB).
    margin
        Pixels around an object's clicks, in the section plane, that its features, classifier
        and propagation use (in 3D the most: the window reaches :data:`WINDOW_RADII` radii of
        the first clicked blob).
    threshold
        Object probability above which a pixel may belong to an object.
    max_sections
        How far (sections) an object may be propagated from its clicks; None: no limit.
    sampling
        Voxel size (z, y, x) in any one unit, or None when unknown (taken for serial
        sections). A volume whose sections are at most :data:`~.watershed3d.ANISOTROPY_LIMIT`
        pixels apart is segmented in 3D (:func:`~.watershed3d.segment_object_3d`); sections
        farther apart are segmented one by one and the object propagated from section to section.
    """

    data: Any
    rgb: bool | None = None
    margin: int = DEFAULT_MARGIN
    threshold: float = DEFAULT_THRESHOLD
    max_sections: int | None = None
    classifier_kind: str = "trees"
    snap: int = SNAP
    prompts: list[Prompt] = field(default_factory=list)
    scribbles: Scribbles | None = None
    sampling: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        self.features = FeatureStack(self.data, rgb=self.rgb)
        self.shape = self.features.shape
        self.masks: dict[int, dict[int, SectionMask]] = {}
        self._clf: dict[int, tuple[tuple, PixelClassifier]] = {}
        self._prob: dict[tuple, np.ndarray] = {}
        self._blob: dict[tuple, tuple[float, bool]] = {}
        self._solid: dict[int, tuple[tuple, dict[int, SectionMask]]] = {}
        self._terms: dict[int, tuple[tuple, ImageTerms]] = {}
        check_prompts(self.prompts, self.shape)

    @property
    def volumetric(self) -> bool:
        """Whether objects are segmented in 3D (sections about as far apart as the pixels)."""
        return is_volumetric(self.sampling)

    # ------------------------------------------------------------------ prompts

    @property
    def objects(self) -> list[int]:
        """Ids of the objects that have a positive click or a scribble."""
        return object_ids(self.prompts, self.scribbles)

    def add_prompt(self, prompt: Prompt) -> None:
        """Add one click (checked against the volume's shape)."""
        check_prompts([prompt], self.shape, source="the click")
        self.prompts.append(prompt)

    def undo(self) -> Prompt | None:
        """Remove the last click and return it (None when there is none); the object it belonged
        to must be segmented again."""
        if not self.prompts:
            return None
        p = self.prompts.pop()
        self.masks.pop(p.object, None)
        return p

    def set_scribbles(self, scribbles: Scribbles | None) -> None:
        """Replace the scribbles (labels: object ids; a label that no click names is background
        for every object)."""
        self.scribbles = scribbles
        self._clf.clear()

    # ---------------------------------------------------------------- geometry

    def _clicks(self, obj: int, positive: bool) -> list[Prompt]:
        return [p for p in self.prompts if p.object == obj and p.positive == positive]

    def _scribble_points(self, obj: int, positive: bool) -> np.ndarray:
        if self.scribbles is None:
            return np.zeros((0, 3), int)
        if positive:
            pts = self.scribbles.points.get(obj)
            return pts if pts is not None else np.zeros((0, 3), int)
        objects = set(scribbled_objects(self.prompts, self.scribbles))
        others = [v for k, v in self.scribbles.points.items() if k != obj and k not in objects]
        return np.concatenate(others) if others else np.zeros((0, 3), int)

    def window(self, obj: int) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1): the section-plane window of object ``obj``."""
        pts = [(p.y, p.x) for p in self._clicks(obj, True)]
        sp = self._scribble_points(obj, True)
        if len(sp):
            pts += [tuple(sp[:, 1:].min(axis=0)), tuple(sp[:, 1:].max(axis=0))]
        _, ny, nx = self.shape
        if not pts:
            return 0, ny, 0, nx
        a = np.asarray(pts)
        m = self._object_margin(obj)
        return (
            max(0, int(a[:, 0].min()) - m),
            min(ny, int(a[:, 0].max()) + m + 1),
            max(0, int(a[:, 1].min()) - m),
            min(nx, int(a[:, 1].max()) + m + 1),
        )

    def _object_margin(self, obj: int) -> int:
        """The in-plane margin of object ``obj``'s window: ``margin`` for serial sections; in
        3D, :data:`WINDOW_RADII` radii of the first clicked blob (at least
        :data:`MIN_WINDOW_MARGIN`, at most ``margin``)."""
        clicked = self._clicks(obj, True)
        if not self.volumetric or not clicked:
            return int(self.margin)
        r = self.blob_radius(clicked[0])
        return int(np.clip(np.ceil(WINDOW_RADII * r), MIN_WINDOW_MARGIN, self.margin))

    def seed_sections(self, obj: int) -> list[int]:
        """Sections holding a positive click or scribble of ``obj``."""
        zs = {p.z for p in self._clicks(obj, True)}
        sp = self._scribble_points(obj, True)
        zs |= set(np.unique(sp[:, 0]).tolist()) if len(sp) else set()
        return sorted(zs)

    # -------------------------------------------------------------- classifier

    def _samples(self, z: int, win, yx: np.ndarray, radius: int) -> np.ndarray:
        y0, y1, x0, x1 = win
        f = self.features.features(z, win)
        if radius:
            off = disk_offsets(radius)
            yx = (yx[:, None, :] + off[None]).reshape(-1, 2)
        yy = np.clip(yx[:, 0] - y0, 0, y1 - y0 - 1)
        xx = np.clip(yx[:, 1] - x0, 0, x1 - x0 - 1)
        return f[yy, xx]

    def _gather(self, obj: int, win, positive: bool, look_alike=None) -> np.ndarray:
        rows = []
        for p in self._clicks(obj, positive):
            r = self.click_radius(p) if positive else 2
            x = self._samples(p.z, win, np.array([[p.y, p.x]]), r)
            if look_alike is not None and look_alike(x):
                continue  # a separation, not a stain example: its watershed barrier is enough
            rows.append(x)
        pts = self._scribble_points(obj, positive)
        if len(pts):
            rng = np.random.default_rng(obj)
            if len(pts) > _MAX_SCRIBBLE_SAMPLES:
                pts = pts[rng.choice(len(pts), _MAX_SCRIBBLE_SAMPLES, replace=False)]
            for z in np.unique(pts[:, 0]):
                rows.append(self._samples(int(z), win, pts[pts[:, 0] == z][:, 1:], 0))
        n_feat = self.features.features(self.seed_sections(obj)[0], win).shape[-1]
        return np.concatenate(rows) if rows else np.zeros((0, n_feat), np.float32)

    def click_radius(self, p: Prompt) -> int:
        """Radius of the disk around a positive click taken as object examples: half the
        radius of the blob or cell it falls in (2 to 12 pixels). A corrective click is
        measured as its object is (from the edges around it only in a dark object: at the rim
        of a bright nucleus the dark gap beyond may answer)."""
        first = self._clicks(p.object, True)[:1]
        if not first or first[0] == p:
            radius = self.blob_radius(p)
        else:
            radius = self._region(p, self.in_dark_region(first[0]))[0]
        return int(np.clip(round(RADIUS_SHARE * radius), 2, 12))

    def blob_radius(self, p: Prompt) -> float:
        """Radius (pixels) of the blob or cell a click falls in (in 3D a dark region counts:
        :func:`.features.click_region`)."""
        return self._region(p, self.volumetric)[0]

    def in_dark_region(self, p: Prompt) -> bool:
        """Whether a click falls in a dark region (a cell inside bright membranes, a lumen, a
        dark nucleus) rather than a bright blob (:func:`.features.click_region`); only looked
        for in 3D."""
        return self._region(p, self.volumetric)[1]

    def _region(self, p: Prompt, from_edges: bool) -> tuple[float, bool]:
        key = (p.z, p.y, p.x, from_edges)
        hit = self._blob.get(key)
        if hit is None:
            f = self.features
            hit = click_region(
                f.plane(p.z),
                p.y,
                p.x,
                rgb=f.rgb,
                low=f.low,
                high=f.high,
                from_edges=from_edges,
            )
            self._blob[key] = hit
        return hit

    def classifier(self, obj: int) -> PixelClassifier:
        """Object ``obj``'s pixel classifier, trained from its clicks and the scribbles (cached
        until its prompts change)."""
        win = self.window(obj)
        key = (
            win,
            tuple(p for p in self.prompts if p.object == obj),
            id(self.scribbles),
        )
        hit = self._clf.get(obj)
        if hit is not None and hit[0] == key:
            return hit[1]
        pos = self._gather(obj, win, True)
        rng = np.random.default_rng(1000 + obj)
        pool = []
        h, w = win[1] - win[0], win[3] - win[2]
        for z in self.seed_sections(obj):
            f = self.features.features(z, win)
            n = min(_POOL_PER_SECTION, h * w)
            idx = rng.choice(h * w, n, replace=False)
            pool.append(f.reshape(-1, f.shape[-1])[idx])
        pool = np.concatenate(pool) if pool else pos[:0]
        implicit = implicit_negatives(pos, pool) if len(pool) else pos[:0]
        neg = self._gather(obj, win, False, look_alike=_look_alike_test(pos, implicit))
        negs = np.concatenate([neg, implicit])
        weights = np.concatenate([np.full(len(neg), 4.0), np.ones(len(implicit))])
        trees = TREES_IN_3D if self.volumetric else PixelClassifier.n_trees
        clf = PixelClassifier(n_trees=trees, kind=self.classifier_kind)
        clf.fit(pos, negs, neg_weight=weights)
        self._clf[obj] = (key, clf)
        self._prob = {k: v for k, v in self._prob.items() if k[0] != obj}
        return clf

    def probability(self, obj: int, z: int) -> np.ndarray:
        """Object ``obj``'s probability in section ``z``, on its window."""
        return self.probabilities(obj, [z])[z]

    def probabilities(self, obj: int, zs: Iterable[int]) -> dict[int, np.ndarray]:
        """Object ``obj``'s probability in each section of ``zs`` (on its window), the
        sections not yet known predicted in one call (one pass of the trees, not one per
        section)."""
        win = self.window(obj)
        clf = self.classifier(obj)
        zs = list(zs)
        todo = [z for z in zs if (obj, z, win, id(clf)) not in self._prob]
        if todo:
            feats = np.stack([self.features.features(z, win) for z in todo])
            for z, p in zip(todo, clf.predict(feats), strict=True):
                self._prob[(obj, z, win, id(clf))] = p
        return {z: self._prob[(obj, z, win, id(clf))] for z in zs}

    # ------------------------------------------------------------ segmentation

    def _marks(self, obj: int, z: int, win, positive: bool) -> np.ndarray:
        y0, y1, x0, x1 = win
        m = np.zeros((y1 - y0, x1 - x0), bool)

        def dot(p: Prompt) -> None:
            y, x = p.y - y0, p.x - x0
            if p.z == z and 0 <= y < m.shape[0] and 0 <= x < m.shape[1]:
                m[max(0, y - 1) : y + 2, max(0, x - 1) : x + 2] = True

        for p in self._clicks(obj, positive):
            dot(p)
        pts = self._scribble_points(obj, positive)
        if len(pts):
            pts = pts[pts[:, 0] == z][:, 1:] - (y0, x0)
            ok = (pts >= 0).all(axis=1) & (pts[:, 0] < m.shape[0]) & (pts[:, 1] < m.shape[1])
            m[pts[ok, 0], pts[ok, 1]] = True
        if not positive:  # clicks on other objects keep them apart too
            for p in self.prompts:
                if p.object != obj and p.positive:
                    dot(p)
        return m

    def _others(self, obj: int, z: int, win) -> np.ndarray:
        y0, y1, x0, x1 = win
        m = np.zeros((y1 - y0, x1 - x0), bool)
        for k, per_z in self.masks.items():
            if k != obj and z in per_z:
                per_z[z].paste(m, y0, x0)
        return m

    def _segment(
        self,
        obj: int,
        z: int,
        win,
        carried: np.ndarray | None,
        carried_blocked: np.ndarray | None = None,
        return_blocked: bool = False,
    ):
        from scipy import ndimage as ndi

        seeds = self._marks(obj, z, win, True)
        blockers = self._marks(obj, z, win, False)
        prob = self.probability(obj, z)
        likely = ndi.gaussian_filter(prob, 1.0) > self.threshold
        if carried is not None:
            seeds |= carried & likely
        if carried_blocked is not None:
            blockers |= carried_blocked & ~seeds
        return segment_section(
            prob,
            seeds,
            blockers=blockers,
            return_blocked=return_blocked,
            exclude=self._others(obj, z, win),
            threshold=self.threshold,
            edges=self.features.features(z, win)[..., EDGE_FEATURE] if self.snap else None,
            snap=self.snap,
        )

    def segment_section(self, obj: int, z: int) -> np.ndarray:
        """Object ``obj`` in section ``z`` (what is shown at once after a click): a (Y, X) bool
        mask of the whole section. The section's result is also stored, until the object is
        propagated.

        In a section that holds a positive click or scribble of the object, its clicks alone
        seed it. In another section (a corrective click where the object was propagated), the
        object is carried in from its stored neighbour on the side of its clicks, as
        propagation does, with the new clicks taking part.
        """
        if self.volumetric:
            self.masks[obj] = drain(self._iter_solid(obj))
            return self.object_mask(obj, z)
        win = self.window(obj)
        carried = prev = None
        seeds = self.seed_sections(obj)
        stored = self.masks.get(obj, {})
        if seeds and z not in seeds:
            side = -1 if min(seeds, key=lambda s: abs(s - z)) < z else 1
            if z + side in stored:
                y0, y1, x0, x1 = win
                prev = np.zeros((y1 - y0, x1 - x0), bool)
                stored[z + side].paste(prev, y0, x0)
                carried = core_of(prev) if prev.any() else None
        m = self._segment(obj, z, win, carried)
        if carried is not None:
            m = carry_over(prev, m)
            m = m if m is not None else np.zeros_like(prev)
        out = np.zeros(self.shape[1:], bool)
        out[win[0] : win[1], win[2] : win[3]] = m
        c = crop_mask(m, win[0], win[2])
        per_z = self.masks.setdefault(obj, {})
        per_z.pop(z, None)
        if c is not None:
            per_z[z] = c
        return out

    def iter_segment_object(self, obj: int) -> ProgressGenerator[int]:
        """Segment object ``obj`` through the volume: each section holding its clicks, then
        sections up and down from them, each seeded by its neighbour's core, until the object
        ends. Yields :class:`Progress`; returns the number of sections the object spans.

        The object's stored masks are replaced when the propagation ends, so a propagation
        that is stopped half-way leaves the previous result in place."""
        if self.volumetric:
            self.masks[obj] = yield from self._iter_solid(obj)
            return len(self.masks[obj])
        nz = self.shape[0]
        win = self.window(obj)
        y0, y1, x0, x1 = win
        seeds = self.seed_sections(obj)
        if not seeds:
            self.masks[obj] = {}
            return 0
        lo, hi = 0, nz - 1
        if self.max_sections is not None:
            lo, hi = (
                max(0, seeds[0] - self.max_sections),
                min(nz - 1, seeds[-1] + self.max_sections),
            )
        result: dict[int, np.ndarray] = {}
        done, total = 0, hi - lo + 1
        seed_set = set(seeds)
        for order in (range(seeds[0], hi + 1), range(seeds[-1], lo - 1, -1)):
            prev: np.ndarray | None = None
            blocked: np.ndarray | None = None
            for z in order:
                if prev is None and z not in seed_set:
                    if all((s < z) if order.step > 0 else (s > z) for s in seeds):
                        break
                    continue
                carried = core_of(prev) if prev is not None else None
                carried_blocked = core_of(blocked) if blocked is not None else None
                m, blocked = self._segment(
                    obj, z, win, carried, carried_blocked, return_blocked=True
                )
                if z not in seed_set and prev is not None:
                    m = carry_over(prev, m)
                prev = m if (m is not None and m.any()) else None
                blocked = blocked if blocked.any() else None
                if prev is not None:
                    result[z] = result[z] | prev if z in result else prev
                done += 1
                yield Progress(min(done, total), total, f"object {obj}: section {z}", "segment")
        per_z = {}
        for z, m in result.items():
            c = crop_mask(m, y0, x0)
            if c is not None:
                per_z[z] = c
        self.masks[obj] = per_z
        return len(per_z)

    # ---------------------------------------------------------------- in 3D

    def _points(self, obj: int, positive: bool) -> np.ndarray:
        """(N, 3) voxel positions of an object's positive (or negative, with the other
        objects' positive clicks) clicks and scribbles."""
        pts = [(p.z, p.y, p.x) for p in self._clicks(obj, positive)]
        if not positive:
            pts += [(p.z, p.y, p.x) for p in self.prompts if p.object != obj and p.positive]
        sp = self._scribble_points(obj, positive)
        if len(sp) > _MAX_SCRIBBLE_SAMPLES:
            sp = sp[np.random.default_rng(obj).choice(len(sp), _MAX_SCRIBBLE_SAMPLES, False)]
        out = np.concatenate([np.asarray(pts, int).reshape(-1, 3), np.asarray(sp, int)])
        return out.reshape(-1, 3)

    def _iter_solid(self, obj: int) -> ProgressGenerator[dict[int, SectionMask]]:
        """Object ``obj`` segmented in 3D in a window around its clicks (grown in z while the
        object reaches the window's top or bottom). Returns its per-section masks."""
        pos = self._points(obj, True)
        if not len(pos):
            return {}
        win = self.window(obj)
        y0, y1, x0, x1 = win
        key = (
            win,
            tuple(self.prompts),
            id(self.scribbles),
            tuple((k, tuple(sorted(m))) for k, m in sorted(self.masks.items()) if k != obj),
        )
        hit = self._solid.get(obj)
        if hit is not None and hit[0] == key:
            return hit[1]
        nz = self.shape[0]
        dz, dy, dx = self.sampling or (1.0, 1.0, 1.0)
        clicked = self._clicks(obj, True)
        # the object's scale is that of its first click (corrective clicks fall near its edge,
        # where the blob scale measured is anybody's)
        radius = self.blob_radius(clicked[0]) if clicked else 8.0
        reach = max(2, int(np.ceil(3.0 * radius * min(dy, dx) / dz)))
        z0, z1 = max(0, int(pos[:, 0].min()) - reach), min(nz, int(pos[:, 0].max()) + reach + 1)
        neg = self._points(obj, False)
        gray: dict[int, np.ndarray] = {}
        prob: dict[int, np.ndarray] = {}
        for attempt in range(Z_GROWTHS + 1):
            todo = [z for z in range(z0, z1) if z not in prob]
            for i, z in enumerate(self.features.iter_compute(todo, win)):
                gray[z] = self.features.normalised(z, win)
                yield Progress(i + 1, len(todo) + 1, f"object {obj}: section {z}", "segment")
            others = np.stack([self._others(obj, z, win) for z in range(z0, z1)])
            block = np.stack([gray[z] for z in range(z0, z1)])
            terms_key = (win, z0, z1, radius, (dz, dy, dx))
            if self._terms.get(obj, (None,))[0] != terms_key:  # once per window, not per click
                # the image's terms on a thread while the trees predict (both release the
                # GIL): a first click on a cells3d nucleus waited for one, then the other
                with ThreadPoolExecutor(max_workers=1) as pool:
                    pending = pool.submit(image_terms, block, (dz, dy, dx), radius)
                    prob.update(self.probabilities(obj, todo))
                    self._terms[obj] = (terms_key, pending.result())
            else:
                prob.update(self.probabilities(obj, todo))
            m = segment_object_3d(
                block,
                np.stack([prob[z] for z in range(z0, z1)]),
                positive=pos - (z0, y0, x0),
                negative=neg - (z0, y0, x0),
                others=others if others.any() else None,
                sampling=(dz, dy, dx),
                radius=radius,
                clicks=len(clicked),
                terms=self._terms[obj][1],
                polarity=-1.0 if clicked and self.in_dark_region(clicked[0]) else None,
                open_faces=(
                    z0 > 0,
                    z1 < nz,
                    y0 > 0,
                    y1 < self.shape[1],
                    x0 > 0,
                    x1 < self.shape[2],
                ),
            )
            grow_lo, grow_hi = z0 > 0 and m[0].any(), z1 < nz and m[-1].any()
            if attempt == Z_GROWTHS or not (grow_lo or grow_hi):
                break
            step = reach * 2**attempt  # a long vessel is followed in a few steps
            z0, z1 = (
                (max(0, z0 - step) if grow_lo else z0),
                (min(nz, z1 + step) if grow_hi else z1),
            )
        out = {}
        for i, z in enumerate(range(z0, z1)):
            c = crop_mask(m[i], y0, x0)
            if c is not None:
                out[z] = c
        self._solid[obj] = (key, out)
        return out

    def iter_segment(self, objects: Iterable[int] | None = None) -> ProgressGenerator[dict]:
        """Segment every object (or ``objects``) in id order; earlier objects keep their voxels.
        Returns {object: sections spanned}."""
        ids = list(self.objects if objects is None else objects)
        out = {}
        for i, k in enumerate(ids):
            gen = self.iter_segment_object(k)
            while True:
                try:
                    p = next(gen)
                except StopIteration as stop:
                    out[k] = stop.value
                    break
                yield Progress(i, len(ids), p.message, "segment")
        yield Progress(len(ids), len(ids), "done", "segment")
        return out

    # ------------------------------------------------------------------ output

    def object_mask(self, obj: int, z: int) -> np.ndarray:
        """(Y, X) bool mask of object ``obj`` in section ``z``."""
        out = np.zeros(self.shape[1:], bool)
        m = self.masks.get(obj, {}).get(z)
        if m is not None:
            m.paste(out)
        return out

    def label_plane(self, z: int, dtype: Any = np.uint32) -> np.ndarray:
        """Section ``z`` of the label volume: object k's pixels hold k (earlier ids win)."""
        return label_plane(self.masks, z, self.shape[1:3], dtype)

    def labels(self):
        """The label volume as a lazy dask array (built one section at a time)."""
        return lazy_labels(self.masks, self.shape[:3])

    def voxel_counts(self) -> dict[int, int]:
        """Voxels of every object, as written in the label volume (overlaps go to the lower id)."""
        return voxel_counts(self.masks, self.shape[1:3])
