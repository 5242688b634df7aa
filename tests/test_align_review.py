"""Alignment review (issue 13, points 2-4) against ground truth we control: a QC that flags a
section we mis-registered and not a well-aligned section of another stain, landmark
corrections that recover a transform we perturbed, and points carried into the aligned frame
and back."""

import subprocess
import sys
import warnings

import cv2
import numpy as np
import pytest

from napari_histovol.core.align import align
from napari_histovol.core.align.landmarks import (
    correct_section,
    fit_correction,
    fold_correction,
    propagation_weights,
)
from napari_histovol.core.align.points import carry_points
from napari_histovol.core.align.quality import assess_alignment
from napari_histovol.core.align.transforms import SectionTransform, load_transforms
from napari_histovol.core.errors import InputError

from .test_align import SAMPLE, he_section, moved, rigid, stack_volume

CANVAS = (200, 240)


def restain(img):
    """The same tissue in another 'stain': hue turned, contrast curve changed."""
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0].astype(int) + 60) % 180
    out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).astype(float) / 255
    return np.clip(255 * out**1.8, 0, 255).astype(np.uint8)


def test_qc_flags_the_misregistered_section_not_the_other_stain():
    img = he_section(256)
    rng = np.random.default_rng(3)
    jit = [rigid(rng.uniform(-4, 4), *rng.uniform(-6, 6, 2), img.shape[:2]) for _ in range(6)]
    planes = [moved(img, j, rng) for j in jit]
    planes[2] = restain(planes[2])  # aligned like the others, but another stain
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vol = stack_volume(planes)
        res = align(vol, method="rigid", reg_size=256)
    assert res.flagged_z == [], res.qc["pairs"]
    assert all(p["residual_px"] < 1.0 for p in res.qc["pairs"])
    # mis-register section 4 by 9 px: the two pairs it is in are flagged, the stain is not
    bad = list(res.transforms)
    bad[4] = SectionTransform(bad[4].matrix @ np.array([[1, 0, 9.0], [0, 1, 0], [0, 0, 1]]))
    rows = assess_alignment(vol, bad, reg_size=256)
    flagged = [(r["index_a"], r["index_b"]) for r in rows if r["flags"]]
    assert flagged == [(3, 4), (4, 5)], rows
    assert all("misaligned" in r["flags"] for r in rows if r["flags"])
    for r in rows:
        if (r["index_a"], r["index_b"]) in flagged:
            assert abs(r["residual_px"] - 9.0) < 1.0  # it measures the error, in pixels
        else:
            assert r["residual_px"] < 1.0 and r["confidence"] > 0.8


