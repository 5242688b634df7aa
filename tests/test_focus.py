"""Focus metrics against blur we applied ourselves, a focus stack with a known focal plane, the
metric registry, tile bounds, and a training split whose disjointness we can see pixel by pixel."""

import subprocess
import sys

import cv2
import dask.array as da
import numpy as np
import pytest
import tifffile

from napari_histovol.core.errors import InputError, OutputError
from napari_histovol.core.focus import (
    CLASSICAL_METRICS,
    DEFAULT_METRIC,
    METRICS,
    REGISTRY,
    best_plane,
    focus_map,
    iter_focus_stack,
    score,
)
from napari_histovol.core.io.meta import VolumeMeta
from napari_histovol.core.io.volume import Volume
from napari_histovol.core.progress import drain


@pytest.fixture(scope="module")
def skin(request):
    from .conftest import SHARED_DATA

    path = SHARED_DATA / "skin_he_2d" / "skin.tif"
    if not path.is_file():
        pytest.skip(f"shared data not found at {path}")
    return tifffile.imread(path)


def blur(img, sigma):
    return img if sigma == 0 else cv2.GaussianBlur(img, (0, 0), sigma)


def needs_torch(metric):
    if REGISTRY[metric].learned:
        pytest.importorskip("torch")


@pytest.mark.parametrize("metric", METRICS)
def test_every_metric_ranks_sharper_above_blurrier(skin, metric):
    needs_torch(metric)
    scores = [score(blur(skin, s), metric) for s in (0, 1.0, 2.0, 4.0)]
    assert all(a > b for a, b in zip(scores, scores[1:], strict=False)), scores
    gray16 = cv2.cvtColor(skin, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257
    s16 = [score(blur(gray16, s), metric) for s in (0, 2.0)]
    assert s16[0] > s16[1]


@pytest.mark.parametrize("metric", ["laplacian", "tenengrad", "brenner"])
def test_focus_map_finds_the_blurred_tiles(skin, metric):
    img = skin.copy()
    t = 160
    img[t : 3 * t, 2 * t : 4 * t] = blur(skin, 3.0)[t : 3 * t, 2 * t : 4 * t]  # 2x2 tiles, known
    fm = focus_map(img, tile=t, metric=metric)
    blurred = np.zeros(fm.scores.shape, bool)
    blurred[1:3, 2:4] = True
    assert fm.flags[blurred].sum() >= 3
    assert not fm.flags[~blurred].any()
    assert fm.scores[blurred].max() < np.median(fm.scores[~blurred & (fm.tissue > 0.5)])


def test_best_plane_of_a_focus_stack_to_sub_step_accuracy(skin):
    gray = cv2.cvtColor(skin[200:712, 300:812], cv2.COLOR_RGB2GRAY)
    focus = 6.3
    planes = [blur(gray, 0.6 * abs(z - focus) + 0.3) for z in range(13)]
    for metric in ("laplacian", "tenengrad", "brenner"):
        k, sub = best_plane([score(p, metric) for p in planes])
        assert k == 6
        assert abs(sub - focus) < 0.3 and abs(sub - focus) < abs(k - focus), (metric, sub)


def test_stack_report_uses_z_numbers_and_flags_blurry_sections(skin):
    gray = cv2.cvtColor(skin[:512, :512], cv2.COLOR_RGB2GRAY)
    planes = [gray] * 9
    planes[4] = blur(gray, 4.0)
    arr = np.stack(planes)
    zs = tuple(range(10, 28, 2))
    vol = Volume(da.from_array(arr, chunks=(1, 512, 512)), VolumeMeta(z_numbers=zs).with_planes(9))
    rep = drain(iter_focus_stack(vol, tile=128))
    assert rep["flagged_z"] == [18]
    assert rep["worst_plane"] == 18
    assert len(rep["planes"][0]["tiles"]["scores"]) == 4


def test_generated_planes_are_scored_but_not_judged(skin):
    """A built volume's interpolated plane was flagged blurry and was the 'blurriest' to go
    to (helper's journey); a measured blurred section still is."""
    gray = cv2.cvtColor(skin[:512, :512], cv2.COLOR_RGB2GRAY)
    planes = [gray] * 9
    planes[2] = blur(gray, 5.0)  # a generated plane (blurrier than any)
    planes[6] = blur(gray, 3.0)  # a measured section out of focus
    syn = tuple(i == 2 for i in range(9))
    meta = VolumeMeta(z_numbers=tuple(range(9)), synthetic=syn).with_planes(9)
    vol = Volume(da.from_array(np.stack(planes), chunks=(1, 512, 512)), meta)
    rep = drain(iter_focus_stack(vol, tile=128))
    assert rep["flagged_z"] == [6] and rep["worst_plane"] == 6
    assert rep["planes"][2]["synthetic"] and not rep["planes"][2]["out_of_focus"]
    assert rep["planes"][2]["robust_z"] is None
    assert rep["planes"][2]["tiles"]["flagged"] == 0


@pytest.mark.parametrize(
    "img",
    [
        np.zeros((64, 64), np.uint8),
        np.full((64, 64), 200, np.uint16),
        np.full((64, 64, 3), 255, np.uint8),
        np.zeros((5, 5), np.float32),
    ],
)
def test_blank_and_constant_images_score_zero_not_nan(img):
    for metric in CLASSICAL_METRICS:
        s = score(img, metric)
        assert np.isfinite(s) and s == pytest.approx(0, abs=1e-9)
    if min(img.shape[:2]) >= 16:
        fm = focus_map(img, tile=16)
        assert np.isfinite(fm.scores).all() and not fm.flags.any()
    else:  # no tile fits: one sentence, not a map of padding
        with pytest.raises(InputError, match="smaller than the smallest tile") as e:
            focus_map(img, tile=16)
        assert e.value.option == "tile"


def test_cli_focus_json(tmp_path, make_sections):
    import json

    from napari_histovol.cli import main

    folder, truth = make_sections(zs=(1, 2, 3, 4, 5), shape=(96, 96), rgb=True)
    # blur section 3 hard
    import imagecodecs

    p = folder / "sec_003.png"
    p.write_bytes(imagecodecs.png_encode(blur(imagecodecs.png_decode(p.read_bytes()), 3.0)))
    assert (
        main(["focus", str(folder), "--json", str(tmp_path / "f.json"), "--quiet", "--tile", "32"])
        == 0
    )
    rep = json.loads((tmp_path / "f.json").read_text())
    assert rep["worst_plane"] == 3 and "best_plane_subframe" in rep
    assert [p["z"] for p in rep["planes"]] == [1, 2, 3, 4, 5]
    # the flags feed the interpolation's damaged-section replacement
    rep["flagged_z"] = [3]
    (tmp_path / "f.json").write_text(json.dumps(rep))
    assert (
        main(
            [
                "interpolate",
                str(folder),
                str(tmp_path / "fixed"),
                "--replace-flagged",
                str(tmp_path / "f.json"),
                "--quiet",
            ]
        )
        == 0
    )
    assert (tmp_path / "fixed" / "synthetic.txt").read_text().split() == ["sec_003.png"]


def test_shipped_regressor_on_held_out_synthetic_defocus(skin):
    """Held out: the right third of the skin image (training used the left two thirds).
    Bound: a constant guess of the mean over uniform 0-8 um has MAE 2.0 um; the model must be
    far better than that (< 1.0 um) and order sharp before blurred."""
    pytest.importorskip("torch")
    from napari_histovol.core.focus import (
        PATCH,
        Optics,
        defocus,
        focus_channel,
        image_patches,
        predict_focus_distance,
    )

    rng = np.random.default_rng(11)
    gray = focus_channel(skin[:, 2 * skin.shape[1] // 3 :])
    pats, _ = image_patches(gray, stride=48)
    pats = pats[pats.std(axis=(1, 2)) > 0.05]
    idx = rng.choice(len(pats), 200)
    d = rng.uniform(0, 8, 200)
    x = np.stack(
        [
            defocus(np.pad(pats[i], 8, mode="reflect"), float(t), Optics(), rng)[
                8 : 8 + PATCH, 8 : 8 + PATCH
            ]
            for i, t in zip(idx, d, strict=True)
        ]
    )
    pred = predict_focus_distance(x)
    mae = float(np.abs(pred - d).mean())
    assert mae < 1.0, mae
    assert np.corrcoef(pred, d)[0, 1] > 0.9


def test_model_metric_in_the_stack_report(skin):
    pytest.importorskip("torch")
    gray = cv2.cvtColor(skin[200:584, 300:684], cv2.COLOR_RGB2GRAY)
    planes = np.stack([gray, blur(gray, 3.0), gray])
    vol = Volume(da.from_array(planes, chunks=(1, 384, 384)), VolumeMeta().with_planes(3))
    rep = drain(iter_focus_stack(vol, metric="model", tile=128))
    d = [p["defocus_um"] for p in rep["planes"]]
    assert d[1] > d[0] + 1 and d[1] > d[2] + 1
    assert rep["worst_plane"] == 1 and len(rep["planes"][0]["tiles"]["scores"]) == 3
    assert not rep["model_estimates_flat"]


def test_the_model_says_so_when_its_estimates_do_not_change_across_a_stack(shared_data, capsys):
    """On DFNN's light-sheet stack (not what the model learned from) it estimated 5.25-5.27
    µm for all 34 planes and picked a plane 10 frames from focus without a word."""
    pytest.importorskip("torch")
    from napari_histovol.core.errors import HistovolWarning
    from napari_histovol.core.io import read_volume
    from napari_histovol.core.io.meta import planes_of

    from .conftest import histovol

    folder = shared_data / "dfnn_defocus" / "mitochondria"
    vol = read_volume(folder)
    pick = list(range(8, 24, 3))  # six planes around focus (frame 51 is index 19)
    few = Volume(vol.data[pick], planes_of(vol.meta, pick))
    with pytest.warns(HistovolWarning, match="hardly change across the 6 planes"):
        rep = drain(iter_focus_stack(few, metric="model"))
    assert rep["model_estimates_flat"]
    assert histovol("focus", folder, "--metric", "model") == 0
    out = capsys.readouterr()
    assert "not to be trusted" in out.out and "hardly change" in out.err


# --- the metric registry ---------------------------------------------------------------------


def cells(shape=(384, 384), seed=0):
    """A sharp brightfield-like image we draw ourselves: dark disks and lines with crisp edges
    on a bright slide, inside a tissue ellipse."""
    rng = np.random.default_rng(seed)
    h, w = shape
    img = np.full((h, w), 235, np.uint8)
    cv2.ellipse(img, (w // 2, h // 2), (int(0.42 * w), int(0.42 * h)), 0, 0, 360, 190, -1)
    for _ in range(h * w // 400):
        y, x = rng.integers(0, h), rng.integers(0, w)
        cv2.circle(img, (int(x), int(y)), int(rng.integers(2, 7)), int(rng.integers(40, 120)), -1)
    for _ in range(h * w // 4000):
        p, q = rng.integers(0, min(h, w), 2), rng.integers(0, min(h, w), 2)
        cv2.line(img, (int(p[0]), int(p[1])), (int(q[0]), int(q[1])), 90, 1)
    return img


def test_metric_names_come_from_one_table():
    assert METRICS == tuple(REGISTRY) and "model" in METRICS
    assert DEFAULT_METRIC == METRICS[0] == "laplacian"
    assert set(CLASSICAL_METRICS) == set(METRICS) - {"model"}


@pytest.mark.parametrize("metric", METRICS)
def test_every_registered_metric_scores_sharp_above_blurred(metric):
    needs_torch(metric)
    sharp = cells()
    blurred = cv2.GaussianBlur(sharp, (0, 0), 3.0)
    assert score(sharp, metric) > score(blurred, metric) > 0
    # the same through a stack report: the blurred plane is the worst, the sharp one the best
    vol = Volume(da.from_array(np.stack([blurred, sharp, blurred])), VolumeMeta().with_planes(3))
    rep = drain(iter_focus_stack(vol, metric=metric, tile=128))
    assert rep["best_plane"] == 1 and rep["metric"] == metric


def test_unknown_metric_lists_the_registry_before_any_work():
    vol = Volume(exploding_planes(2, (64, 64)), VolumeMeta().with_planes(2))
    with pytest.raises(InputError) as e:
        next(iter_focus_stack(vol, metric="sharpest"))
    assert "'sharpest'" in str(e.value) and e.value.option == "metric"
    assert all(name in str(e.value) for name in METRICS)
    with pytest.raises(InputError, match="model"):
        score(cells((64, 64)), "variance_of_laplace")


# --- tile bounds -------------------------------------------------------------------------------


def exploding_planes(n, shape):
    """A lazy stack whose planes fail the test if anything reads them."""
    from dask import delayed

    def read():
        raise AssertionError("a plane was read before the options were checked")

    return da.stack([da.from_delayed(delayed(read)(), shape, np.uint8) for _ in range(n)])


@pytest.mark.parametrize(
    ("tile", "metric", "words"),
    [
        (100000, "laplacian", ["100000", "600 x 900", "between 8 and 600"]),
        (601, "brenner", ["601", "between 8 and 600"]),
        (4, "laplacian", ["4 px", "smallest", "between 8 and 600"]),
        (0, "spectral", ["0 px", "between 8 and 600"]),
        (32, "model", ["32 px", "64 px", "between 64 and 600"]),
    ],
)
def test_tile_bounds_are_checked_before_any_plane_is_scored(tile, metric, words):
    vol = Volume(exploding_planes(3, (600, 900)), VolumeMeta().with_planes(3))
    with pytest.raises(InputError) as e:
        next(iter_focus_stack(vol, metric=metric, tile=tile))
    msg = str(e.value)
    assert e.value.option == "tile" and msg.count(".") >= 1 and "--" not in msg
    assert all(w in msg for w in words), msg


def test_tiles_that_fit_are_accepted_at_the_bounds():
    img = cells((96, 160))
    assert focus_map(img, tile=8).scores.shape == (12, 20)
    assert focus_map(img, tile=96).scores.shape == (1, 2)
    with pytest.raises(InputError, match="between 8 and 96"):
        focus_map(img, tile=97)


# --- honest validation split ------------------------------------------------------------------


def id_images(n, shape, start=1):
    """Images whose every pixel holds its own number (exact in float32 below 2**24)."""
    size = shape[0] * shape[1]
    return [
        (start + k * size + np.arange(size, dtype=np.float64)).reshape(shape).astype(np.float32)
        for k in range(n)
    ]


def drawn_ids(images, n=300, seed=0):
    """Pixel numbers of the sharp crops training would draw from these images."""
    from napari_histovol.core.focus import FocusDataset, Optics

    ds = FocusDataset(images, Optics(), seed=seed)
    return set(np.concatenate([ds.crop().ravel() for _ in range(n)]).tolist())


def test_split_holds_out_whole_images_of_a_series_and_a_strip_of_a_single_image():
    from napari_histovol.core.focus import split_sources
    from napari_histovol.core.focus.patches import CROP
    from napari_histovol.core.focus.training import GAP

    series = id_images(5, (96, 128))
    single = id_images(1, (200, 400), start=10**6)[0]
    split = split_sources({"series": series, "single": [single]}, val_fraction=0.2)
    # the series: its last image is held out whole, the other four train
    assert [r.image for r in split.val_regions if r.source == "series"] == [4]
    assert [r.image for r in split.train_regions if r.source == "series"] == [0, 1, 2, 3]
    # the single image: a strip along its longer side (x), GAP px from the training part
    (tr,) = [r for r in split.train_regions if r.source == "single"]
    (va,) = [r for r in split.val_regions if r.source == "single"]
    assert (tr.y0, tr.y1, va.y0, va.y1) == (0, 200, 0, 200)
    assert tr.x0 == 0 and va.x0 - tr.x1 == GAP and va.x1 == 400 and va.x1 - va.x0 >= CROP
    # pixel by pixel: what training draws and what validation draws never share a pixel
    train_ids, val_ids = drawn_ids(split.train), drawn_ids(split.val, seed=1)
    assert train_ids and val_ids and not train_ids & val_ids
    strip = set(single[:, va.x0 :].ravel().tolist())
    assert val_ids <= set(series[4].ravel().tolist()) | strip
    assert not train_ids & strip and not train_ids & set(single[:, tr.x1 : va.x0].ravel().tolist())
    assert val_ids & strip  # validation does use the strip


def test_split_refuses_a_single_image_too_small_for_a_strip():
    from napari_histovol.core.focus import split_sources

    with pytest.raises(InputError, match="too small to hold out"):
        split_sources({"one": id_images(1, (100, 150))})


def test_real_stack_patches_are_split_by_a_strip_with_known_distances():
    from napari_histovol.core.focus import PATCH, stack_patches

    plane = id_images(1, (130, 400))[0]  # the same field of view on every plane
    zs = [10, 11, 12, 13, 14]
    train, val, tr, va = stack_patches([plane] * 5, zs, focus_z=12, step_um=0.5)
    assert tr.image is None and va.image is None and va.x0 > tr.x1
    ids = lambda pairs: set(np.concatenate([p.ravel() for p, _ in pairs]).tolist())  # noqa: E731
    assert not ids(train) & ids(val)
    assert all(p.shape == (PATCH, PATCH) for p, _ in train + val)
    assert sorted({d for _, d in train}) == sorted({d for _, d in val}) == [0.0, 0.5, 1.0]
    # a patch's distance is |z - focus| * step, from its own plane
    assert [d for _, d in train[:: len(train) // 5]] == [1.0, 0.5, 0.0, 0.5, 1.0]


def test_train_focus_model_holds_out_disjoint_regions_and_saves_both_files(tmp_path):
    pytest.importorskip("torch")
    from napari_histovol.core.focus import (
        Optics,
        iter_train_focus_model,
        load_model,
        predict_focus_distance,
        save_focus_model,
    )
    from napari_histovol.core.progress import Progress

    sharp = Volume(
        da.from_array(np.stack([cells((128, 128), s) for s in range(5)])),
        VolumeMeta(z_numbers=(1, 2, 3, 4, 5)).with_planes(5),
    )
    stack = Volume(
        da.from_array(np.stack([cells((96, 256), 9)] * 3)),
        VolumeMeta(z_numbers=(7, 8, 9)).with_planes(3),
    )
    gen = iter_train_focus_model(
        sharp,
        optics=Optics(na=0.4),
        steps=3,
        batch=8,
        stack=stack,
        stack_focus_z=8,
        stack_step_um=1.0,
    )
    seen = []
    while True:
        try:
            seen.append(next(gen))
        except StopIteration as stop:
            model, info = stop.value
            break
    assert all(isinstance(p, Progress) for p in seen)
    assert [p.stage for p in seen].count("read") == 8 and seen[-1].stage == "train"
    split = info["split"]
    val_images = [r["image"] for r in split["val"] if r["source"] == "sections"]
    train_images = [r["image"] for r in split["train"] if r["source"] == "sections"]
    assert val_images == [4] and train_images == [0, 1, 2, 3]
    (st_tr,) = [r for r in split["train"] if r["source"] == "stack"]
    (st_va,) = [r for r in split["val"] if r["source"] == "stack"]
    assert st_tr["cols"][1] <= st_va["cols"][0] and st_va["cols"][1] == 256
    assert split["real_patches"]["train"] > 0 and split["real_patches"]["val"] > 0
    assert np.isfinite(info["val_mae_um"]) and info["steps"] == 3

    out = tmp_path / "m.pt"
    path, side = save_focus_model(model, out, optics=Optics(na=0.4), info=info)
    assert path == out and side == tmp_path / "m.json" and out.is_file() and side.is_file()
    loaded, optics = load_model(out)
    assert optics.na == 0.4
    x = np.random.default_rng(0).random((4, 64, 64)).astype(np.float32)
    assert np.allclose(
        predict_focus_distance(x, model_path=out), predict_focus_distance(x, model_path=out)
    )
    # existing outputs are refused, and replaced only with overwrite
    with pytest.raises(OutputError) as e:
        save_focus_model(model, out, optics=Optics(), info=info)
    assert e.value.option == "overwrite"
    out.unlink()  # only the description is left: still refused, and the model is not written
    with pytest.raises(OutputError):
        save_focus_model(model, out, optics=Optics(), info=info)
    assert not out.exists()
    save_focus_model(model, out, optics=Optics(), info=info, overwrite=True)
    assert load_model(out)[1].na == 0.5  # the cache follows the file


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"stack_step_um": 1.0}, "stack_focus_z"),
        ({"stack_focus_z": 3}, "stack_step_um"),
        ({"stack_focus_z": 3, "stack_step_um": 0.0}, "stack_step_um"),
    ],
)
def test_stack_arguments_are_checked_before_reading(kwargs, option):
    from napari_histovol.core.focus import iter_train_focus_model

    sharp = Volume(exploding_planes(2, (128, 128)), VolumeMeta().with_planes(2))
    stack = Volume(exploding_planes(2, (128, 128)), VolumeMeta().with_planes(2))
    with pytest.raises(InputError) as e:
        next(iter_train_focus_model(sharp, stack=stack, steps=1, **kwargs))
    assert e.value.option == option


# --- torch stays optional ----------------------------------------------------------------------


def test_importing_the_focus_package_does_not_import_torch():
    code = (
        "import sys, napari_histovol.core.focus as f; "
        "f.score(__import__('numpy').eye(64), 'laplacian'); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_model_metric_without_torch_is_one_sentence(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    img = cells((128, 128))
    with pytest.raises(InputError, match="PyTorch") as e:
        score(img, "model")
    assert e.value.option == "metric"
    assert score(img, "laplacian") > 0


@pytest.mark.parametrize(
    "name",
    ["isbi", "nuclei", "mitochondria"],
)
def test_default_metric_finds_focus_of_physical_defocus_series_of_shared_sets(shared_data, name):
    """EM, sparse nuclei and filaments defocused with the physical PSF (0.5 µm pixels, NA 0.5,
    -4..+4 µm in 0.5 µm steps, fresh camera noise per frame): the default metric's best plane
    is within one frame of focus (frame 8)."""
    import imageio.v3 as iio

    from napari_histovol.core.focus import DEFAULT_METRIC, Optics, best_plane, defocus, score

    if name == "isbi":
        img = iio.imread(shared_data / "isbi2012_sstem_train" / "train_image" / "07.png")
    elif name == "nuclei":
        img = tifffile.imread(shared_data / "cells3d_nuclei_3d" / "nuclei.tif")[40]
    else:
        files = sorted((shared_data / "dfnn_defocus" / "mitochondria").glob("*.tif"))
        img = tifffile.imread(files[51 - 32])[:512, :512]
    img = img.astype(np.float32)
    lo, hi = np.percentile(img, [0.5, 99.5])
    img = np.clip((img - lo) / (hi - lo), 0, 1)
    rng = np.random.default_rng(5)
    zs = np.arange(-4.0, 4.01, 0.5)
    frames = [defocus(img, float(z), Optics(), rng) for z in zs]
    k, _ = best_plane([score(f, DEFAULT_METRIC) for f in frames])
    assert abs(k - 8) <= 1, (name, k)


def test_the_sub_step_follows_uneven_spacing_beside_a_gap():
    """A focus series with sections 4 and 5 missing (z 1, 2, 3, 6, 7): its parabola was fitted
    as if the planes were evenly spaced and put the peak of a curve peaking at 4.13 at 3.29 (a
    helper's chain). Fitted at the planes' z, a Gaussian focus curve's vertex comes back."""
    zs = [1, 2, 3, 6, 7]
    scores = [np.exp(-((z - 4.13) ** 2) / (2 * 1.5**2)) for z in zs]
    k, sub = best_plane(scores, zs)
    assert zs[k] == 3 and sub == pytest.approx(4.13, abs=1e-6)
    k, sub = best_plane(scores)  # without positions: a fractional index, one step apart
    assert k == 2 and 1.5 <= sub <= 2.5
