"""Prompt-based 3D segmentation: objects of known shape and texture in real section texture,
ISBI cells through neighbouring sections, negative clicks, undo, volumes, and the CLI.

Ground truth is made here (ellipsoids we drew, voxels we know) or read from the ISBI 2012
membrane labels in ../shared/data.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_histovol.core.errors import InputError
from napari_histovol.core.io import read_volume
from napari_histovol.core.io.meta import VolumeMeta
from napari_histovol.core.progress import drain
from napari_histovol.core.segment import (
    Prompt,
    SegmentSession,
    object_table_csv,
    prompts_to_csv,
    read_prompts_csv,
    scribbles_from_labels,
    segment_volume,
)
from napari_histovol.core.segment.volume import as_volume

from .conftest import SHARED_DATA, histovol


def dice(a, b) -> float:
    return float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))


def _skin_background(nz: int, ny: int, nx: int) -> np.ndarray:
    """Real H&E texture (skin) as an RGB stack: neighbouring crops of the slide, one per section."""
    import tifffile

    path = SHARED_DATA / "skin_he_2d" / "skin.tif"
    if not path.is_file():
        pytest.skip(f"shared data not found at {path}")
    skin = tifffile.imread(path)
    skin = skin[..., :3] if skin.ndim == 3 else np.stack([skin] * 3, -1)
    y0, x0 = skin.shape[0] // 3, skin.shape[1] // 3
    return np.stack([skin[y0 + 2 * z : y0 + 2 * z + ny, x0 : x0 + nx] for z in range(nz)])


def _ellipsoid(shape, centre, radii) -> np.ndarray:
    zz, yy, xx = np.mgrid[: shape[0], : shape[1], : shape[2]]
    return sum(((g - c) / r) ** 2 for g, c, r in zip((zz, yy, xx), centre, radii, strict=True)) < 1


@pytest.fixture
def he_volume():
    """Two brown (DAB-like) textured ellipsoids (known voxels) embedded in real H&E texture."""
    shape = (20, 72, 88)
    img = _skin_background(*shape).astype(np.float32)
    rng = np.random.default_rng(5)
    a = _ellipsoid(shape, (10, 24, 26), (7, 11, 13))
    b = _ellipsoid(shape, (9, 48, 56), (6, 12, 10))
    stain = np.array([150.0, 95.0, 45.0])
    for m in (a, b):
        tex = ndi.gaussian_filter(rng.normal(0, 1, shape), 1.0)[..., None] * 40
        img[m] = (stain + tex[m]).clip(0, 255)
    return img.clip(0, 255).astype(np.uint8), a, b


def test_centre_clicks_recover_textured_objects_in_real_texture(he_volume):
    img, a, b = he_volume
    res = segment_volume(as_volume(img), [Prompt(10, 24, 26, 1, True), Prompt(9, 48, 56, 2, True)])
    lab = np.asarray(res.labels.data)
    assert lab.shape == img.shape[:3]
    assert dice(lab == 1, a) >= 0.85
    assert dice(lab == 2, b) >= 0.85
    assert set(np.unique(lab)) == {0, 1, 2}  # kept apart, nothing else labelled
    assert res.voxels[1] == int((lab == 1).sum())


def test_gray_uint16_and_float_volumes_give_the_same_object(he_volume):
    img, a, _ = he_volume
    gray = img.astype(np.float32).mean(-1)
    out = []
    for vol in (gray.astype(np.uint16) * 200, gray / 255.0):
        s = SegmentSession(vol)
        s.add_prompt(Prompt(10, 24, 26, 1, True))
        drain(s.iter_segment_object(1))
        m = np.stack([s.object_mask(1, z) for z in range(vol.shape[0])])
        assert dice(m, a) >= 0.8
        out.append(m)
    assert dice(out[0], out[1]) >= 0.97


def test_current_section_is_segmented_at_once_and_matches_the_truth(he_volume):
    img, a, _ = he_volume
    s = SegmentSession(img)
    s.add_prompt(Prompt(10, 24, 26, 1, True))
    m = s.segment_section(1, 10)
    assert dice(m, a[10]) >= 0.85
    assert not m[0].any() and not m[:, 50:].any()


def test_negative_click_removes_a_leak():
    """Two blobs of the same stain joined by a wide bridge: a click on one takes both; a
    negative click on the other removes it."""
    shape = (12, 64, 96)
    rng = np.random.default_rng(1)
    img = ndi.gaussian_filter(rng.random(shape), (0, 2, 2)) * 60 + 40
    a = _ellipsoid(shape, (6, 32, 30), (5, 14, 14))
    b = _ellipsoid(shape, (6, 32, 64), (5, 14, 14))
    bridge = _ellipsoid(shape, (6, 32, 47), (5, 11, 10))
    fg = a | b | bridge
    img[fg] = 190 + rng.normal(0, 10, fg.sum())
    s = SegmentSession(img.astype(np.float32))
    s.add_prompt(Prompt(6, 32, 30, 1, True))
    drain(s.iter_segment_object(1))
    first = np.stack([s.object_mask(1, z) for z in range(shape[0])])
    assert (first & b).sum() > 0.5 * b.sum()  # the leak
    s.add_prompt(Prompt(6, 32, 66, 1, False))
    drain(s.iter_segment_object(1))
    fixed = np.stack([s.object_mask(1, z) for z in range(shape[0])])
    assert (fixed & b).sum() < 0.1 * b.sum()
    assert (fixed & a).sum() > 0.9 * a.sum()
    # undo brings the leak back
    assert s.undo() == Prompt(6, 32, 66, 1, False)
    drain(s.iter_segment_object(1))
    again = np.stack([s.object_mask(1, z) for z in range(shape[0])])
    assert (again & b).sum() > 0.5 * b.sum()


def _isbi(shared_data, nz=8, size=160):
    from PIL import Image

    d = shared_data / "isbi2012_sstem_train"
    img = np.stack(
        [np.asarray(Image.open(p)) for p in sorted((d / "train_image").glob("*.png"))[:nz]]
    )
    lab = np.stack(
        [np.asarray(Image.open(p)) for p in sorted((d / "train_label").glob("*.png"))[:nz]]
    )
    return img[:, :size, :size], lab[:, :size, :size] > 127


def _linked_cell(interior, z0, y, x):
    """The 3D cell through (z0, y, x): its 2D profile, followed to the profile of each next
    section that overlaps it by at least half (the ground truth)."""
    out = np.zeros(interior.shape, bool)
    lz, _ = ndi.label(interior[z0])
    out[z0] = lz == lz[y, x]
    for step in (1, -1):
        z = z0
        while 0 <= z + step < interior.shape[0]:
            lz, _ = ndi.label(interior[z + step])
            ids, n = np.unique(lz[out[z] & (lz > 0)], return_counts=True)
            if not len(ids):
                break
            k = ids[np.argmax(n)]
            cand = lz == k
            if n.max() < 0.5 * min(cand.sum(), out[z].sum()):
                break
            out[z + step] = cand
            z += step
    return out


def test_isbi_click_a_cell_and_get_it_through_neighbouring_sections(shared_data):
    img, interior = _isbi(shared_data)
    dist = ndi.distance_transform_edt(interior[4])
    lz, _ = ndi.label(interior[4])
    # the widest cell profile of section 4 that does not touch the border
    best = None
    for k in range(1, lz.max() + 1):
        m = lz == k
        ys, xs = np.nonzero(m)
        if ys.min() == 0 or xs.min() == 0 or ys.max() == 159 or xs.max() == 159:
            continue
        d = np.where(m, dist, 0)
        if best is None or d.max() > best[0]:
            best = (d.max(), np.unravel_index(np.argmax(d), d.shape))
    y, x = (int(v) for v in best[1])
    gt = _linked_cell(interior, 4, y, x)
    assert gt.any(axis=(1, 2)).sum() >= 3
    s = SegmentSession(img)
    s.add_prompt(Prompt(4, y, x, 1, True))
    drain(s.iter_segment_object(1))
    pred = np.stack([s.object_mask(1, z) for z in range(img.shape[0])])
    assert dice(pred, gt) >= 0.7
    spanned = [z for z in range(img.shape[0]) if gt[z].any()]
    for z in spanned:  # followed into every neighbouring section the cell is in
        assert dice(pred[z], gt[z]) >= 0.5, z


def test_prompts_csv_round_trip_and_errors(tmp_path):
    prompts = [Prompt(1, 2, 3, 1, True), Prompt(4, 5, 6, 2, False)]
    p = tmp_path / "p.csv"
    p.write_text(prompts_to_csv(prompts))
    assert read_prompts_csv(p) == prompts
    p.write_text("x,y,z,object\n1,2,3,1\n")
    with pytest.raises(InputError, match="positive"):
        read_prompts_csv(p)
    p.write_text("z,y,x,object,positive\n1,2,a,1,1\n")
    with pytest.raises(InputError, match="Row 2"):
        read_prompts_csv(p)
    s = SegmentSession(np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(InputError, match="outside the volume"):
        s.add_prompt(Prompt(3, 0, 0, 1, True))


def test_scribbles_alone_segment_and_background_labels_block(he_volume):
    img, a, b = he_volume
    scrib = np.zeros(img.shape[:3], np.uint8)
    scrib[10, 22:27, 20:32] = 1  # object 1
    scrib[9, 46:51, 52:60] = 2  # object 2
    s = scribbles_from_labels(scrib, img.shape)
    assert s.labels == [1, 2]
    res = segment_volume(as_volume(img), [], scribbles=s)
    lab = np.asarray(res.labels.data)
    assert dice(lab == 1, a) >= 0.8 and dice(lab == 2, b) >= 0.8
    # with clicks naming only object 1, label 2 is background: object 2 is not segmented
    res = segment_volume(as_volume(img), [Prompt(10, 24, 26, 1, True)], scribbles=s)
    lab = np.asarray(res.labels.data)
    assert set(np.unique(lab)) == {0, 1} and (lab[b] == 0).all()


def test_object_volumes_in_cubic_micrometres(he_volume):
    img, a, _ = he_volume
    meta = VolumeMeta(rgb=True).with_scale(pixel_size=0.5, section_spacing=4.0)
    res = segment_volume(as_volume(img, meta), [Prompt(10, 24, 26, 1, True)])
    rows = res.volumes()
    assert rows[0]["volume_um3"] == pytest.approx(rows[0]["voxels"] * 0.5 * 0.5 * 4.0)
    assert rows[0]["volume_um3"] == pytest.approx(a.sum() * 1.0, rel=0.15)
    assert object_table_csv(rows).splitlines()[0] == "object,voxels,volume_um3"


# ---------------------------------------------------------------------------------- CLI


@pytest.fixture
def cli_input(tmp_path, he_volume):
    import tifffile

    img, a, b = he_volume
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, img, photometric="rgb")
    prompts = tmp_path / "prompts.csv"
    prompts.write_text("z,y,x,object,positive\n10,24,26,1,1\n9,48,56,2,1\n")
    return src, prompts, a, b


@pytest.mark.parametrize("name", ["labels.ome.zarr", "labels.tif"])
def test_cli_writes_labels_in_every_format_with_the_scale(tmp_path, cli_input, name, capsys):
    src, prompts, a, b = cli_input
    out = tmp_path / name
    args = ["segment", src, out, "--prompts", prompts, "--quiet"]
    assert histovol(*args) == 0
    assert "µm³" not in capsys.readouterr().out  # pixel scale: volumes in voxels
    vol = read_volume(out)
    lab = np.asarray(vol.data)
    assert lab.shape == a.shape and np.issubdtype(lab.dtype, np.integer)
    assert dice(lab == 1, a) >= 0.85 and dice(lab == 2, b) >= 0.85
    assert histovol(*args) == 2  # exists: not replaced without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert histovol(*args, "--overwrite") == 0


def test_cli_keeps_physical_scale(tmp_path, cli_input, capsys):
    src, prompts, a, _ = cli_input
    scaled = tmp_path / "scaled.ome.zarr"
    assert (
        histovol("convert", src, scaled, "--pixel-size", 0.5, "--section-spacing", 2, "--quiet")
        == 0
    )
    out = tmp_path / "lab.ome.zarr"
    capsys.readouterr()
    assert histovol("segment", scaled, out, "--prompts", prompts, "--quiet") == 0
    assert "µm³" in capsys.readouterr().out
    vol = read_volume(out)
    assert vol.meta.scale == pytest.approx((2.0, 0.5, 0.5))
    assert vol.meta.unit == "micrometer"


def test_cli_scribbles(tmp_path, cli_input):
    import tifffile

    src, _, a, _ = cli_input
    scrib = np.zeros(a.shape, np.uint8)
    scrib[10, 22:27, 20:32] = 1
    sp = tmp_path / "scribbles.tif"
    tifffile.imwrite(sp, scrib)
    out = tmp_path / "lab.tif"
    assert histovol("segment", src, out, "--scribbles", sp, "--quiet") == 0
    assert dice(np.asarray(read_volume(out).data) == 1, a) >= 0.8


@pytest.mark.parametrize(
    "case, words",
    [
        ("outside", "outside the volume"),
        ("bad_csv", "lacks the column"),
        ("no_prompts", "Nothing to segment"),
        ("png_out", "Cannot write"),
        ("missing_model", "does not exist"),
        ("micro_sam_file", "micro-sam checkpoint"),
        ("model_is_a_file", "give the nnInteractive model folder"),
        ("scribble_shape", "shape"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_nothing_left(tmp_path, cli_input, capsys, case, words):
    import tifffile

    src, prompts, _, _ = cli_input
    out = tmp_path / "out.ome.zarr"
    extra = ["--prompts", prompts]
    if case == "outside":
        prompts.write_text("z,y,x,object,positive\n99,1,1,1,1\n")
    elif case == "bad_csv":
        prompts.write_text("a,b\n1,2\n")
    elif case == "no_prompts":
        extra = []
    elif case == "png_out":
        out = tmp_path / "out.png"
    elif case == "missing_model":
        extra += ["--model", tmp_path / "sam_vit_b.pt"]
    elif case == "micro_sam_file":
        ckpt = tmp_path / "vit_b_lm.pt"
        ckpt.write_bytes(b"not really")
        extra += ["--model", ckpt]
    elif case == "model_is_a_file":
        ckpt = tmp_path / "nnInteractive_v1.0.zip"
        ckpt.write_bytes(b"PK not unpacked")
        extra += ["--model", ckpt]
    elif case == "scribble_shape":
        sp = tmp_path / "s.tif"
        tifffile.imwrite(sp, np.zeros((3, 8, 8), np.uint8))
        extra = ["--scribbles", sp]
    before = set(tmp_path.iterdir())
    capsys.readouterr()
    assert histovol("segment", src, out, *extra, "--quiet") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("histovol: error:") and "\n" not in err and "Traceback" not in err
    assert words in err
    assert set(tmp_path.iterdir()) == before  # nothing written, not even a temporary


def test_written_labels_stay_labels_through_convert_and_open_as_labels(tmp_path, cli_input):
    """Labels are marked as labels (NGFF image-label): their pyramid levels pick pixels instead
    of averaging ids, they carry no image display range, and they read back as labels."""
    from napari_histovol._layers import volume_to_layer_data
    from napari_histovol.core.io.meta import is_label_volume

    src, prompts, _, _ = cli_input
    tif = tmp_path / "labels.tif"
    assert histovol("segment", src, tif, "--prompts", prompts, "--quiet") == 0
    lab = read_volume(tif)
    assert is_label_volume(lab.meta) and "contrast_limits" not in lab.meta.extra
    zarr_out = tmp_path / "labels.ome.zarr"
    assert histovol("convert", tif, zarr_out, "--levels", "3", "--quiet") == 0
    vol = read_volume(zarr_out)
    assert is_label_volume(vol.meta)
    full = np.asarray(vol.levels[0])
    for k, level in enumerate(vol.levels[1:], start=1):
        np.testing.assert_array_equal(np.asarray(level), full[:, :: 2**k, :: 2**k])
    import zarr

    attrs = dict(zarr.open_group(str(zarr_out), mode="r").attrs)
    ome = attrs.get("ome", attrs)
    assert "image-label" in ome and ome["multiscales"][0]["type"] == "nearest"
    (layer,) = volume_to_layer_data(vol, name="labels")
    assert layer[2] == "labels" and "contrast_limits" not in layer[1]