def _stack_transforms(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return [
        SectionTransform(rigid(rng.uniform(-5, 5), *rng.uniform(-8, 8, 2), CANVAS))
        for _ in range(n)
    ]


def _grid_points(k=6):
    ys, xs = np.meshgrid(np.linspace(20, 180, k), np.linspace(20, 220, k), indexing="ij")
    return np.c_[xs.ravel(), ys.ravel()]


def test_affine_landmark_correction_recovers_a_perturbed_transform_and_neighbours_follow():
    truth = _stack_transforms()
    pert = np.array([[1.03, 0.02, -6.0], [-0.015, 0.98, 4.0], [0, 0, 1]])
    given = list(truth)
    for k in (3, 4):  # section 3 went wrong, and section 4, registered to it, with it
        given[k] = SectionTransform(truth[k].matrix @ pert)
    x = _grid_points()  # the same tissue points in the aligned frame
    p = truth[3].aligned_to_source(x)  # where they are on section 3 (its pixels)
    q = truth[2].aligned_to_source(x)  # and on the reference section 2
    res = correct_section(given, 3, p, 2, q, canvas=CANVAS, model="affine")
    np.testing.assert_allclose(res.transforms[3].matrix, truth[3].matrix, atol=1e-6)
    np.testing.assert_allclose(res.transforms[4].matrix, truth[4].matrix, atol=1e-6)
    for k in (0, 1, 2):  # the reference and the sections on its other side stay
        np.testing.assert_allclose(res.transforms[k].matrix, given[k].matrix)
    assert res.before_px.mean() > 1 and res.after_px.max() < 1e-6
    assert res.moved == [3, 4]
    assert len(res.table()) == len(x) and res.table()[0]["before_px"] > 0


def test_correction_is_shared_between_the_reference_and_the_corrected_section():
    w = propagation_weights(7, moving=5, reference=1, keep=[6])
    np.testing.assert_allclose(w, [0, 0, 0.25, 0.5, 0.75, 1, 0])


def test_tps_correction_follows_a_non_affine_error_better_than_affine():
    truth = _stack_transforms(3, seed=1)
    h, w = CANVAS
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    bend = np.stack([4 * np.sin(gy / 40.0), 3 * np.cos(gx / 50.0)]).astype(np.float32)
    given = list(truth)
    given[2] = SectionTransform(truth[2].matrix, bend, 1.0)  # aligned = truth o (x + bend)
    fit_pts = _grid_points(7)
    test_pts = _grid_points(5) + 9.0  # points between the landmarks
    err = {}
    for model in ("affine", "tps"):
        res = correct_section(
            given,
            2,
            truth[2].aligned_to_source(fit_pts),
            1,
            truth[1].aligned_to_source(fit_pts),
            canvas=CANVAS,
            model=model,
        )
        back = res.transforms[2].source_to_aligned(truth[2].aligned_to_source(test_pts))
        err[model] = float(np.linalg.norm(back - test_pts, axis=1).mean())
        assert res.after_px.mean() < res.before_px.mean()
    assert err["tps"] < 0.3 < err["affine"], err


def test_folding_a_correction_into_an_elastic_transform_composes_exactly():
    rng = np.random.default_rng(4)
    fld = cv2.GaussianBlur(rng.normal(0, 3, (2, 50, 60)).transpose(1, 2, 0), (0, 0), 6)
    t = SectionTransform(rigid(3, 2, -1, CANVAS), fld.transpose(2, 0, 1).copy(), 0.25)
    c = fit_correction(_grid_points(), _grid_points() @ [[1.02, 0.01], [-0.01, 0.99]] + [3, -2])
    new = fold_correction(t, c, CANVAS)
    x = _grid_points(4) + 5
    np.testing.assert_allclose(new.aligned_to_source(x), t.aligned_to_source(c(x)), atol=0.05)


def test_landmark_input_errors_are_one_sentence():
    t = _stack_transforms(3)
    with pytest.raises(InputError, match="not paired"):
        correct_section(t, 1, np.zeros((4, 2)), 0, np.zeros((3, 2)), canvas=CANVAS)
    with pytest.raises(InputError, match="at least 3"):
        correct_section(t, 1, np.zeros((2, 2)), 0, np.zeros((2, 2)), canvas=CANVAS)
    line = np.c_[np.arange(5.0), np.arange(5.0)]
    with pytest.raises(InputError, match="one line"):
        correct_section(t, 1, line, 0, line, canvas=CANVAS)
    with pytest.raises(InputError, match="must differ"):
        correct_section(t, 1, line, 1, line, canvas=CANVAS)


def test_points_carried_forward_then_back_return_and_match_the_known_transform():
    truth = _stack_transforms(4, seed=2)
    fld = np.full((2, 20, 24), 1.5, np.float32)
    truth[1] = SectionTransform(truth[1].matrix, fld, 0.1)  # an elastic part too
    rng = np.random.default_rng(5)
    zyx = np.c_[rng.integers(0, 4, 30), rng.uniform(10, 190, 30), rng.uniform(10, 230, 30)]
    aligned = carry_points(zyx, truth)
    for (z, y, x), (z2, ya, xa) in zip(zyx, aligned, strict=True):
        assert z2 == z
        # the known transform sends the aligned point back onto the drawn one
        np.testing.assert_allclose(
            truth[int(z)].aligned_to_source(np.array([[xa, ya]]))[0], [x, y], atol=1e-3
        )
    back = carry_points(aligned, truth, inverse=True)
    np.testing.assert_allclose(back, zyx, atol=1e-3)
    assert np.abs(aligned - zyx).max() > 1  # it did move them


def test_warp_points_cli_inverse_round_trip(tmp_path):
    out = tmp_path / "aligned"
    t_json = tmp_path / "T.json"
    cli = [sys.executable, "-m", "napari_histovol.cli"]
    r = subprocess.run(
        [*cli, "align", str(SAMPLE), str(out), "--method", "rigid", "--reg-size", "128"]
        + ["--transforms", str(t_json), "--quiet"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    pts = tmp_path / "p.csv"
    pts.write_text("name,x,y\na,100.5,200.25\nb,400,300\n")
    fwd, back = tmp_path / "fwd.csv", tmp_path / "back.csv"
    for src, dst, extra in ((pts, fwd, []), (fwd, back, ["--inverse"])):
        r = subprocess.run(
            [*cli, "warp-points", str(t_json), "3", str(src), str(dst), *extra],
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stderr
    tf = load_transforms(t_json)
    got_fwd = np.loadtxt(fwd, delimiter=",", skiprows=1, usecols=(1, 2))
    want = tf.transforms[tf.index_of("3")].source_to_aligned(
        np.array([[100.5, 200.25], [400, 300]])
    )
    np.testing.assert_allclose(got_fwd, want, atol=1e-3)
    assert np.abs(got_fwd - [[100.5, 200.25], [400, 300]]).max() > 0.5
    got = np.loadtxt(back, delimiter=",", skiprows=1, usecols=(1, 2))
    np.testing.assert_allclose(got, [[100.5, 200.25], [400, 300]], atol=1e-3)
    assert back.read_text().splitlines()[1].startswith("a,")
