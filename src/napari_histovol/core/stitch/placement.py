"""From tiles and their nominal places to measured placements with per-edge QC.

Steps: every overlapping pair is registered (:mod:`.pairwise`, dask tasks or threads); an edge
is accepted only when its overlap correlates better than pairs that are *not* neighbours do
(the chance test: the same geometry with a non-adjacent tile, and with the neighbour turned
half round, sets the threshold); the accepted edges are solved together (:mod:`.solve`),
dropping edges the solution disagrees with; with the elastic model, smooth per-tile fields
follow (:mod:`.elastic`). Tiles left without an accepted edge keep their nominal place and are
flagged.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as _field

import numpy as np

from ..errors import InputError
from ..progress import Progress, ProgressGenerator, drain
from .elastic import TileField, local_matches, solve_fields
from .layout import TileSource
from .pairwise import PairMeasure, apply, chance_ncc, measure_pair, nominal_pairs, overlap_ncc
from .solve import Edge, components, robust_solve

MODELS = ("translation", "rigid", "affine", "elastic")
#: An edge's overlap NCC must exceed this, whatever chance gives.
MIN_NCC = 0.1
#: ... and this many times what the pair's own tiles give when one is turned half round.
OWN_CHANCE_FACTOR = 1.5


@dataclass
class TilePlacement:
    """Where one tile goes: ``matrix`` maps tile pixel (x, y, 1) to mosaic pixel; an elastic
    placement adds ``field`` (mosaic = matrix p + field(p)); ``flags`` say what is uncertain."""

    name: str
    shape: tuple[int, int]
    matrix: np.ndarray
    nominal: tuple[float, float]
    field: TileField | None = None
    flags: list[str] = _field(default_factory=list)

    def to_mosaic(self, pts: np.ndarray) -> np.ndarray:
        """Tile pixels (n, 2) -> mosaic pixels."""
        out = apply(self.matrix, pts)
        return out + self.field.at(pts) if self.field is not None else out

    def to_tile(self, pts: np.ndarray, iterations: int = 3) -> np.ndarray:
        """Mosaic pixels (n, 2) -> tile pixels (inverting the field by fixed-point steps)."""
        inv = np.linalg.inv(self.matrix)
        p = apply(inv, pts)
        if self.field is not None:
            for _ in range(iterations):
                p = apply(inv, pts - self.field.at(p))
        return p


@dataclass
class EdgeReport:
    """QC of one overlapping pair (TILES.json ``edges``)."""

    i: int
    j: int
    status: str
    reason: str
    pair_ncc: float
    ncc: float = float("nan")
    residual_px: float = float("nan")
    method: str = ""
    shift: tuple[float, float] | None = None


@dataclass
class Placement:
    """The stitched layout of one section: tiles, edges with QC, the mosaic's size."""

    tiles: list[TilePlacement]
    edges: list[EdgeReport]
    mosaic_shape: tuple[int, int]
    model: str
    chance_threshold: float

    @property
    def flagged(self) -> list[str]:
        """Names of the tiles with a flag."""
        return [t.name for t in self.tiles if t.flags]

    def edge_status(self, k: int) -> str:
        """The worst status among tile ``k``'s edges (``accepted`` / ``rejected`` / ``none``)."""
        mine = [e.status for e in self.edges if k in (e.i, e.j)]
        if not mine:
            return "none"
        return "rejected" if "rejected" in mine else "accepted"

    def to_dict(self) -> dict:
        """The TILES.json document."""
        tiles = []
        for t in self.tiles:
            d = {
                "file": t.name,
                "matrix": np.round(t.matrix, 6).tolist(),
                "shape": [int(t.shape[0]), int(t.shape[1])],
                "nominal": [float(t.nominal[0]), float(t.nominal[1])],
                "flags": list(t.flags),
            }
            if t.field is not None:
                d["field"] = t.field.to_dict()
            tiles.append(d)
        edges = []
        for e in self.edges:
            edges.append(
                {
                    "a": self.tiles[e.i].name,
                    "b": self.tiles[e.j].name,
                    "status": e.status,
                    "reason": e.reason,
                    "ncc": _num(e.ncc),
                    "pair_ncc": _num(e.pair_ncc),
                    "residual_px": _num(e.residual_px),
                    "method": e.method,
                    "shift": None if e.shift is None else [round(float(s), 3) for s in e.shift],
                }
            )
        return {
            "mosaic_shape": [int(self.mosaic_shape[0]), int(self.mosaic_shape[1])],
            "model": self.model,
            "chance_ncc": _num(self.chance_threshold),
            "tiles": tiles,
            "edges": edges,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Placement:
        """Read a TILES.json document back (edges keep their QC)."""
        names = [t["file"] for t in d["tiles"]]
        tiles = [
            TilePlacement(
                t["file"],
                tuple(t.get("shape", (0, 0))),
                np.asarray(t["matrix"], float),
                tuple(t.get("nominal", (0.0, 0.0))),
                TileField.from_dict(t["field"]) if t.get("field") else None,
                list(t.get("flags", [])),
            )
            for t in d["tiles"]
        ]
        edges = [
            EdgeReport(
                names.index(e["a"]),
                names.index(e["b"]),
                e["status"],
                e.get("reason", ""),
                _nan(e.get("pair_ncc")),
                _nan(e.get("ncc")),
                _nan(e.get("residual_px")),
                e.get("method", ""),
                tuple(e["shift"]) if e.get("shift") else None,
            )
            for e in d.get("edges", [])
        ]
        return cls(
            tiles, edges, tuple(d["mosaic_shape"]), d.get("model", ""), _nan(d.get("chance_ncc"))
        )


def _num(v: float) -> float | None:
    return None if v is None or not np.isfinite(v) else round(float(v), 4)


def _nan(v) -> float:
    return float("nan") if v is None else float(v)


def default_search(shapes: list[tuple[int, int]]) -> float:
    """How far (px) a tile may be from its nominal place by default: 10% of the larger tile
    side, at least 16 px."""
    return float(max(16.0, 0.1 * max(max(s) for s in shapes)))


def _compute(tasks: list, scheduler, workers: int) -> ProgressGenerator[list]:
    """Run zero-argument callables (dask.delayed where a cluster is given), in order, with
    progress per finished task."""
    n = len(tasks)
    if scheduler is not None:
        import dask

        from ..cluster import dask_client

        client = dask_client(scheduler)
        futures = client.compute([dask.delayed(t)() for t in tasks])
        out = []
        for k, f in enumerate(futures):
            out.append(f.result())
            yield Progress(k + 1, n, "pairs", stage="register")
        return out
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(t) for t in tasks]
        out = []
        for k, f in enumerate(futures):
            out.append(f.result())
            yield Progress(k + 1, n, f"pair {k + 1}/{n}", stage="register")
    return out


