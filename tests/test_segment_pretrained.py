"""The optional pretrained backend (`histovol segment --model FOLDER`), driven end to end with a
tiny randomly initialised nnInteractive model of the official checkpoint's interface.

The tiny model's masks mean nothing, so the ground truth here is what the backend hands the
network (which window of the volume, which clicks in window coordinates and in which order,
which scribbles as positive or negative) and what it does with the masks that come back (pasted
where they belong, objects kept apart, the licence shown).
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_histovol.core.errors import InputError
from napari_histovol.core.io import read_volume
from napari_histovol.core.segment import load_pretrained

from .conftest import histovol
from .tiny_nninteractive import make_tiny_model

PATCH = 64  # the tiny model's patch: the window reaches this far around an object's prompts


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture
def spy(monkeypatch):
    """Record what nnInteractive's session is given, calling through to the real one."""
    from nnInteractive.inference.inference_session import nnInteractiveInferenceSession as S

    calls: dict[str, list] = {"images": [], "targets": [], "points": [], "scribbles": []}
    real = {n: getattr(S, n) for n in ("set_image", "set_target_buffer")}
    real_point, real_scribble = S.add_point_interaction, S.add_scribble_interaction

    def set_image(self, image, *a, **k):
        calls["images"].append(np.array(image))
        return real["set_image"](self, image, *a, **k)

    def set_target_buffer(self, target):
        calls["targets"].append(target)  # filled in place by every prediction
        return real["set_target_buffer"](self, target)

    def add_point(self, coordinates, include_interaction, **k):
        calls["points"].append((len(calls["targets"]) - 1, tuple(coordinates), include_interaction))
        return real_point(self, coordinates, include_interaction, **k)

    def add_scribble(self, image, include_interaction, **k):
        calls["scribbles"].append((len(calls["targets"]) - 1, np.array(image), include_interaction))
        return real_scribble(self, image, include_interaction, **k)

    monkeypatch.setattr(S, "set_image", set_image)
    monkeypatch.setattr(S, "set_target_buffer", set_target_buffer)
    monkeypatch.setattr(S, "add_point_interaction", add_point)
    monkeypatch.setattr(S, "add_scribble_interaction", add_scribble)
    return calls


