"""Register every good section to its ``k`` nearest good neighbours on each side, with a
confidence per pair, for the global solve (:mod:`.solve`).

Confidence: the pair's NCC after registration relative to the typical NCC of pairs at the same
distance (so a stack whose neighbours all differ a lot, like serial EM, is not penalised), and
zero when the registration failed or is no better than where it started. A pair far below the
typical similarity (a torn, folded or unrelated section) gets almost no weight, so it cannot
pull its neighbours; a section of another stain, whose pairs are all somewhat lower, keeps
enough weight to be placed by them.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..progress import Progress, ProgressGenerator
from .estimate import overlap_ncc, register_pair
from .solve import PairConstraint

LOW_PAIR_RATIO = 0.3  # a pair below this fraction of the typical NCC is an outlier
OUTLIER_RATIO = 0.5  # a section below this on both sides is left out of the longer pairs
MAX_CHAIN_DEVIATION = 0.05  # a longer pair this far (fraction of the size) from its chain is wrong


@dataclass(frozen=True)
class PairRecord:
    """A registered pair, for the QC report."""

    i: int
    j: int
    distance: int
    matrix: np.ndarray
    ncc: float
    ncc_start: float
    ok: bool


def neighbour_pairs(good: list[int], k: int) -> list[tuple[int, int, int]]:
    """(i, j, d): each good section with the next ``k`` good sections (d = 1..k in that list)."""
    out = []
    for a, i in enumerate(good):
        for d in range(1, k + 1):
            if a + d < len(good):
                out.append((i, good[a + d], d))
    return out


def iter_register_neighbours(
    regs,
    good: list[int],
    *,
    k: int,
    method: str,
    engine: str,
    coarse: bool = True,
    workers: int = 2,
) -> ProgressGenerator[list[PairRecord]]:
    """Register all neighbour pairs; returns the records.

    First every good section to the next one; a section that matches neither neighbour (both
    its pairs far below the typical NCC, or failed) is an outlier: its neighbours are then
    registered to each other across it, and the longer pairs (distance 2..k) are taken in the
    list without the outliers, each started from the composition of the short ones between and
    refined from there only (no search).
    """
    records: dict[tuple[int, int], PairRecord] = {}
    done_m: dict[tuple[int, int], np.ndarray] = {}
    motion = "affine" if method == "elastic" else method
    first = neighbour_pairs(good, 1)
    estimate = len(first) * k
    count = 0

    def run(i: int, j: int, d: int, init: np.ndarray | None) -> PairRecord:
        fixed, moving = regs[i], regs[j]
        start = np.eye(3) if init is None else init
        ncc_start = overlap_ncc(fixed, moving, start)
        # a longer pair is refined from the chain of short ones only, never searched afresh:
        # two sections apart, serial EM matches a look-alike (the mirror image of the
        # partner) as well as the partner, and the search's look-alikes, turned 15-120
        # degrees or shifted 70-180 px, moved whole runs of sections
        res = register_pair(
            fixed, moving, method=motion, init=start, coarse=coarse and init is None, engine=engine
        )
        if res is None:
            return PairRecord(i, j, d, start, ncc_start, ncc_start, False)
        ok = bool(res.ok) and res.ncc >= ncc_start - 0.02 and np.isfinite(res.matrix).all()
        if ok and init is not None:
            # a longer pair starts from the chain of short ones, which already holds the large
            # motion; a result far from it jumped to a look-alike (self-similar texture),
            # unless it matches clearly better than the chain
            far = _deviation(res.matrix, init, fixed.shape) > MAX_CHAIN_DEVIATION * max(fixed.shape)
            ok = not far or res.ncc > ncc_start + max(0.1, 0.5 * abs(ncc_start))
        return PairRecord(i, j, d, res.matrix, float(res.ncc), float(ncc_start), bool(ok))

    def batch(jobs):
        nonlocal count
        with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
            window = max(2, 2 * workers)
            pending: dict[int, object] = {}
            for a in range(len(jobs)):
                while len(pending) < window and a + len(pending) < len(jobs):
                    b = a + len(pending)
                    pending[b] = ex.submit(run, *jobs[b])
                rec = pending.pop(a).result()
                records[(rec.i, rec.j)] = rec
                if rec.ok:
                    done_m[(rec.i, rec.j)] = rec.matrix
                count += 1
                yield Progress(
                    count, max(estimate, count), f"pair {rec.i}-{rec.j}", stage="register"
                )

    yield from batch([(i, j, 1, None) for i, j, _ in first])
    bad = _outliers(good, records)
    kept = [i for i in good if i not in bad]
    # across each outlier: its neighbours to each other (a fresh start: the pairs through the
    # outlier are not to be trusted)
    bridges = [(i, j, 1, None) for i, j, _ in neighbour_pairs(kept, 1) if (i, j) not in records]
    yield from batch(bridges)
    for d in range(2, k + 1):
        jobs = [
            (i, j, d, _composed(i, j, kept, done_m))
            for i, j, dd in neighbour_pairs(kept, k)
            if dd == d and (i, j) not in records
        ]
        yield from batch(jobs)
    return list(records.values())


def _outliers(good: list[int], records: dict[tuple[int, int], PairRecord]) -> set[int]:
    """Sections whose every pair to the next good section on either side is poor."""
    nccs = [r.ncc for r in records.values() if r.ok]
    if len(good) < 3 or not nccs:
        return set()
    typical = float(np.median(nccs))

    def poor(a: int, b: int) -> bool:
        r = records.get((a, b))
        return r is None or not r.ok or r.ncc < OUTLIER_RATIO * typical

    out = set()
    for a, i in enumerate(good):
        sides = []
        if a > 0:
            sides.append(poor(good[a - 1], i))
        if a + 1 < len(good):
            sides.append(poor(i, good[a + 1]))
        if sides and all(sides):
            out.add(i)
    return out


def _deviation(a: np.ndarray, b: np.ndarray, shape: tuple[int, int]) -> float:
    """Largest distance (px) between where ``a`` and ``b`` send the corners and the centre."""
    h, w = shape
    pts = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1], [w / 2, h / 2, 1]])
    return float(np.linalg.norm((pts @ a.T)[:, :2] - (pts @ b.T)[:, :2], axis=1).max())


def _composed(i, j, good, done) -> np.ndarray | None:
    """A start for pair (i, j) from the registered pairs of distance 1 between them."""
    a, b = good.index(i), good.index(j)
    m = np.eye(3)
    for t in range(a, b):
        step = done.get((good[t], good[t + 1]))
        if step is None:
            return None
        # section t pixel p ~ section t+1 pixel S p: compose left to right
        m = step @ m
    return m


def pair_constraints(records: list[PairRecord]) -> list[PairConstraint]:
    """Confidence-weighted constraints: NCC relative to the typical NCC at the same distance,
    over the distance, times the squared ratio of the typical NCC at that distance to the
    typical adjacent pair's."""
    out = []
    by_d: dict[int, list[float]] = {}
    for r in records:
        if r.ok:
            by_d.setdefault(r.distance, []).append(r.ncc)
    # distance counted in sections of the list the pair was made in: bridges count as 1
    typical = {d: float(np.median(v)) for d, v in by_d.items()}
    for r in records:
        if not r.ok or r.ncc <= 0.02:
            w = 0.0
        else:
            t = max(typical.get(r.distance, r.ncc), 1e-3)
            rel = r.ncc / t
            w = 0.02 if rel < LOW_PAIR_RATIO else float(min(1.0, rel) ** 2)
            w /= r.distance  # longer pairs: more change between the sections, less weight
            # and less again where similarity falls with distance: a stack whose sections two
            # apart share half as much (serial EM: NCC 0.15 against 0.3) says less about them
            w *= min(1.0, t / max(typical.get(1, t), 1e-3)) ** 2
        out.append(PairConstraint(r.i, r.j, r.matrix, w, r.ncc))
    return out