class _PairTask:
    """A picklable pair registration (a dask task)."""

    def __init__(self, source, i, j, offset, rigid, search):
        self.args = (source, i, j, offset, rigid, search)

    def __call__(self) -> PairMeasure:
        source, i, j, offset, rigid, search = self.args
        return measure_pair(
            source.gray(i), source.gray(j), offset, i=i, j=j, rigid=rigid, search=search
        )


class _ChanceTask:
    def __init__(self, source, i, k, offset, search, flip):
        self.args = (source, i, k, offset, search, flip)

    def __call__(self) -> float:
        source, i, k, offset, search, flip = self.args
        b = source.gray(k)
        if flip:
            b = np.ascontiguousarray(b[::-1, ::-1])
        return chance_ncc(source.gray(i), b, offset, search)


def chance_draws(
    pairs: list[tuple[int, int]], nominal: np.ndarray, shapes, *, seed: int = 0, extra: int = 24
) -> list[tuple[int, int, tuple[float, float], bool]]:
    """The non-neighbour comparisons of the chance test: every pair's geometry with either
    tile turned half round (two draws per pair, in pair order), and up to ``extra`` with a
    tile that is not a neighbour."""
    rng = np.random.default_rng(seed)
    n = len(shapes)
    adjacent = {(i, j) for i, j in pairs} | {(j, i) for i, j in pairs}
    draws = []
    for i, j in pairs:
        draws.append((i, j, tuple(nominal[j] - nominal[i]), True))
        draws.append((j, i, tuple(nominal[i] - nominal[j]), True))
    options = []
    for i, j in pairs:
        for k in range(n):
            if k not in (i, j) and (i, k) not in adjacent and shapes[k] == shapes[j]:
                options.append((i, k, tuple(nominal[j] - nominal[i]), False))
    if options:
        pick = rng.choice(len(options), size=min(extra, len(options)), replace=False)
        draws += [options[p] for p in sorted(pick)]
    return draws