def _gray_volume(shape=(14, 200, 230), seed=1) -> np.ndarray:
    """Bright blobs on a noisy background, uint16."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape, dtype=np.float32)
    vol = rng.normal(800, 60, shape)
    for cz, cy, cx, r in [(7, 150, 170, 14), (6, 120, 150, 10), (8, 40, 40, 12)]:
        vol += 2500 * np.exp(-(((z - cz) * 3) ** 2 + (y - cy) ** 2 + (x - cx) ** 2) / (2 * r * r))
    return np.clip(vol, 0, 65535).astype(np.uint16)


def _window_origin(points, shape):
    pts = np.asarray(points)
    return np.maximum(pts.min(axis=0) - PATCH, 0), np.minimum(pts.max(axis=0) + PATCH + 1, shape)


@pytest.mark.parametrize("name", ["labels.tif", "labels.ome.zarr"])
def test_cli_model_gets_the_window_and_clicks_and_its_mask_lands_in_place(
    tmp_path, tiny_model, spy, capsys, name
):
    import tifffile

    vol = _gray_volume()
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, vol, photometric="minisblack")
    scale = ("--pixel-size", "0.5", "--section-spacing", "2")
    if name.endswith(".ome.zarr"):  # the README's example: an OME-Zarr volume in and out
        assert histovol("convert", src, tmp_path / "vol.ome.zarr", *scale, "--quiet") == 0
        src, scale = tmp_path / "vol.ome.zarr", ()
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("z,y,x,object,positive\n7,150,170,1,1\n7,120,150,1,0\n")
    out = tmp_path / name
    args = ["segment", src, out, "--prompts", prompts, "--model", tiny_model]
    assert histovol(*args, "--quiet", *scale) == 0
    printed = capsys.readouterr().out
    assert "licence: CC0-1.0 (a test model)" in printed and "nnInteractive" in printed
    assert "session initialized" not in printed  # the package's own prints are kept off

    lo, hi = _window_origin([(7, 150, 170), (7, 120, 150)], vol.shape)
    assert tuple(lo) == (0, 56, 86) and tuple(hi) == (14, 200, 230)
    (image,) = spy["images"]
    assert image.shape == (1, *(hi - lo))  # one channel, the window only
    np.testing.assert_array_equal(image[0], vol[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]])
    # clicks in window coordinates, in file order, positive then negative
    assert spy["points"] == [(0, (7, 94, 84), True), (0, (7, 64, 64), False)]

    (target,) = spy["targets"]
    assert 0 < target.sum() < target.size  # the network did predict something
    lab = read_volume(out)
    labels = np.asarray(lab.data)
    expected = np.zeros(vol.shape, labels.dtype)
    expected[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = target > 0
    np.testing.assert_array_equal(labels, expected)
    assert tuple(lab.meta.scale) == (2.0, 0.5, 0.5) and lab.meta.unit == "micrometer"
    assert f"{int(expected.sum())}" in printed  # the voxel count of object 1


def test_objects_are_segmented_one_at_a_time_kept_apart_with_scribbles(tmp_path, tiny_model, spy):
    from napari_histovol.core.segment import Prompt, Scribbles, segment_volume
    from napari_histovol.core.segment.volume import as_volume

    vol = _gray_volume()
    prompts = [Prompt(7, 150, 170, 1, True), Prompt(6, 120, 150, 2, True)]
    scribbled = {
        1: np.array([[7, 150, 160], [7, 150, 161]]),  # object 1's own: positive for it only
        9: np.array([[3, 100, 120]]),  # named by no click: background for every object
    }
    result = segment_volume(
        as_volume(vol), prompts, scribbles=Scribbles(scribbled), model=load_pretrained(tiny_model)
    )
    assert len(spy["targets"]) == 2  # one session image and target per object
    assert [(t, c, inc) for t, c, inc in spy["points"]] == [
        (0, (7, 64, 74), True),  # object 1: its click and scribble widened, from (0, 86, 96)
        (1, (6, 64, 64), True),  # object 2: window from (0, 56, 86)
    ]
    given = [(t, tuple(map(tuple, np.argwhere(img))), inc) for t, img, inc in spy["scribbles"]]
    assert given == [
        (0, ((7, 64, 64), (7, 64, 65)), True),
        (0, ((3, 14, 24),), False),
        (1, ((3, 44, 34),), False),
    ]
    expected = np.zeros(vol.shape, np.uint16)
    placed = {}
    for k, (z0, y0, x0) in [(2, (0, 56, 86)), (1, (0, 86, 96))]:  # the earlier id wins overlaps
        t = spy["targets"][k - 1]
        placed[k] = np.zeros(vol.shape, bool)
        placed[k][z0 : z0 + t.shape[0], y0 : y0 + t.shape[1], x0 : x0 + t.shape[2]] = t > 0
        expected[placed[k]] = k
    labels = np.asarray(result.labels.data)
    np.testing.assert_array_equal(labels, expected)
    assert result.voxels == {k: int((expected == k).sum()) for k in (1, 2)}
    assert (placed[1] & placed[2]).any()  # the masks overlapped: keeping them apart was tested


def test_rgb_sections_reach_a_one_channel_network_as_luminance(tmp_path, tiny_model, spy):
    from napari_histovol.core.io.meta import VolumeMeta
    from napari_histovol.core.segment import Prompt, segment_volume
    from napari_histovol.core.segment.volume import as_volume

    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 255, (6, 70, 80, 3), dtype=np.uint8)
    meta = VolumeMeta(rgb=True)
    segment_volume(as_volume(rgb, meta), [Prompt(3, 35, 40, 1)], model=load_pretrained(tiny_model))
    (image,) = spy["images"]
    lum = rgb @ np.array([0.299, 0.587, 0.114])
    assert image.shape == (1, 6, 70, 80)
    np.testing.assert_allclose(image[0], lum, atol=1e-3)


def test_licence_is_reported_unknown_without_a_licence_file(tmp_path):
    folder = make_tiny_model(tmp_path / "nolicence", licence=None)
    assert load_pretrained(folder).licence.startswith("unknown")


@pytest.mark.parametrize(
    "damage, words",
    [("plans.json", "lacks plans.json"), ("weights", "could not load the model folder")],
)
def test_a_broken_model_folder_is_one_sentence_exit_2_nothing_written(
    tmp_path, tiny_model, capsys, damage, words
):
    import shutil

    import tifffile

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    if damage == "plans.json":
        (folder / "plans.json").unlink()
    else:
        (folder / "fold_0" / "checkpoint_final.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match=words.split()[0]):
        load_pretrained(folder)
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, _gray_volume((5, 40, 40)), photometric="minisblack")
    prompts = tmp_path / "p.csv"
    prompts.write_text("z,y,x,object,positive\n2,20,20,1,1\n")
    out = tmp_path / "out.tif"
    capsys.readouterr()
    assert histovol("segment", src, out, "--prompts", prompts, "--model", folder) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("histovol: error:") and "\n" not in err and words in err
    assert "--model" in err and not out.exists()


@pytest.mark.gui
def test_segment_widget_with_a_model_folder_segments_each_click_in_3d(
    make_napari_viewer, qtbot, tiny_model, spy, tmp_path
):
    """In the Segment tab, a model folder chosen: a click is segmented by the network (its
    window, its clicks), the mask lands in the objects layer at the image's scale, the licence
    is shown, a second click refines the same object, and clearing the folder goes back to the
    weight-free method."""
    from napari_histovol._widgets.segment_widget import SegmentWidget
    from napari_histovol.core.io import read_volume

    vol = _gray_volume()
    viewer = make_napari_viewer(show=True)
    image = viewer.add_image(vol, scale=(2, 0.5, 0.5), units="micrometer", name="stack")
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.layer.value = image
    w.start()
    w.model_path.value = str(tiny_model)
    assert "nnInteractive" in w.info.value
    w.points.add([7, 150, 170])
    qtbot.waitUntil(lambda: w.progress.worker is None and not w._dirty, timeout=60000)
    assert "licence: CC0-1.0 (a test model)" in w.info.value
    assert spy["points"] == [(0, (7, 64, 64), True)]

    def placed(k: int) -> np.ndarray:
        t = spy["targets"][k]
        out = np.zeros(vol.shape, bool)
        out[:, 86:, 106:] = t[:, : 200 - 86, : 230 - 106] > 0
        return out

    labels = np.asarray(w.objects.data)
    np.testing.assert_array_equal(labels == 1, placed(0))
    assert w.table.data.to_list()[0][:2] == [1, int(placed(0).sum())]

    # a negative click on the same object: the object is segmented again from both clicks
    w.negative.value = True
    w.points.add([7, 160, 180])
    qtbot.waitUntil(lambda: w.progress.worker is None and not w._dirty, timeout=60000)
    assert spy["points"][1:] == [(1, (7, 64, 64), True), (1, (7, 74, 74), False)]
    np.testing.assert_array_equal(np.asarray(w.objects.data) == 1, placed(1))

    out = tmp_path / "objects.ome.zarr"
    w.output.value = str(out)
    w.write_labels()
    qtbot.waitUntil(lambda: w.progress.worker is None, timeout=20000)
    np.testing.assert_array_equal(np.asarray(read_volume(out).data), np.asarray(w.objects.data))

    w.model_path.value = ""
    assert "weight-free" in w.info.value


def test_the_same_clicks_give_the_same_masks(tmp_path, tiny_model):
    """nnInteractive places some refinement boxes at random; the backend seeds them, so a run
    is reproducible (a user's second run gave 885 550 voxels of difference before)."""
    from napari_histovol.core.segment import Prompt, segment_volume
    from napari_histovol.core.segment.volume import as_volume

    vol = _gray_volume()
    prompts = [Prompt(7, 150, 170, 1, True), Prompt(7, 120, 150, 1, False)]
    model = load_pretrained(tiny_model)
    runs = [np.asarray(segment_volume(as_volume(vol), prompts, model=model).labels.data)]
    state = np.random.get_state()  # noqa: NPY002 (what the backend must give back)
    runs.append(np.asarray(segment_volume(as_volume(vol), prompts, model=model).labels.data))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert runs[0].any()
    kept = np.random.get_state()  # noqa: NPY002
    assert kept[1].tolist() == state[1].tolist()  # the caller's state is given back
