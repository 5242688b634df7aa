"""The 3D view as a pathologist uses it (real napari on Xvfb): an RGB stack in its stain colours
with the slide transparent, a clipping plane dragged and tilted in the canvas, and 2D back as
it was."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from napari_histovol.core.render3d import true_colour_style

from .conftest import REPO


def _sample_volume() -> np.ndarray:
    """The five bundled sections (H&E and four IHC stains), cropped to a common size, halved."""
    files = sorted((REPO / "sample_data" / "anhir_lung_lesion3").glob("*.jpg"))
    planes = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]
    h = min(p.shape[0] for p in planes)
    w = min(p.shape[1] for p in planes)
    return np.stack([p[:h:2, :w:2] for p in planes])


def _mean_hue_deg(rgb: np.ndarray) -> float:
    """Saturation-weighted circular mean hue (degrees) of (N, 3) uint8 colours."""
    hsv = cv2.cvtColor(rgb.reshape(-1, 1, 3).astype(np.uint8), cv2.COLOR_RGB2HSV).reshape(-1, 3)
    angle = np.radians(hsv[:, 0].astype(float) * 2)
    weight = hsv[:, 1].astype(float)
    return float(
        np.degrees(np.arctan2((weight * np.sin(angle)).sum(), (weight * np.cos(angle)).sum()))
    )


def _tissue_share(shot: np.ndarray) -> float:
    """Share of the canvas that is not its background colour (the top-left pixel)."""
    rgb = shot[..., :3].astype(int)
    return float((np.abs(rgb - rgb[2, 2]).sum(-1) > 30).mean())


def _hue_gap(a: float, b: float) -> float:
    return abs((a - b + 180) % 360 - 180)


def test_palette_reproduces_the_stains_and_drops_the_slide():
    vol = _sample_volume()
    style = true_colour_style(vol[:, ::2, ::2])
    assert style.brightfield
    index = style.indices(vol)
    tissue = index > 0
    # the slide is transparent (index 0, alpha 0); the tissue is kept, in its colours
    assert style.alpha[0] == 0 and 0.1 < tissue.mean() < 0.9
    corner = index[:, :8, :8]
    assert (corner == 0).mean() > 0.9
    error = np.abs(style.palette[index].astype(int) - vol.astype(int))[tissue]
    assert error.mean() < 6  # of 255, per channel
    # denser stain is more opaque
    od = -np.log10(np.maximum(style.palette[1:], 1) / style.background).mean(axis=1)
    assert np.corrcoef(od, style.alpha[1:])[0, 1] > 0.8


def test_3d_shows_stain_colours_on_a_transparent_slide_and_2d_comes_back(make_napari_viewer):
    from napari_histovol._widgets.view3d_widget import COLOUR_SUFFIX, View3DWidget

    vol = _sample_volume()
    viewer = make_napari_viewer(show=True)
    layer = viewer.add_image(
        vol, rgb=True, name="lung", scale=(8.0, 0.9, 0.9), units=("um", "um", "um")
    )
    other = viewer.add_image(vol, rgb=True, name="aligned", scale=(8.0, 0.9, 0.9))
    viewer.window.resize(1100, 800)
    w = View3DWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.layer.value = layer
    z_range = tuple(viewer.dims.range[0])
    made = w.show_3d()
    assert viewer.dims.ndisplay == 3 and not layer.visible
    assert not other.visible  # napari would draw it as an opaque white block
    assert [m.name for m in made] == ["lung" + COLOUR_SUFFIX]
    assert made[0].data.ndim == 3 and made[0].rendering == "translucent"
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3]
    background = shot[2, 2].astype(int)
    # transparent slide: the corners show the canvas, which takes the slide's colour
    style = w._styles[id(layer)]
    assert np.abs(shot[2, 2].astype(int) - style.background).max() <= 3
    seen = np.abs(shot.astype(int) - background).sum(-1) > 30
    assert 0.05 < seen.mean() < 0.95
    # the tissue's hue on screen is the sections' hue (H&E and IHC: purple-blue-brown)
    source_tissue = vol[style.indices(vol) > 0]
    source_hue, screen_hue = _mean_hue_deg(source_tissue), _mean_hue_deg(shot[seen])
    assert _hue_gap(source_hue, screen_hue) < 20, (source_hue, screen_hue)
    # the stain opacity scales every colour's alpha (the slide stays transparent)
    w.opacity.value = 0.3
    alpha = np.asarray(made[0].colormap.colors)[:, 3]
    np.testing.assert_allclose(alpha, np.clip(style.alpha * 0.3, 0, 1), atol=1e-6)
    # back to 2D: the slide view as it was, no copy left, the z slider unchanged
    w.z_exaggeration.value = 3.0
    viewer.dims.ndisplay = 2
    assert layer.visible and other.visible
    assert [ly.name for ly in viewer.layers] == ["lung", "aligned"]
    assert tuple(viewer.dims.range[0]) == pytest.approx(z_range)
    assert viewer.canvas.background_color_override is None


def _drag(viewer, start, end, modifiers):
    """Press, move and release the left button in the canvas, as Qt mouse events."""
    from qtpy.QtWidgets import QApplication

    from napari_histovol._widgets._mouse import drag

    drag(viewer, start, end, modifiers=modifiers, after_move=QApplication.processEvents)
    QApplication.processEvents()


def test_clipping_plane_is_dragged_and_tilted_in_the_canvas(make_napari_viewer):
    from qtpy.QtWidgets import QApplication
    from scipy import ndimage as ndi

    from napari_histovol._widgets.view3d_widget import View3DWidget

    rng = np.random.default_rng(0)
    field = ndi.gaussian_filter(rng.random((24, 96, 96)), 3)
    field = (field - field.min()) / np.ptp(field)
    zz, yy, xx = np.mgrid[:24, :96, :96]
    field *= ((yy - 48) ** 2 + (xx - 48) ** 2 < 40**2) & (zz > 1) & (zz < 22)  # slide around
    rgb = np.stack([255 - 90 * field, 255 - 160 * field, 255 - 60 * field], -1).astype(np.uint8)
    viewer = make_napari_viewer(show=True)
    layer = viewer.add_image(rgb, rgb=True, name="vol", scale=(4, 1, 1))
    viewer.window.resize(1200, 800)
    w = View3DWidget(viewer)
    viewer.window.add_dock_widget(w)
    QApplication.processEvents()  # let the window lay out before screenshots are compared
    w.layer.value = layer
    (copy,) = w.show_3d()
    viewer.reset_view()
    viewer.scene.camera.angles = (0, 30, 60)
    w.axis.value = "x"
    w.position.value = 0.5
    before = viewer.screenshot(canvas_only=True, flash=False)
    angles = tuple(viewer.scene.camera.angles)
    plane = copy.experimental_clipping_planes[0]
    x0 = plane.position[2]
    size = viewer.window._qt_viewer.canvas._scene_canvas.size
    centre = (size[0] / 2, size[1] / 2)
    _drag(viewer, centre, (centre[0] + size[0] / 4, centre[1]), ["Shift"])
    moved = copy.experimental_clipping_planes[0]
    assert w.position.value != pytest.approx(0.5)
    assert moved.position[2] != pytest.approx(x0)
    assert tuple(viewer.scene.camera.angles) == pytest.approx(angles)  # the camera stayed put
    after = viewer.screenshot(canvas_only=True, flash=False)
    # more or less of the tissue shows (the canvas may be re-laid out by a pixel: compare shares)
    assert abs(_tissue_share(after) - _tissue_share(before)) > 0.01
    # tilting: the plane leaves the x axis, the sliders follow
    _drag(viewer, centre, (centre[0], centre[1] + size[1] / 5), ["Shift", "Control"])
    assert w.axis.value == "oblique"
    normal = np.asarray(copy.experimental_clipping_planes[0].normal)
    assert abs(normal[2]) < 0.99 and np.linalg.norm(normal) == pytest.approx(1, abs=1e-6)
    assert tuple(viewer.scene.camera.angles) == pytest.approx(angles)
    # a plain drag still turns the camera
    _drag(viewer, centre, (centre[0] + 60, centre[1] + 20), [])
    assert tuple(viewer.scene.camera.angles) != pytest.approx(angles)


def test_a_lazy_volume_turns_colour_on_a_worker_and_2d_cancels_it(make_napari_viewer, qtbot):
    import dask.array as da

    from napari_histovol._widgets.view3d_widget import COLOUR_SUFFIX, View3DWidget

    vol = _sample_volume()[:, ::2, ::2]
    lazy = da.from_array(vol, chunks=(1,) + vol.shape[1:])
    viewer = make_napari_viewer(show=True)
    layer = viewer.add_image(lazy, rgb=True, name="lazy", scale=(8.0, 1.8, 1.8))
    w = View3DWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.layer.value = layer
    w.show_3d()
    assert not layer.visible  # hidden at once: napari would draw it as a white block
    qtbot.waitUntil(lambda: "lazy" + COLOUR_SUFFIX in viewer.layers, timeout=60000)
    copy = viewer.layers["lazy" + COLOUR_SUFFIX]
    style = w._styles[id(layer)]
    np.testing.assert_array_equal(copy.data, style.indices(vol))
    assert "in colour" in w.progress.status.value
    viewer.dims.ndisplay = 2
    assert layer.visible and "lazy" + COLOUR_SUFFIX not in viewer.layers
    # leaving 3D while the copy is being made: no copy appears later, the layer is back
    w._styles.clear()
    w.show_3d()
    viewer.dims.ndisplay = 2
    qtbot.waitUntil(lambda: w.progress.worker is None, timeout=60000)
    assert layer.visible and [ly.name for ly in viewer.layers] == ["lazy"]


@pytest.mark.parametrize("scale", [(1.0, 1.0, 1.0), (2.0, 0.5, 0.5)])
def test_clip_at_a_share_of_the_volume_cuts_that_share_at_any_pixel_size(make_napari_viewer, scale):
    """napari places clipping planes in world coordinates: a volume in µm (0.5 µm pixels,
    shifted to its first section's z) clipped along y at 0.6 keeps 40 % of its rows, as one in
    pixels does (found by a user: at 0.5 µm the canvas went empty)."""
    from qtpy.QtWidgets import QApplication

    from napari_histovol._widgets.view3d_widget import TILTED_DIRECTION, View3DWidget

    vol = np.full((16, 80, 80), 200, np.uint8)
    viewer = make_napari_viewer(show=True)
    layer = viewer.add_image(
        vol, name="block", scale=scale, translate=(8.0, 3.0, 1.0), contrast_limits=(0, 255)
    )
    viewer.window.resize(1000, 800)
    w = View3DWidget(viewer)
    viewer.window.add_dock_widget(w)
    QApplication.processEvents()
    w.layer.value = layer
    w.show_3d()
    w.rendering.value = "mip"
    direction = tuple(viewer.scene.camera.view_direction)
    assert direction == pytest.approx(TILTED_DIRECTION, abs=1e-6)  # not flat from above
    viewer.reset_view()
    viewer.camera.angles = (0, 0, 0)  # looking down z: rows on the screen are rows of the volume

    def lit_rows():
        w.apply()
        QApplication.processEvents()
        shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
        background = shot[2, 2]
        return int(((np.abs(shot - background).sum(-1) > 40).any(axis=1)).sum())

    w.axis.value = "none"
    whole = lit_rows()
    w.axis.value = "y"
    w.position.value = 0.6
    kept = lit_rows()
    assert whole > 100
    assert kept / whole == pytest.approx(0.4, abs=0.06), (kept, whole)


def _block_tones(viewer) -> tuple[float, float]:
    """The drawn block's darkest tenth (10th percentile) and spread (standard deviation) of
    gray levels on the canvas (pixels brighter than its black background)."""
    from qtpy.QtWidgets import QApplication

    QApplication.processEvents()
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float).mean(-1)
    block = shot[shot > 8]
    return float(np.percentile(block, 10)), float(block.std())


def test_em_in_3d_is_an_opaque_block_not_a_washed_out_projection(make_napari_viewer, shared_data):
    """A gray EM stack (dark membranes on bright cytoplasm) opened in 3D was drawn as a maximum
    projection: the bright background along every ray, a near-white block. Dark-on-bright gray
    is now drawn opaque (its faces show the membranes), fluorescence keeps its maximum
    projection, and a rendering the user picks is kept."""
    import tifffile
    from qtpy.QtWidgets import QApplication

    from napari_histovol._widgets.view3d_widget import View3DWidget

    files = sorted((shared_data / "isbi2012_sstem_train" / "train_image").glob("*.png"))
    em = np.stack([cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)[:256, :256] for f in files[:16]])
    nuclei = tifffile.imread(shared_data / "cells3d_nuclei_3d" / "nuclei.tif")[20:36, ::2, ::2]
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1000, 800)
    block = viewer.add_image(em, name="em", scale=(0.05, 0.004, 0.004))
    cells = viewer.add_image(nuclei, name="nuclei", scale=(0.29, 0.52, 0.52), visible=False)
    w = View3DWidget(viewer)
    viewer.window.add_dock_widget(w)
    QApplication.processEvents()
    w.layer.value = block
    w.show_3d()
    viewer.reset_view()
    assert block.rendering == "translucent"
    dark, spread = _block_tones(viewer)
    w.rendering.value = "mip"  # the user's choice: what it looked like
    dark_mip, spread_mip = _block_tones(viewer)
    # the membranes show: a dark tenth (measured 59 of 255 against 161) and twice the spread
    # of gray levels (47 against 17)
    assert dark < 100 < dark_mip and spread > 2 * spread_mip, (dark, dark_mip, spread, spread_mip)
    viewer.dims.ndisplay = 2
    w.show_3d()
    assert block.rendering == "mip"  # kept
    # fluorescence, in a fresh widget: the maximum projection
    viewer.dims.ndisplay = 2
    block.visible, cells.visible = False, True
    w2 = View3DWidget(viewer)
    w2.layer.value = cells
    w2.show_3d()
    assert cells.rendering == "mip"


def test_show_in_3d_looks_at_the_sections_from_above_at_a_tilt(make_napari_viewer):
    """napari 0.9 changed what camera angles mean, and the angles the tab set looked along the
    sections, 73 degrees off their normal: the lung sample was a thin diagonal sliver in the
    demo and the README (helper's journey). The camera now looks down on the top section,
    tilted enough to see the stack's depth, and the whole block is in the canvas."""
    from qtpy.QtWidgets import QApplication

    from napari_histovol._widgets.view3d_widget import View3DWidget

    vol = np.full((8, 200, 240), 200, np.uint8)
    viewer = make_napari_viewer(show=True)
    layer = viewer.add_image(vol, name="stack", scale=(2.0, 1.0, 1.0), contrast_limits=(0, 255))
    w = View3DWidget(viewer)
    viewer.window.add_dock_widget(w)
    QApplication.processEvents()
    w.layer.value = layer
    w.show_3d()
    QApplication.processEvents()
    direction = np.asarray(viewer.scene.camera.view_direction, dtype=float)
    off_normal = np.degrees(np.arccos(abs(direction[0]) / np.linalg.norm(direction)))
    assert 25 <= off_normal <= 55, off_normal
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    lit = np.abs(shot - shot[2, 2]).sum(-1) > 40
    assert lit.any() and not lit[[0, -1]].any() and not lit[:, [0, -1]].any()  # all in view


def test_show_in_3d_on_a_2d_image_or_with_no_layer_says_so(make_napari_viewer):
    """A helper chose a single 2D image and pressed Show in 3D: an IndexError (napari's own
    2D/3D button raised it too, through the tab); with no layer the button said nothing."""
    from napari_histovol._widgets.view3d_widget import View3DWidget

    viewer = make_napari_viewer(show=True)
    w = View3DWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert w.show_3d() == [] and viewer.dims.ndisplay == 2
    assert "choose it in the 'volume' box" in w.progress.status.value
    flat = viewer.add_image(np.full((60, 80), 120, np.uint8), name="one section")
    w.layer.value = flat
    assert w.show_3d() == [] and viewer.dims.ndisplay == 2
    assert "'one section' is a single 2D image" in w.progress.status.value
    viewer.dims.ndisplay = 3  # napari's own button: no error from the tab
    viewer.dims.ndisplay = 2


def test_z_exaggeration_and_the_clip_reach_the_labels_drawn_in_the_volume(make_napari_viewer):
    """A helper's segmented objects stood 4 times shorter than the volume at a z
    exaggeration of 4, and showed above the clipping plane: both acted on the volume only."""
    from napari_histovol._widgets.view3d_widget import View3DWidget

    vol = np.zeros((8, 60, 80), np.uint8)
    vol[2:6, 20:40, 20:60] = 200
    labels = (vol > 0).astype(np.uint8)
    viewer = make_napari_viewer(show=True)
    image = viewer.add_image(vol, name="stack", scale=(5.0, 2.0, 2.0))
    objects = viewer.add_labels(labels, name="objects", scale=(5.0, 2.0, 2.0))
    w = View3DWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.layer.value = image
    w.show_3d()
    w.z_exaggeration.value = 4.0
    w.axis.value = "y"
    w.position.value = 0.35
    assert tuple(image.scale) == (20.0, 2.0, 2.0) and tuple(objects.scale) == (20.0, 2.0, 2.0)
    img_planes = [p.dict() for p in image.experimental_clipping_planes]
    lab_planes = [p.dict() for p in objects.experimental_clipping_planes]
    assert img_planes and lab_planes == img_planes
    viewer.dims.ndisplay = 2
    assert tuple(objects.scale) == (5.0, 2.0, 2.0) and not objects.experimental_clipping_planes