def iter_place_tiles(
    source: TileSource,
    nominal: np.ndarray,
    *,
    model: str = "translation",
    search: float | None = None,
    workers: int = 2,
    scheduler=None,
) -> ProgressGenerator[Placement]:
    """Measure every overlapping pair, test, solve: the placement of every tile.

    Parameters
    ----------
    source
        The tiles' pixels.
    nominal
        (n, 2) nominal top-left (x, y) of every tile, in pixels.
    model
        ``translation``, ``rigid``, ``affine`` or ``elastic`` (rigid plus a smooth field).
    search
        How far (px) a tile may be from its nominal place (default :func:`default_search`).
    workers
        Threads registering pairs.
    scheduler
        A dask.distributed address or Client: pairs are registered on that cluster.

    Returns
    -------
    Placement
        Tiles' transforms, edges with QC, the mosaic shape (mosaic origin at the top-left of
        the placed tiles).
    """
    if model not in MODELS:
        raise InputError(
            f"Unknown model {model!r}; use one of {', '.join(MODELS)}.", option="model"
        )
    n = len(source)
    shapes = [tuple(s) for s in source.shapes]
    nominal = np.asarray(nominal, float).reshape(n, 2)
    search = float(search) if search else default_search(shapes)
    pairs = nominal_pairs(shapes, nominal)
    rigid = model != "translation"
    tasks = [
        _PairTask(source, i, j, tuple(nominal[j] - nominal[i]), rigid, search) for i, j in pairs
    ]
    draws = chance_draws(pairs, nominal, shapes)
    tasks += [_ChanceTask(source, i, k, off, search, flip) for i, k, off, flip in draws]
    results = yield from _compute(tasks, scheduler, workers)
    measures: list[PairMeasure] = results[: len(pairs)]
    drawn = results[len(pairs) :]
    chance = np.array([v for v in drawn if np.isfinite(v)])
    threshold = max(MIN_NCC, float(np.quantile(chance, 0.99)) if chance.size else MIN_NCC)
    # each pair's own chance: its two tiles, each against the other turned half round
    own = [np.nanmax([drawn[2 * k], drawn[2 * k + 1], 0.0]) for k in range(len(pairs))]

    reports: list[EdgeReport] = []
    edges: list[Edge] = []
    edge_of_report: dict[int, int] = {}
    for k, m in enumerate(measures):
        rep = EdgeReport(m.i, m.j, "rejected", "", m.ncc, method=m.method)
        if m.matrix is None:
            rep.reason = m.note or "not measured"
        elif not np.isfinite(m.ncc) or m.ncc <= max(threshold, OWN_CHANCE_FACTOR * own[k]):
            limit = max(threshold, OWN_CHANCE_FACTOR * own[k])
            rep.reason = f"overlap correlation {m.ncc:.3f} not above chance ({limit:.3f})"
        else:
            rep.status, rep.reason = "accepted", ""
            nom = nominal[m.j] - nominal[m.i]
            rep.shift = (float(m.matrix[0, 2] - nom[0]), float(m.matrix[1, 2] - nom[1]))
        reports.append(rep)
    stage_model_test(reports, nominal, shapes)
    # a tile most of whose edges fail the chance test (blank, foreign, out of focus) keeps
    # none of its weak ones: there a weak edge is more likely chance than a match
    good = [r.pair_ncc for r in reports if r.status == "accepted"]
    weak = 0.5 * float(np.median(good)) if good else 0.0
    for t in range(n):
        mine = [r for r in reports if t in (r.i, r.j)]
        if mine and 2 * sum(r.status != "accepted" for r in mine) > len(mine):
            for r in mine:
                if r.status == "accepted" and r.pair_ncc < weak:
                    r.status = "rejected"
                    r.reason = (
                        f"weak ({r.pair_ncc:.3f}) while most edges of {source.names[t]} fail "
                        "the chance test"
                    )
    for k, (rep, m) in enumerate(zip(reports, measures, strict=True)):
        if rep.status == "accepted":
            edge_of_report[k] = len(edges)
            edges.append(Edge(m.i, m.j, m.matrix, m.points, max(m.ncc_refined, m.ncc)))

    base = "rigid" if model == "elastic" else model
    mats, dropped, residuals = robust_solve(shapes, nominal, edges, base)
    dropped_ids = {id(e) for e in dropped}
    for k, e_idx in edge_of_report.items():
        reports[k].residual_px = residuals[e_idx]
        if id(edges[e_idx]) in dropped_ids:
            reports[k].status = "rejected"
            reports[
                k
            ].reason = f"disagrees with the global solution (residual {residuals[e_idx]:.1f} px)"
    kept = [e for e in edges if id(e) not in dropped_ids]
    yield Progress(1, 1, "global solution", stage="solve")

    fields: list[TileField | None] = [None] * n
    if model == "elastic" and kept:
        matches = []
        for e in kept:
            rel = np.linalg.inv(mats[e.i]) @ mats[e.j]
            pi, pj = local_matches(source.gray(e.i), source.gray(e.j), rel)
            matches.append((e.i, e.j, pi, pj))
        fields = list(solve_fields(shapes, mats, matches))
        yield Progress(1, 1, "elastic fields", stage="solve")

    labels = components(n, kept)
    sizes = np.bincount(labels, minlength=n)
    main = int(np.argmax(sizes))
    tiles = []
    degrees = [sum(1 for e in kept if k in (e.i, e.j)) for k in range(n)]
    for k in range(n):
        flags = []
        if degrees[k] == 0 and n > 1:
            flags.append("no reliable neighbour: kept at its nominal place")
        elif labels[k] != main:
            flags.append("not connected to the main mosaic: its group kept near its nominal place")
        tiles.append(
            TilePlacement(source.names[k], shapes[k], mats[k], tuple(nominal[k]), fields[k], flags)
        )
    # the best-connected tile on whole pixels, so that its pixels are copied, not resampled
    # (the solve leaves a common fraction: a helper's mosaic sat 0.35 px off every tile, a
    # mean difference of 4.6 grey levels against the tiles, 0.49 with the fraction removed)
    anchor = tiles[int(np.argmax(degrees))].matrix[:2, 2]
    frac = np.round(anchor) - anchor
    # the mosaic's origin at the top-left of the placed tiles: its first pixel is the first
    # whose centre a tile covers (a tile's pixel k covers k - 0.5 .. k + 0.5, as the blender
    # samples it). Flooring the tiles' corner (0, 0) gave a mosaic an empty first row or
    # column when the leftmost tile sat at 0.99 or at 1 - 1e-9 px (a helper's EM tiles, cut
    # at whole offsets), and ceiling its far corner an empty last one
    corners = np.concatenate([_outline(t, 2, origin=-0.5) for t in tiles]) + frac
    lo = np.floor(corners.min(0) + 1e-6) + 1
    hi = np.ceil(corners.max(0) - 1e-6)
    shift = np.eye(3)
    shift[:2, 2] = frac - lo
    for t in tiles:
        t.matrix = shift @ t.matrix
    mosaic_shape = (int(hi[1] - lo[1]), int(hi[0] - lo[0]))
    # QC after placement: the overlap NCC and residual of every pair as placed
    for rep, m in zip(reports, measures, strict=True):
        rel = np.linalg.inv(tiles[rep.i].matrix) @ tiles[rep.j].matrix
        rep.ncc = placed_ncc(source, tiles, rep.i, rep.j, rel)
        if m.matrix is not None:
            rep.residual_px = _pair_residual(tiles, rep.i, rep.j, m)
    return Placement(tiles, reports, mosaic_shape, model, threshold)


