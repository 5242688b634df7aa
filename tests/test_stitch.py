"""Stitching against a truth we made: grids cut from real images (skin H&E, vEMstitch EM) with
known jitter, rotations, elastic distortion and noise; a blank and a foreign tile; the NIST MIST
5x5 set against MIST's own positions; layout inference; blending; TILES.json."""

from __future__ import annotations

import re

import numpy as np
import pytest

from napari_histovol.core.stitch import ArrayTiles, FileTiles, Placement, place_tiles, render_region
from napari_histovol.core.stitch.infer import infer_layout
from napari_histovol.core.stitch.layout import find_tile_sections, tile_section_number
from napari_histovol.core.stitch.simulate import placement_error, simulate_grid

from .conftest import SHARED_DATA


def _skin():
    import tifffile

    path = SHARED_DATA / "skin_he_2d" / "skin.tif"
    if not path.is_file():
        pytest.skip(f"shared data not found at {path}")
    return tifffile.imread(path)[160:]  # the top band is blank slide


def _em():
    import imageio.v3 as iio

    path = SHARED_DATA / "vemstitch_em_tiles" / "sample_1" / "1_2_2.png"
    if not path.is_file():
        pytest.skip(f"shared data not found at {path}")
    return iio.imread(path)


def _rms(sim, pl, indices=None):
    shapes = [t.shape[:2] for t in sim.tiles]
    err = placement_error(sim.truth, lambda k, p: pl.tiles[k].to_mosaic(p), shapes, indices=indices)
    return float(np.sqrt((err**2).mean()))


def test_translation_grid_from_h_and_e_is_recovered_to_sub_pixel():
    sim = simulate_grid(
        _skin(), grid=(3, 3), tile=(160, 192), overlap=0.15, jitter=6, noise=3, seed=2
    )
    pl = place_tiles(ArrayTiles(sim.tiles), sim.nominal, model="translation")
    # ECC refines every pair (a template reaching past the tile border biased it by ~0.5 px)
    assert _rms(sim, pl) < 0.15
    assert not pl.flagged
    nominal_only = Placement.from_dict(pl.to_dict())  # nominal places are off by the jitter
    for t in nominal_only.tiles:
        t.matrix = np.array([[1, 0, t.nominal[0]], [0, 1, t.nominal[1]], [0, 0, 1.0]])
    assert _rms(sim, nominal_only) > 2


def test_rotated_em_tiles_need_the_rigid_model():
    sim = simulate_grid(
        _em().astype(np.float32)[:, :, None].repeat(1, 2)[..., 0],
        grid=(2, 3),
        tile=(224, 256),
        overlap=0.15,
        jitter=6,
        rotation_deg=1.5,
        noise=4,
        seed=3,
    )
    rigid = place_tiles(ArrayTiles(sim.tiles), sim.nominal, model="rigid")
    shift = place_tiles(ArrayTiles(sim.tiles), sim.nominal, model="translation")
    assert _rms(sim, rigid) < 0.5
    assert _rms(sim, shift) > _rms(sim, rigid) + 0.3


def test_elastic_distortion_stays_within_1_5_px():
    sim = simulate_grid(
        _skin().mean(axis=2).astype(np.uint8),
        grid=(2, 3),
        tile=(192, 224),
        overlap=0.2,
        jitter=5,
        rotation_deg=0.5,
        elastic_px=1.5,
        noise=3,
        seed=4,
    )
    pl = place_tiles(ArrayTiles(sim.tiles), sim.nominal, model="elastic")
    assert all(t.field is not None for t in pl.tiles)
    assert _rms(sim, pl) < 1.5
    accepted = [e for e in pl.edges if e.status == "accepted"]
    assert np.nanmedian([e.residual_px for e in accepted]) < 1.0


@pytest.mark.parametrize("bad", ["blank", "foreign"])
def test_a_blank_or_foreign_tile_is_flagged_and_does_not_move_its_neighbours(bad):
    img = _skin().mean(axis=2).astype(np.uint8)
    sim = simulate_grid(img, grid=(3, 3), tile=(160, 192), overlap=0.15, jitter=6, noise=3, seed=5)
    k = 4  # the centre tile: four neighbours
    if bad == "blank":
        sim.tiles[k] = np.full_like(sim.tiles[k], 200)
    else:
        sim.tiles[k] = _em()[:160, :192]
    pl = place_tiles(ArrayTiles(sim.tiles), sim.nominal, model="translation")
    assert pl.flagged == [pl.tiles[k].name]
    assert pl.tiles[k].matrix[:2, 2] == pytest.approx(
        pl.tiles[0].matrix[:2, 2] + sim.nominal[k] - sim.nominal[0], abs=10
    )
    mine = [e for e in pl.edges if k in (e.i, e.j)]
    assert mine and all(e.status == "rejected" and e.reason for e in mine)
    others = [i for i in range(9) if i != k]
    assert _rms(sim, pl, indices=others) < 0.5


