"""The Stitch tiles widget in a real viewer (Xvfb): a 3x3 grid cut from the skin H&E with known
offsets, its centre tile blank, is stitched on a thread worker; the mosaic reproduces the
source, and the tile outlines are coloured by edge QC (the blank tile red, its neighbours
yellow, the corners green) with the tiles' names and NCCs on them."""

from __future__ import annotations

import numpy as np
import pytest

from napari_histovol.core.stitch.simulate import simulate_grid

from .conftest import SHARED_DATA, write_image

pytestmark = pytest.mark.gui


@pytest.fixture
def skin_tiles(tmp_path):
    import tifffile

    path = SHARED_DATA / "skin_he_2d" / "skin.tif"
    if not path.is_file():
        pytest.skip(f"shared data not found at {path}")
    img = tifffile.imread(path)[160:]
    sim = simulate_grid(img, grid=(3, 3), tile=(128, 160), overlap=0.2, jitter=5, seed=11)
    sim.tiles[4] = np.full_like(sim.tiles[4], 232)  # a blank tile (slide glass) in the middle
    d = tmp_path / "tiles"
    d.mkdir()
    for k, t in enumerate(sim.tiles):
        write_image(d / f"tile_{k + 1:02d}.png", t)
    return d, img, sim


def _rgba(hex_colour: str) -> np.ndarray:
    from napari.utils.colormaps.standardize_color import transform_color

    return transform_color(hex_colour)[0]


def test_stitch_widget_shows_the_mosaic_and_outlines_coloured_by_edge_qc(
    make_napari_viewer, qtbot, skin_tiles, tmp_path
):
    from scipy.ndimage import map_coordinates

    from napari_histovol._widgets.stitch_widget import GRADE_COLOURS, StitchWidget

    folder, img, sim = skin_tiles
    viewer = make_napari_viewer(show=True)
    w = StitchWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert w.positions.native.isHidden() and not w.rows.native.isHidden()
    w.folder.value = str(tmp_path / "other_tiles")
    assert str(w.output.value).endswith("other_tiles_mosaic.ome.tif")
    w.folder.value = str(folder)  # the suggestion follows the folder (a helper's stayed)
    assert str(w.output.value).endswith("tiles_mosaic.ome.tif")
    assert not str(w.output.value).endswith("other_tiles_mosaic.ome.tif")
    w.rows.value, w.cols.value, w.overlap.value = 3, 3, 0.2
    w.run()
    qtbot.waitUntil(lambda: w.result is not None and w.run_button.enabled, timeout=60000)
    assert (tmp_path / "tiles_mosaic_TILES.json").is_file()
    assert "flagged: tile_05.png" in w.progress.status.value
    outlines = viewer.layers["tiles_mosaic tiles"].features
    red = set(outlines["tile"][outlines["qc"] == "rejected"])
    assert red and all(name in w.progress.status.value for name in red)  # every red tile named

    mosaic = viewer.layers["tiles_mosaic"]
    assert mosaic.rgb
    level0 = mosaic.data[0] if mosaic.multiscale else mosaic.data  # a pyramidal .ome.tif
    data = np.asarray(level0)[0]
    placement = w.result.sections[0][1]
    assert data.shape[:2] == placement.mosaic_shape
    # mosaic pixel -> source pixel: tile 1's placement, then its known offset in the source
    t0 = placement.tiles[0].matrix
    # the top row of tiles (no blank tile there), below where jitter can leave it uncovered
    ys, xs = np.mgrid[16:48:3, 8 : data.shape[1] - 8 : 3]
    pts = np.stack([xs.ravel(), ys.ravel()], 1).astype(float)
    inv = np.linalg.inv(t0)
    src = sim.truth(0, pts @ inv[:2, :2].T + inv[:2, 2])
    ref = np.stack(
        [
            map_coordinates(img[..., c].astype(float), [src[:, 1], src[:, 0]], order=1)
            for c in range(3)
        ],
        1,
    )
    got = data[ys.ravel(), xs.ravel()].astype(float)
    assert np.abs(got - ref).mean() < 3  # 1.8 as placed; 4.2 with the mosaic 1 px off

    tiles = viewer.layers["tiles_mosaic tiles"]
    assert len(tiles.data) == 9
    assert list(tiles.features["tile"]) == [f"tile_{k:02d}.png" for k in range(1, 10)]
    colour = {g: _rgba(c) for g, c in GRADE_COLOURS.items()}
    edge = np.asarray(tiles.edge_color)
    grade = list(tiles.features["qc"])
    assert grade[4] == "rejected" and np.allclose(edge[4], colour["rejected"])
    for k in (1, 3, 5, 7):  # beside the blank tile: placed, but one seam rejected
        assert grade[k] == "weak" and np.allclose(edge[k], colour["weak"])
    for k in (0, 2, 6, 8):
        assert grade[k] == "accepted" and np.allclose(edge[k], colour["accepted"])
    assert "tile_02.png NCC 0." in tiles.features["edges"][0]
    assert "no reliable neighbour" in tiles.features["edges"][4]
    seams = viewer.layers["tiles_mosaic seams"]
    assert len(seams.data) == 12
    assert sum(g == "rejected" for g in seams.features["qc"]) == 4
    # outlines lie on the mosaic: tile 1's outline corner at its placed corner, in world units
    corner = np.asarray(tiles.data[0])[:, 1:].min(0)
    assert corner == pytest.approx(t0[[1, 0], 2] - 0.5, abs=0.6)
    shot = viewer.screenshot(canvas_only=True)
    assert shot.shape[-1] == 4 and shot[..., :3].std() > 5


def test_a_png_mosaic_is_shown_with_its_tiles(make_napari_viewer, qtbot, skin_tiles, tmp_path):
    """A helper stitched to .png (an output the README lists): the file was written, then
    refused as "a single image; give the folder" and never shown, with "done" in the status."""
    from napari_histovol._widgets.stitch_widget import StitchWidget

    folder, img, sim = skin_tiles
    viewer = make_napari_viewer(show=True)
    w = StitchWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.folder.value = str(folder)
    w.output.value = str(tmp_path / "m.png")
    w.folder.value = str(folder.parent / "another")  # a name the user gave stays
    assert str(w.output.value).endswith("m.png")
    w.folder.value = str(folder)
    w.rows.value, w.cols.value, w.overlap.value = 3, 3, 0.2
    w.run()
    qtbot.waitUntil(lambda: w.result is not None and w.run_button.enabled, timeout=60000)
    assert "edges accepted" in w.progress.status.value
    mosaic = viewer.layers["m"]
    assert mosaic.rgb and np.asarray(mosaic.data).shape[1:3] == w.result.sections[0][1].mosaic_shape
    assert len(viewer.layers["m tiles"].data) == 9
    # again into the same output: asked, as the other tabs ask (it failed naming a box)
    asked = []
    w._confirm_overwrite = lambda path: asked.append(path) or False  # No
    w.run()
    assert asked == [tmp_path / "m.png"] and "exists already" in w.progress.status.value
    # into the tiles folder: refused, as the command refuses it (the mosaic became a tile)
    w.output.value = str(folder / "mosaic.png")
    w.run()
    assert "inside the input folder" in w.progress.status.value
    assert not (folder / "mosaic.png").exists()
