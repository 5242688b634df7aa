"""Align a stack of sections: reference strategies, bad-section guards, QC, lazy warping."""

from __future__ import annotations

import os
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import HistovolWarning, InputError
from ..io.volume import Volume
from ..progress import Progress, ProgressGenerator, drain
from .channel import CHANNELS, auto_channel, prepare, registration_scale, tissue_fraction
from .estimate import PairResult, elastic_field, overlap_ncc, register_pair, warp_image
from .neighbours import iter_register_neighbours, pair_constraints
from .quality import assess_pair, flag_pairs
from .quality import confidence as pair_confidence
from .solve import smooth_trajectory, solve_transforms
from .store import SectionStore
from .transforms import (
    FieldFile,
    SectionTransform,
    field_values,
    rescale,
    save_transforms,
    transform_size,
)
from .warp import warp_volume

METHODS = ("translation", "rigid", "affine", "elastic")
REFERENCES = ("global", "previous", "middle", "first")
DEFAULT_REFERENCE = "global"
DEFAULT_NEIGHBOURS = 2
MAX_NEIGHBOURS = 3
ENGINES = ("histovol", "stackreg")
BLANK_TISSUE_FRACTION = 0.01


@dataclass
class AlignResult:
    """Aligned volume (lazy), one transform per section, and the QC report."""

    volume: Volume
    transforms: list[SectionTransform]
    qc: dict[str, Any]
    files: list[str] = field(default_factory=list)
    z_numbers: list[int] = field(default_factory=list)
    offsets: list[tuple[int, int]] = field(default_factory=list)
    source_shapes: list[tuple[int, int]] = field(default_factory=list)

    @property
    def flagged_z(self) -> list[int]:
        """z numbers of the sections QC flagged (blank, failed, low similarity)."""
        return [s["z"] for s in self.qc["sections"] if s["flags"]]

    def save_transforms(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the transforms file ``T.json`` (elastic fields beside it in ``T.fields/``)."""
        canvas = tuple(self.volume.shape[1:3])
        return save_transforms(
            path,
            self.transforms,
            files=self.files,
            z_numbers=self.z_numbers,
            offsets=self.offsets,
            source_shapes=self.source_shapes,
            canvas=canvas,
            extra={
                "method": self.qc["method"],
                "reference": self.qc["reference"],
                "engine": self.qc["engine"],
                "registration_scale": self.qc["registration_scale"],
            },
            overwrite=overwrite,
        )

    def save_qc(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the QC report (``QC.json``)."""
        from ..io.atomic import write_json

        return write_json(path, self.qc, overwrite=overwrite)


def align(volume: Volume, **kwargs: Any) -> AlignResult:
    """Align a volume's sections (drains :func:`iter_align`)."""
    return drain(iter_align(volume, **kwargs))


def _check_options(
    method: str,
    reference: str,
    engine: str,
    channel: str,
    reg_size: int,
    neighbours: int = DEFAULT_NEIGHBOURS,
    smooth: float = 0.0,
) -> None:
    if method not in METHODS:
        raise InputError(f"Unknown alignment method '{method}'; use one of {', '.join(METHODS)}.")
    if reference not in REFERENCES:
        raise InputError(f"Unknown reference '{reference}'; use one of {', '.join(REFERENCES)}.")
    if engine not in ENGINES:
        raise InputError(f"Unknown engine '{engine}'; use one of {', '.join(ENGINES)}.")
    if engine == "stackreg" and method == "elastic":
        raise InputError(
            "The stackreg engine has no elastic method; use the histovol engine.", option="engine"
        )
    if channel not in CHANNELS:
        raise InputError(
            f"Unknown registration channel '{channel}'; use one of {', '.join(CHANNELS)}."
        )
    if reg_size < 32:
        raise InputError(f"The registration size must be at least 32 pixels, not {reg_size}.")
    if not 1 <= int(neighbours) <= MAX_NEIGHBOURS:
        raise InputError(
            f"The number of neighbours must be 1 to {MAX_NEIGHBOURS}, not {neighbours}.",
            option="neighbours",
        )
    if not np.isfinite(smooth) or smooth < 0:
        raise InputError(
            f"The smoothing scale must be 0 (off) or a positive number of sections, not {smooth}.",
            option="smooth",
        )


def iter_align(
    volume: Volume,
    *,
    method: str = "rigid",
    reference: str = DEFAULT_REFERENCE,
    engine: str = "histovol",
    reg_size: int = 512,
    channel: str = "auto",
    coarse: bool = True,
    detrend: bool = False,
    neighbours: int = DEFAULT_NEIGHBOURS,
    smooth: float = 0.0,
    workers: int = 2,
    scratch: str | os.PathLike | None = None,
) -> ProgressGenerator[AlignResult]:
    """Estimate one transform per section and return the lazily warped volume with QC.

    Parameters
    ----------
    volume
        (Z, Y, X[, C]) sections on a common canvas (as read from a folder).
    method
        ``translation``, ``rigid`` (default), ``affine`` or ``elastic`` (affine plus a smooth
        displacement field).
    reference
        ``global`` (default): every section registered to its ``neighbours`` nearest good
        sections on each side and all transforms solved at once (robust least squares), so
        pair errors do not add up along the stack; ``previous``: each section to its already
        aligned neighbour, outward from the middle section (a chain: drift accumulates over
        half the stack); ``middle`` (the seed's choice) or ``first``: every section directly
        to that section.
    engine
        ``histovol`` (coarse rotation search + ECC, any rotation) or ``stackreg`` (pystackreg /
        TurboReg, as in the seed pipeline).
    reg_size
        Registration runs on copies whose larger side is at most this many pixels; the
        transforms are scaled to full resolution.
    channel
        Registration channel: ``auto`` (optical density for brightfield RGB, inverted gray for
        brightfield gray, intensity for dark backgrounds), ``od``, ``intensity``, ``inverted``.
    coarse
        Try an exhaustive rotation search besides the neighbour's transform (large rotations).
    detrend
        With ``previous``: divide out the linear z-trend of the chained rotations and shifts
        (accumulated registration error on stacks whose neighbours differ a lot, such as
        serial EM). Off by default: it also removes a real steady turn of the specimen.
    neighbours
        With ``global``: pairs per section on each side (1 to 3).
    smooth
        With ``global``: trajectory smoothing scale in sections (0: off). Only the part of the
        transforms that changes faster than this along z is corrected; the slow part is taken
        for the tissue's shape (an oblique or curved specimen) and kept.
    workers
        Threads reading and preparing sections (and registering pairs with ``global``).
    scratch
        Folder for the per-section registration images (a temporary folder by default): they
        are kept on disk, a few in memory, so memory does not grow with the number of sections.
        Elastic fields are kept on disk beside it (:class:`.transforms.FieldFile`) for as long
        as the returned transforms are in use.
    """
    _check_options(method, reference, engine, channel, reg_size, neighbours, smooth)
    store = SectionStore(volume.shape[0], scratch)
    fields_home = None
    if method == "elastic":
        parent = Path(os.fspath(scratch)).parent if scratch is not None else None
        if parent is not None:
            parent.mkdir(parents=True, exist_ok=True)
        fields_home = tempfile.TemporaryDirectory(prefix="histovol-fields-", dir=parent)
    try:
        return (
            yield from _iter_align(
                volume,
                store,
                method,
                reference,
                engine,
                reg_size,
                channel,
                coarse,
                detrend,
                workers,
                fields_home,
                int(neighbours),
                float(smooth),
            )
        )
    finally:
        store.close()


def _iter_align(
    volume: Volume,
    regs: SectionStore,
    method: str,
    reference: str,
    engine: str,
    reg_size: int,
    channel: str,
    coarse: bool,
    detrend: bool,
    workers: int,
    fields_home: tempfile.TemporaryDirectory | None,
    neighbours: int = DEFAULT_NEIGHBOURS,
    smooth: float = 0.0,
) -> ProgressGenerator[AlignResult]:
    n = volume.shape[0]
    meta = volume.meta.with_planes(n)
    shape = tuple(volume.shape[1:3])
    s = registration_scale(shape, reg_size)
    # registration images, read once (in parallel; reading is the slow part for big sections)
    # and kept on disk
    if channel == "auto":
        # one channel kind for the whole stack, chosen on a few sections
        probe_idx = sorted({0, n // 2, n - 1})
        kinds = [
            auto_channel(np.asarray(volume.data[i].compute(scheduler="sync"))) for i in probe_idx
        ]
        channel = max(set(kinds), key=kinds.count)

    def prep(i: int) -> np.ndarray:
        return prepare(np.asarray(volume.data[i].compute(scheduler="sync")), s, channel)

    tissue: list[float] = [0.0] * n
    reg_shape: tuple[int, int] = (0, 0)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
        # at most 2 * workers sections in flight, so memory does not follow the stack's size
        window = max(2, 2 * workers)
        pending = {i: ex.submit(prep, i) for i in range(min(n, window))}
        for i in range(n):
            r = pending.pop(i).result()
            if i + window < n:
                pending[i + window] = ex.submit(prep, i + window)
            regs[i] = r
            tissue[i] = tissue_fraction(r)
            reg_shape = r.shape
            yield Progress(i + 1, n, f"section {meta.z_numbers[i]}", stage="prepare")
    blank = [t < BLANK_TISSUE_FRACTION for t in tissue]
    for i in range(n):
        if blank[i]:
            warnings.warn(
                f"Section z={meta.z_numbers[i]} ({_name(meta, i)}) is blank or nearly empty; "
                "it keeps its neighbour's transform.",
                HistovolWarning,
                stacklevel=2,
            )
    if n == 1:
        warnings.warn(
            "A single section: nothing to align; it is returned unchanged.",
            HistovolWarning,
            stacklevel=2,
        )
    if all(blank):
        raise InputError("Every section looks blank; there is nothing to register.")

    ref = {"first": 0}.get(reference, n // 2)
    ref = _nearest_good(ref, blank)
    mats: list[np.ndarray] = [np.eye(3) for _ in range(n)]
    fields: list[FieldFile | None] = [None] * n

    def keep_field(i: int, fld: np.ndarray | None) -> FieldFile | None:
        if fld is None:
            return None
        path = Path(fields_home.name) / f"{i:06d}.npy"
        np.save(path, fld.astype(np.float32), allow_pickle=False)
        return FieldFile(path, keep_alive=fields_home)

    flags: list[list[str]] = [[] for _ in range(n)]
    scores: list[float | None] = [None] * n
    for i in range(n):
        if blank[i]:
            flags[i].append("blank")

    def aligned_small(i: int) -> np.ndarray:
        return warp_image(regs[i], mats[i], regs[i].shape, field_values(fields[i]))

    def register(i: int, fixed: np.ndarray, init: np.ndarray) -> None:
        res: PairResult = register_pair(
            fixed, regs[i], method=method, init=init, coarse=coarse, engine=engine
        )
        init_score = overlap_ncc(fixed, regs[i], init)
        if not res.ok or res.ncc < init_score - 0.02:
            flags[i].append("failed")
            warnings.warn(
                f"Section z={meta.z_numbers[i]} ({_name(meta, i)}) could not be registered "
                f"(NCC {res.ncc:.2f}); it keeps its neighbour's transform.",
                HistovolWarning,
                stacklevel=3,
            )
            mats[i], fields[i], scores[i] = init, None, init_score
        else:
            mats[i], fields[i], scores[i] = res.matrix, keep_field(i, res.field), res.ncc
            if _dissimilar(
                res.ncc,
                [scores[k] for k in range(n) if scores[k] is not None and k != i and not flags[k]],
            ):
                flags[i].append("low_similarity")
                warnings.warn(
                    f"Section z={meta.z_numbers[i]} ({_name(meta, i)}) matches its neighbour poorly "
                    f"(NCC {res.ncc:.2f}): torn, folded or unrelated? Its neighbours do not register "
                    "to it.",
                    HistovolWarning,
                    stacklevel=3,
                )

    done = 0
    total = max(1, n - 1)
    pair_qc: list[dict] = []
    if reference == "global":
        good = [i for i in range(n) if not blank[i]]
        records = yield from iter_register_neighbours(
            regs, good, k=neighbours, method=method, engine=engine, coarse=coarse, workers=workers
        )
        cons = pair_constraints(records)
        sol = solve_transforms(n, cons, reg_shape, model=method, reference=ref)
        mats = sol.matrices
        _flag_global(meta, good, cons, flags)
        if smooth > 0:
            mats = smooth_trajectory(
                mats, reg_shape, smooth, model=method, keep=[not f for f in flags]
            )
        if method == "elastic":
            for i in good:
                if flags[i]:
                    continue
                fld = _field_to_neighbours(regs, mats, i, good, flags)
                fields[i] = keep_field(i, fld)
        for r, c, res, w in zip(records, cons, sol.residual_px, sol.weights, strict=True):
            pair_qc.append(
                {
                    "z_a": meta.z_numbers[r.i],
                    "z_b": meta.z_numbers[r.j],
                    "distance": r.distance,
                    "ncc": float(r.ncc),
                    "ok": bool(r.ok),
                    "confidence": float(c.weight),
                    "weight": float(w),
                    "residual_px": float(res),
                }
            )
        total = done = 1
    elif reference == "previous":
        for step in (1, -1):
            last_good, prev_good = ref, None
            i = ref + step
            while 0 <= i < n:
                if blank[i]:
                    mats[i] = mats[last_good].copy()
                else:
                    # the guard against drift: register to the mean of the last two good aligned
                    # sections, so one section's own content pulls the chain less
                    fixed = aligned_small(last_good)
                    if prev_good is not None:
                        fixed = 0.5 * (fixed + aligned_small(prev_good))
                    register(i, fixed, mats[last_good])
                    if not flags[i]:
                        prev_good, last_good = last_good, i
                done += 1
                yield Progress(done, total, f"section {meta.z_numbers[i]}", stage="register")
                i += step
    else:
        fixed = regs[ref]
        for i in range(n):
            if i == ref:
                continue
            if not blank[i]:
                register(i, fixed, np.eye(3))
            done += 1
            yield Progress(done, total, f"section {meta.z_numbers[i]}", stage="register")

    if reference == "previous" and detrend and n >= 6:
        mats = remove_drift(mats, reg_shape)
    transforms = [
        SectionTransform(rescale(mats[i], s), None if fields[i] is None else fields[i] / s, s)
        for i in range(n)
    ]
    qc = _qc_report(
        meta,
        regs,
        mats,
        fields,
        transforms,
        flags,
        shape,
        s,
        ref,
        method=method,
        reference=reference,
        engine=engine,
    )
    if reference == "global":
        qc["neighbours"] = neighbours
        qc["smooth_sections"] = smooth
        qc["neighbour_pairs"] = pair_qc
    offsets = [tuple(o) for o in meta.extra.get("canvas_offsets", [[0, 0]] * n)]
    source_shapes = [tuple(o) for o in meta.extra.get("source_shapes", [list(shape)] * n)]
    data = warp_volume(volume.data, transforms, shape)
    extra = {k: v for k, v in meta.extra.items() if k not in ("canvas_offsets", "source_shapes")}
    extra["alignment"] = {
        "method": method,
        "reference": reference,
        "engine": engine,
        "reference_z": meta.z_numbers[ref],
        "flagged_z": [s_["z"] for s_ in qc["sections"] if s_["flags"]],
    }
    out = Volume(data, replace(meta, extra=extra))
    yield Progress(total, total, "done", stage="register")
    return AlignResult(
        out,
        transforms,
        qc,
        files=list(meta.files),
        z_numbers=list(meta.z_numbers),
        offsets=offsets,
        source_shapes=source_shapes,
    )


def _flag_global(meta, good: list[int], cons, flags: list[list[str]]) -> None:
    """Flag sections the global solve could not use: no usable pair at all (failed), or only
    pairs far below the typical similarity (low_similarity)."""
    usable: dict[int, float] = {}
    for c in cons:
        for i in (c.i, c.j):
            usable[i] = max(usable.get(i, 0.0), c.weight)
    if len(good) < 2:
        return
    for i in good:
        w = usable.get(i, 0.0)
        if w <= 0:
            flags[i].append("failed")
        elif w <= 0.02 + 1e-9:
            flags[i].append("low_similarity")
        else:
            continue
        warnings.warn(
            f"Section z={meta.z_numbers[i]} ({_name(meta, i)}) matches none of its neighbours "
            "well: torn, folded or unrelated? It does not pull its neighbours.",
            HistovolWarning,
            stacklevel=4,
        )


def _field_to_neighbours(regs, mats, i: int, good: list[int], flags) -> np.ndarray | None:
    """Elastic field of section ``i`` towards the mean of its aligned good neighbours on both
    sides (a symmetric target: no chain, so the fields do not add up along the stack)."""
    a = good.index(i)
    near = [good[b] for b in (a - 1, a + 1) if 0 <= b < len(good) and not flags[good[b]]]
    if not near:
        return None
    shape = regs[i].shape
    target = np.mean([warp_image(regs[k], mats[k], shape) for k in near], axis=0)
    target = target.astype(np.float32)
    u = elastic_field(target, regs[i], mats[i])
    if overlap_ncc(target, regs[i], mats[i], u) > overlap_ncc(target, regs[i], mats[i]):
        return u
    return None


def remove_drift(mats: list[np.ndarray], shape: tuple[int, int]) -> list[np.ndarray]:
    """Divide out the linear z-trend of the rigid part (rotation, shift of the centre) of
    chained transforms: a random walk of registration errors is mostly such a trend, while
    per-section jitter is not (only ~2/n of it is removed)."""
    n = len(mats)
    h, w = shape
    c = np.array([(w - 1) / 2, (h - 1) / 2, 1.0])
    z = np.arange(n, dtype=float)
    ang = np.unwrap([np.arctan2(m[1, 0], m[0, 0]) for m in mats])
    shift = np.array([(m @ c)[:2] - c[:2] for m in mats])
    fit = lambda v: np.polyval(np.polyfit(z, v, 1), z)  # noqa: E731
    ang_s = fit(ang)
    shift_s = np.stack([fit(shift[:, 0]), fit(shift[:, 1])], axis=1)
    to_c = np.array([[1, 0, c[0]], [0, 1, c[1]], [0, 0, 1.0]])
    out = []
    for i in range(n):
        ca, sa = np.cos(ang_s[i]), np.sin(ang_s[i])
        t = to_c @ np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1.0]]) @ np.linalg.inv(to_c)
        t[:2, 2] += shift_s[i]
        out.append(mats[i] @ np.linalg.inv(t))
    return out


def _dissimilar(score: float, accepted: list[float]) -> bool:
    """A registration so poor next to the others that the section should not be a reference."""
    if score < 0.02:
        return True
    return len(accepted) >= 2 and score < 0.3 * float(np.median(accepted))


def _name(meta, i: int) -> str:
    return meta.files[i] if meta.files and meta.files[i] else f"plane {i}"


def _nearest_good(i: int, blank: list[bool]) -> int:
    order = sorted(range(len(blank)), key=lambda k: (abs(k - i), k))
    return next(k for k in order if not blank[k])


def _qc_report(
    meta, regs, mats, fields, transforms, flags, shape, s, ref, *, method, reference, engine
) -> dict:
    n = len(regs)
    pairs = []
    blank = ["blank" in f for f in flags]
    prev_aligned = None
    # judged on where each pair's match peaks, not on how high it is (stains differ): .quality
    measures: list[dict | None] = []
    for i in range(n):
        aligned = warp_image(regs[i], mats[i], regs[i].shape, field_values(fields[i]))
        if i > 0:
            skip = blank[i - 1] or blank[i]
            before = None if skip else overlap_ncc(regs[i - 1], regs[i], np.eye(3))
            after = None if skip else overlap_ncc(prev_aligned, aligned, np.eye(3))
            pairs.append(
                {
                    "z_a": meta.z_numbers[i - 1],
                    "z_b": meta.z_numbers[i],
                    "ncc_before": before,
                    "ncc_after": after,
                    "flags": [],
                }
            )
            measures.append(None if skip else assess_pair(prev_aligned, aligned, scale=s))
        prev_aligned = aligned
    for p, m, f in zip(pairs, measures, flag_pairs(measures, scale=s), strict=True):
        if m is not None:
            p.update({k: v for k, v in m.items() if k != "residual_reg_px"})
            p["confidence"] = pair_confidence(m)
        p["flags"] += f
    # a section whose pairs on both sides are flagged is itself off (an end section: its one
    # pair): misaligned when either pair says so, else low_similarity
    for i in range(n):
        sides = [pairs[k]["flags"] for k in (i - 1, i) if 0 <= k < len(pairs)]
        if flags[i] or not sides or not all(sides):
            continue
        flags[i].append("misaligned" if any("misaligned" in x for x in sides) else "low_similarity")
    for k, p in enumerate(pairs):
        for i in (k, k + 1):
            for f in flags[i]:
                if f in ("blank", "failed") and f not in p["flags"]:
                    p["flags"].append(f)
    sections = []
    for i in range(n):
        size = transform_size(transforms[i].matrix, shape)
        sections.append(
            {
                "z": meta.z_numbers[i],
                "file": _name(meta, i),
                "flags": flags[i],
                **size,
                "elastic_max_px": float(np.abs(field_values(transforms[i].field)).max())
                if transforms[i].field is not None
                else 0.0,
            }
        )
    return {
        "method": method,
        "reference": reference,
        "engine": engine,
        "registration_scale": s,
        "reference_z": meta.z_numbers[ref],
        "mean_ncc_before": _mean([p["ncc_before"] for p in pairs]),
        "mean_ncc_after": _mean([p["ncc_after"] for p in pairs]),
        "steady_turn": steady_turn(sections),
        "pairs": pairs,
        "sections": sections,
    }


#: a stack's sections turn steadily when a line along z explains at least this share of the
#: variance of their rotations ...
STEADY_SHARE = 0.8
#: ... and turns them by at least this many degrees from the first to the last section
STEADY_DEGREES = 3.0


def steady_turn(sections: list[dict]) -> dict | None:
    """How steadily the alignment turns the sections along z: a line fitted to each unflagged
    section's rotation against its z number; None for fewer than 6 such sections.

    On serial EM, registration errors of a few tenths of a degree a pair add up this way
    (the shipped ISBI stack comes out turned by 9 degrees from end to end with ``rigid``),
    while sections laid on slides by hand turn at random.

    Returns
    -------
    dict or None
        ``degrees_per_section``, ``end_to_end_degrees`` (the line's turn from the first to the
        last section), ``share`` (of the rotations' variance the line explains) and ``steady``
        (both above :data:`STEADY_SHARE` and :data:`STEADY_DEGREES`).
    """
    rows = [(r["z"], r["rotation_deg"]) for r in sections if not r["flags"]]
    if len(rows) < 6:
        return None
    z, rot = np.array(rows, float).T
    slope, icept = np.polyfit(z, rot, 1)
    resid = rot - (slope * z + icept)
    var = float(np.var(rot))
    share = 1.0 - float(np.var(resid)) / var if var > 0 else 0.0
    end = float(slope * (z.max() - z.min()))
    return {
        "degrees_per_section": round(float(slope), 4),
        "end_to_end_degrees": round(end, 2),
        "share": round(share, 3),
        "steady": bool(share >= STEADY_SHARE and abs(end) >= STEADY_DEGREES),
    }


def turn_note(qc: dict) -> str | None:
    """One sentence for the user when the alignment turned the stack steadily along z and no
    trajectory smoothing was asked for (None otherwise)."""
    turn = qc.get("steady_turn")
    if not turn or not turn["steady"] or qc.get("reference") != "global":
        return None
    if qc.get("smooth_sections"):  # the user asked for the slow part to be kept out
        return None
    return (
        f"the alignment turns the sections steadily, {abs(turn['end_to_end_degrees']):.1f} "
        f"degrees from the first to the last ({turn['degrees_per_section']:+.2f} a section), "
        "as small registration errors add up on serial sections: if they were roughly "
        "aligned to begin with, align again with --smooth 5 ('keep shape over' 5 sections "
        "in the Align tab) to leave that slow turn out"
    )


def _mean(values: list[float | None]) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None