def stage_model_test(
    reports: list[EdgeReport], nominal: np.ndarray, shapes, *, factor: float = 5.0
) -> None:
    """Reject accepted edges whose shift (measured minus nominal offset) is far from what the
    other pairs of the same direction show (the stage model: a stage repeats its steps, so
    horizontal neighbours share one error and vertical ones another).

    Pairs are grouped by their nominal offset (to a quarter of a tile side); in a group of at
    least four accepted edges an edge is rejected when either component of its shift is more
    than ``factor`` robust standard deviations (1.4826 MAD, at least 1 px) from the group's
    median. A chance match that passes the correlation test sits anywhere in the search range;
    a real one agrees with its row's or column's steps.
    """
    h = float(np.median([s[0] for s in shapes]))
    w = float(np.median([s[1] for s in shapes]))
    groups: dict[tuple[int, int], list[EdgeReport]] = {}
    for r in reports:
        if r.status == "accepted" and r.shift is not None:
            off = nominal[r.j] - nominal[r.i]
            key = (int(round(4 * off[0] / w)), int(round(4 * off[1] / h)))
            groups.setdefault(key, []).append(r)
    for members in groups.values():
        if len(members) < 4:
            continue
        sh = np.array([r.shift for r in members], float)
        med = np.median(sh, axis=0)
        sigma = np.maximum(1.0, 1.4826 * np.median(np.abs(sh - med), axis=0))
        for r, d in zip(members, np.abs(sh - med), strict=True):
            if (d > factor * sigma).any():
                r.status = "rejected"
                r.reason = (
                    f"shift ({r.shift[0]:.1f}, {r.shift[1]:.1f}) px from nominal is far from its "
                    f"direction's ({med[0]:.1f}, {med[1]:.1f}) +- {factor * sigma.max():.1f} px"
                )


