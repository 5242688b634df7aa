"""``histovol stitch`` as a user runs it: every output format, grid / positions / inferred
layout, every model and blending, TILES.json, several sections into a folder ``histovol build``
reads, and bad input (one line, exit 2, nothing left behind, no overwrite without --overwrite)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_histovol.core.io import read_volume
from napari_histovol.core.stitch.simulate import simulate_grid

from .conftest import histovol, tissue, write_image


def _source(seed=0):
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    img = ndi.gaussian_filter(rng.random((420, 520)), 2.5)
    return ((img - img.min()) / np.ptp(img) * 220 + 20).astype(np.uint8)


@pytest.fixture
def tiles(tmp_path):
    """A 2x2 grid, 15% overlap, jitter 5 px, named in row order."""
    sim = simulate_grid(
        _source(), grid=(2, 2), tile=(128, 150), overlap=0.15, jitter=5, noise=2, seed=1
    )
    d = tmp_path / "tiles"
    d.mkdir()
    for k, t in enumerate(sim.tiles):
        write_image(d / f"tile_{k + 1}.png", t)
    return d, sim


@pytest.mark.parametrize("name", ["m.ome.tif", "m.ome.zarr", "m.tif", "m.png"])
def test_every_output_format_with_tiles_json(tiles, tmp_path, name, capsys):
    d, sim = tiles
    out, tj = tmp_path / name, tmp_path / "TILES.json"
    args = ["stitch", d, out, "--grid", "2x2", "--overlap", 0.15, "--tiles-out", tj, "--quiet"]
    assert histovol(*args) == 0
    assert "4/4 edges accepted" in capsys.readouterr().out
    doc = json.loads(tj.read_text())
    H, W = doc["mosaic_shape"]
    if name.endswith(".png"):
        import imagecodecs

        img = imagecodecs.png_decode(out.read_bytes())
    else:
        img = read_volume(out).data[0].compute()
    assert img.shape == (H, W)
    m = np.array(doc["tiles"][1]["matrix"])  # tile 2 sits right of tile 1 by the true offset
    m0 = np.array(doc["tiles"][0]["matrix"])
    truth = sim.matrices[1][:2, 2] - sim.matrices[0][:2, 2]
    assert m[:2, 2] - m0[:2, 2] == pytest.approx(truth, abs=1.5)  # see notes: ECC on tiny tiles
    assert {e["status"] for e in doc["edges"]} == {"accepted"}
    # the mosaic shows tile 1 where TILES.json puts it
    t1 = sim.tiles[0].astype(float)
    x, y = np.round(m0[:2, 2]).astype(int)
    assert np.abs(img[y + 10 : y + 60, x + 10 : x + 60] - t1[10:60, 10:60]).mean() < 4
    if name.endswith(".ome.tif"):
        assert len(read_volume(out).levels) >= 2
    # every mosaic reopens in `histovol info`, the .png one as a single image (a helper's
    # .png mosaic was refused: "a single image; give the folder")
    capsys.readouterr()
    assert histovol("info", out, "--json") == 0
    said = json.loads(capsys.readouterr().out)
    assert said["planes"] == 1 and said["shape"][1:3] == [H, W]
    # and converts, the .png one too (it was refused as "a single image")
    again = tmp_path / "again.ome.zarr"
    assert histovol("convert", out, again, "--pixel-size", 0.5, "--quiet") == 0
    np.testing.assert_array_equal(read_volume(again).data[0].compute(), img)
    assert read_volume(again).meta.scale[1:] == pytest.approx((0.5, 0.5))
    assert histovol(*args) == 2  # exists: needs --overwrite
    assert histovol(*args, "--overwrite") == 0


def test_positions_models_blending_and_inferred_layout(tiles, tmp_path):
    d, sim = tiles
    pos = tmp_path / "POS.csv"
    rows = ["file,x,y"] + [
        f"tile_{k + 1}.png,{x + 3},{y - 2}" for k, (x, y) in enumerate(sim.nominal)
    ]
    pos.write_text("\n".join(rows) + "\n")
    for model in ("translation", "rigid", "affine", "elastic"):
        tj = tmp_path / f"{model}.json"
        code = histovol(
            "stitch",
            d,
            tmp_path / f"{model}.ome.zarr",
            "--positions",
            pos,
            "--model",
            model,
            "--blend",
            "none",
            "--tiles-out",
            tj,
            "--quiet",
        )
        assert code == 0, model
        doc = json.loads(tj.read_text())
        assert doc["model"] == model and not any(t["flags"] for t in doc["tiles"])
        assert ("field" in doc["tiles"][0]) == (model == "elastic")
    tj = tmp_path / "inferred.json"
    assert histovol("stitch", d, tmp_path / "inferred.tif", "--tiles-out", tj, "--quiet") == 0
    doc = json.loads(tj.read_text())
    m = [np.array(t["matrix"])[:2, 2] for t in doc["tiles"]]
    truth = sim.matrices[3][:2, 2] - sim.matrices[0][:2, 2]
    assert m[3] - m[0] == pytest.approx(truth, abs=1.5)


def test_several_sections_become_a_folder_that_build_takes(tmp_path):
    d = tmp_path / "sections"
    d.mkdir()
    for z in (1, 2, 4):
        sim = simulate_grid(_source(z), grid=(1, 2), tile=(120, 140), overlap=0.2, jitter=3, seed=z)
        for k, t in enumerate(sim.tiles):
            write_image(d / f"sec{z:02d}_tile{k + 1}.png", t)
    out, tj = tmp_path / "stitched", tmp_path / "T.json"
    assert (
        histovol("stitch", d, out, "--grid", "1x2", "--overlap", 0.2, "--tiles-out", tj, "--quiet")
        == 0
    )
    vol = read_volume(out)
    assert vol.meta.z_numbers == (1, 2, 4) and vol.meta.gaps == (3,)
    assert [s["z"] for s in json.loads(tj.read_text())["sections"]] == [1, 2, 4]
    assert histovol("build", out, tmp_path / "v.ome.zarr", "--align", "translation", "--quiet") == 0
    assert read_volume(tmp_path / "v.ome.zarr").meta.z_numbers == (1, 2, 3, 4)


BAD = [
    (["{t}/none", "{o}/m.tif"], "does not exist"),
    (["{d}", "{o}/m.tif", "--grid", "3by3"], "is not a grid"),
    (["{d}", "{o}/m.tif", "--grid", "3x3"], "holds 9 tiles but there are 4"),
    (["{d}", "{o}/m.tif", "--grid", "2x2", "--positions", "{t}/p.csv"], "not both"),
    (["{d}", "{o}/m.tif", "--positions", "{t}/p.csv"], "gives no position for tile"),
    (["{d}", "{o}/m.tif", "--overlap", "1.5"], "fraction"),
    (["{d}", "{o}/m.jpg", "--grid", "2x2"], "Cannot write a mosaic"),
    (["{d}", "{o}/m.tif", "--model", "warp"], "invalid choice"),
    (["{s}", "{o}/m.tif", "--grid", "1x2"], "2 sections"),
]


@pytest.mark.parametrize("args,expected", BAD, ids=[b[1] for b in BAD])
def test_bad_input_is_one_line_and_leaves_nothing(tiles, tmp_path, capsys, args, expected):
    d, _ = tiles
    (tmp_path / "p.csv").write_text("file,x,y\ntile_1.png,0,0\n")
    s = tmp_path / "two"
    s.mkdir()
    for name in ("s1_a.png", "s1_b.png", "s2_a.png", "s2_b.png"):
        write_image(s / name, tissue((40, 48), seed=1))
    o = tmp_path / "o"
    o.mkdir()
    code = histovol("stitch", *[a.format(t=tmp_path, d=d, o=o, s=s) for a in args])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("histovol: error:")]
    assert code == 2 and len(lines) == 1 and expected in lines[0], err
    assert "Traceback" not in err
    assert not list(o.iterdir()) and not list(tmp_path.rglob("*.partial"))