def test_layout_is_worked_out_from_the_overlaps_column_by_column():
    sim = simulate_grid(_skin(), grid=(2, 3), tile=(150, 180), overlap=0.12, jitter=3, seed=6)
    order = [0, 3, 1, 4, 2, 5]  # file order column by column
    src = ArrayTiles([sim.tiles[o] for o in order])
    nominal, info = infer_layout(src)
    assert (info["rows"], info["cols"], info["order"]) == (2, 3, "column")
    expect = sim.nominal[order] - sim.nominal[order].min(0)
    assert np.abs(nominal - expect).max() < 12


def test_mist_5x5_agrees_with_mists_positions(shared_data):
    folder = shared_data / "mist_test_5x5_timelapse"
    sections = find_tile_sections(folder / "tiles")
    assert [s.z for s in sections] == [1, 2, 3] and len(sections[0].paths) == 25
    src = FileTiles(sections[0].paths)
    nominal, info = infer_layout(src)
    assert (info["rows"], info["cols"], info["order"]) == (5, 5, "column")
    pl = place_tiles(src, nominal)
    ref = {}
    text = (folder / "mist_reference_output" / "global-positions-1.txt").read_text()
    for m in re.finditer(r"file: (\S+); corr: \S+; position: \((\d+), (\d+)\)", text):
        ref[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    est = np.array([t.matrix[:2, 2] for t in pl.tiles])
    mist = np.array([ref[n] for n in src.names], float)
    ok = np.array([not t.flags for t in pl.tiles])
    assert ok.sum() >= 20
    d = (est[ok] - est[ok].mean(0)) - (mist[ok] - mist[ok].mean(0))
    dist = np.linalg.norm(d, axis=1)
    assert np.median(dist) < 3 and dist.max() < 8


def test_mosaic_reproduces_the_source_where_tiles_overlap():
    img = _skin()
    sim = simulate_grid(img, grid=(2, 2), tile=(160, 192), overlap=0.2, jitter=4, seed=7)
    pl = place_tiles(ArrayTiles(sim.tiles), sim.nominal)
    H, W = pl.mosaic_shape
    out = {
        b: render_region(ArrayTiles(sim.tiles), pl, 0, H, 0, W, blend=b) for b in ("linear", "none")
    }
    assert out["linear"].shape == (H, W, 3) and out["linear"].dtype == np.uint8
    # mosaic pixel -> source pixel through tile 0's truth
    inv = np.linalg.inv(pl.tiles[0].matrix)
    ys, xs = np.mgrid[20 : H - 20 : 7, 20 : W - 20 : 7]
    pts = np.stack([xs.ravel(), ys.ravel()], 1).astype(float)
    tile_px = pts @ inv[:2, :2].T + inv[:2, 2]
    src = sim.truth(0, tile_px)
    ref = img[np.round(src[:, 1]).astype(int), np.round(src[:, 0]).astype(int)].astype(float)
    for b in ("linear", "none"):
        got = out[b][ys.ravel(), xs.ravel()].astype(float)
        assert np.abs(got - ref).mean() < 12, b
    assert not np.array_equal(out["linear"], out["none"])


def test_tiles_json_round_trip_keeps_matrices_fields_and_edge_qc():
    sim = simulate_grid(
        _skin().mean(axis=2).astype(np.uint8),
        grid=(1, 2),
        tile=(128, 160),
        overlap=0.25,
        elastic_px=1,
        seed=8,
    )
    pl = place_tiles(ArrayTiles(sim.tiles), sim.nominal, model="elastic")
    doc = pl.to_dict()
    assert set(doc) >= {"mosaic_shape", "tiles", "edges"}
    assert doc["edges"][0]["status"] == "accepted" and doc["edges"][0]["ncc"] > 0.5
    back = Placement.from_dict(doc)
    p = np.array([[10.0, 20.0], [100.0, 90.0]])
    assert back.tiles[1].to_mosaic(p) == pytest.approx(pl.tiles[1].to_mosaic(p), abs=1e-3)
    assert back.tiles[1].to_tile(back.tiles[1].to_mosaic(p)) == pytest.approx(p, abs=0.05)


def test_section_numbers_in_tile_names():
    assert tile_section_number("sec03_tile05.png") == 3
    assert tile_section_number("S2-r1-c3.tif") == 2
    assert tile_section_number("ImageName_t01_p07.tif") == 1
    assert tile_section_number("1_2_3.png") is None
    assert tile_section_number("tile_07.tif") is None


def test_stage_model_rejects_a_shift_its_direction_does_not_share():
    from napari_histovol.core.stitch.placement import EdgeReport, stage_model_test

    nominal = np.array([[c * 200.0, r * 150.0] for r in range(2) for c in range(4)])
    shapes = [(170, 220)] * 8
    shifts = {(0, 1): (1.0, 0.5), (1, 2): (1.5, 0.0), (2, 3): (0.5, 1.0), (4, 5): (1.2, 0.4)}
    shifts[(5, 6)] = (14.0, -9.0)  # a chance match somewhere in the search range
    reports = [EdgeReport(i, j, "accepted", "", 0.9, shift=s) for (i, j), s in shifts.items()]
    reports.append(EdgeReport(0, 4, "accepted", "", 0.9, shift=(30.0, 30.0)))  # alone: kept
    stage_model_test(reports, nominal, shapes)
    status = {(r.i, r.j): r.status for r in reports}
    assert status[(5, 6)] == "rejected" and "far from" in reports[4].reason
    assert [status[k] for k in ((0, 1), (1, 2), (2, 3), (4, 5), (0, 4))] == ["accepted"] * 5


def test_tile_and_edge_grades_point_at_the_bad_seams():
    from napari_histovol.core.stitch.placement import EdgeReport
    from napari_histovol.core.stitch.qc import edge_grade, seam_lines, tile_qc

    img = _skin().mean(axis=2).astype(np.uint8)
    sim = simulate_grid(img, grid=(2, 3), tile=(128, 160), overlap=0.2, jitter=4, seed=9)
    sim.tiles[1] = np.full_like(sim.tiles[1], 230)  # top middle: blank
    pl = place_tiles(ArrayTiles(sim.tiles), sim.nominal)
    grades = [q.grade for q in tile_qc(pl)]
    # the blank tile's place is a guess; its neighbours are placed through their other seams
    assert grades == ["weak", "rejected", "weak", "accepted", "weak", "accepted"]
    assert "no reliable neighbour" in tile_qc(pl)[1].text
    seams = seam_lines(pl)
    assert len(seams) == len(pl.edges) == 7
    assert sorted(g for _, g, _ in seams) == ["accepted"] * 4 + ["rejected"] * 3
    # weak: accepted but close to chance, or the two tiles disagree on the overlap
    assert edge_grade(EdgeReport(0, 1, "accepted", "", 0.9, ncc=0.5), 0.2) == "weak"
    assert edge_grade(EdgeReport(0, 1, "accepted", "", 0.9, ncc=0.7), 0.2) == "accepted"
    assert edge_grade(EdgeReport(0, 1, "accepted", "", 0.9, 0.9, residual_px=2.0), 0.2) == "weak"


@pytest.mark.parametrize("source", ["skin", "em"])
def test_a_2x3_grid_in_row_order_is_not_taken_for_one_row(source):
    """A helper's six skin tiles (2 x 3, row order) were laid out as one row of six: that
    layout calls four true pairs and one false pair neighbours, and the layouts were ranked
    by the median of their pairs' correlation."""
    img = _skin() if source == "skin" else _em()
    sim = simulate_grid(img, grid=(2, 3), tile=(240, 300), overlap=0.17, jitter=3, noise=2, seed=2)
    nominal, info = infer_layout(ArrayTiles(sim.tiles))
    assert (info["rows"], info["cols"], info["order"]) == (2, 3, "row")
    expect = sim.nominal - sim.nominal.min(0)
    assert np.abs(nominal - expect).max() < 12


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tiles_cut_at_whole_offsets_give_a_mosaic_of_the_cut_region_without_empty_edges(seed):
    """A helper's EM tiles, cut at whole offsets, came out 288 x 289 and 290 x 290 with an
    empty first and last row or column: the leftmost tile was placed at 0.99 or 1 - 1e-9 px
    and the mosaic's corner floored."""
    from napari_histovol.core.stitch.blend import mosaic_array

    em = _em()
    rng = np.random.default_rng(seed)
    y0, x0 = (int(v) for v in rng.integers(0, 200, 2))
    region = em[y0 : y0 + 288, x0 : x0 + 288]
    tiles = [region[y : y + 160, x : x + 160] for y in (0, 128) for x in (0, 128)]
    nominal = np.array([[x, y] for y in (0, 128) for x in (0, 128)], float)
    nominal += rng.uniform(-2, 2, nominal.shape)  # a stage that is off by up to 2 px
    pl = place_tiles(ArrayTiles(tiles), nominal, model="translation")
    mosaic = np.asarray(mosaic_array(ArrayTiles(tiles), pl))
    assert mosaic.shape == region.shape
    for edge in (mosaic[0], mosaic[-1], mosaic[:, 0], mosaic[:, -1]):
        assert (edge > 0).mean() > 0.9  # EM has no zero pixels; an empty edge is all zero
    assert np.corrcoef(mosaic.ravel(), region.ravel())[0, 1] > 0.95  # the region, in place
    # the best-connected tile (all have two neighbours: the first) lies on whole pixels, so
    # where no other tile reaches its pixels are copied, not resampled (a helper's mosaic
    # sat 0.35 px off every tile)
    np.testing.assert_array_equal(mosaic[:120, :120], region[:120, :120])