def place_tiles(source: TileSource, nominal: np.ndarray, **kwargs) -> Placement:
    """:func:`iter_place_tiles` without progress."""
    return drain(iter_place_tiles(source, nominal, **kwargs))


def _outline(t: TilePlacement, per_side: int = 8, origin: float = 0.0) -> np.ndarray:
    h, w = t.shape
    s = np.linspace(0, 1, per_side + 1)
    pts = np.concatenate(
        [
            np.stack([s * w, 0 * s], 1),
            np.stack([s * w, 0 * s + h], 1),
            np.stack([0 * s, s * h], 1),
            np.stack([0 * s + w, s * h], 1),
        ]
    )
    return t.to_mosaic(pts + origin)


def outline(t: TilePlacement, per_side: int = 8) -> np.ndarray:
    """The tile's border in mosaic pixels, (4 * per_side, 2) points (x, y) in order round it."""
    h, w = t.shape
    s = np.linspace(0, 1, per_side, endpoint=False)
    pts = np.concatenate(
        [
            np.stack([s * w, 0 * s], 1),
            np.stack([0 * s + w, s * h], 1),
            np.stack([(1 - s) * w, 0 * s + h], 1),
            np.stack([0 * s, (1 - s) * h], 1),
        ]
    )
    return t.to_mosaic(pts)


def _pair_residual(tiles, i, j, m: PairMeasure) -> float:
    p = m.points
    if not len(p):
        return float("nan")
    d = tiles[i].to_mosaic(apply(m.matrix, p)) - tiles[j].to_mosaic(p)
    return float(np.sqrt((d**2).sum(1).mean()))


def placed_ncc(source: TileSource, tiles, i: int, j: int, rel: np.ndarray) -> float:
    """Overlap NCC of tiles ``i`` and ``j`` as placed (fields included)."""
    if tiles[i].field is None and tiles[j].field is None:
        return overlap_ncc(source.gray(i), source.gray(j), rel)

    a, b = source.gray(i), source.gray(j)
    box = footprint_in_mosaic(tiles[i], tiles[j])
    if box is None:
        return float("nan")
    x0, y0, x1, y1 = box
    step = max(1.0, np.sqrt((x1 - x0) * (y1 - y0) / 40000))
    gx, gy = np.meshgrid(np.arange(x0, x1, step), np.arange(y0, y1, step))
    pts = np.stack([gx.ravel(), gy.ravel()], 1)
    pa, pb = tiles[i].to_tile(pts), tiles[j].to_tile(pts)
    ok = _inside(pa, a.shape) & _inside(pb, b.shape)
    if ok.sum() < 64:
        return float("nan")
    from scipy.ndimage import map_coordinates

    from .pairwise import ncc

    va = map_coordinates(a, [pa[ok, 1], pa[ok, 0]], order=1)
    vb = map_coordinates(b, [pb[ok, 1], pb[ok, 0]], order=1)

    return ncc(va, vb)


def _inside(p: np.ndarray, shape) -> np.ndarray:
    return (p[:, 0] >= 0) & (p[:, 1] >= 0) & (p[:, 0] <= shape[1] - 1) & (p[:, 1] <= shape[0] - 1)


def footprint_in_mosaic(ta: TilePlacement, tb: TilePlacement):
    """Intersection (x0, y0, x1, y1) of two placed tiles' bounding boxes, or None."""
    a, b = _outline(ta, 2), _outline(tb, 2)
    x0, y0 = np.maximum(a.min(0), b.min(0))
    x1, y1 = np.minimum(a.max(0), b.max(0))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return float(x0), float(y0), float(x1), float(y1)
