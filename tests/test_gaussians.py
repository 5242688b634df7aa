"""3D Gaussian mixtures: evaluation, fitting, the .hgm format, decoding, CLI.

Ground truth is Gaussians placed here, evaluated by brute force over every voxel.
"""

import json

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from napari_histovol.cli import main
from napari_histovol.core import metrics
from napari_histovol.core.errors import InputError
from napari_histovol.core.gaussians import (
    FitConfig,
    GaussianMixture,
    HgmHeader,
    compress,
    decode,
    decompress_array,
    encode,
    fit_report,
    parse_roi,
    plan_blocks,
    render_region,
)
from napari_histovol.core.gaussians.hgm import quantise
from napari_histovol.core.gaussians.mixture import TRUNCATION, quaternion_to_matrix
from napari_histovol.core.gaussians.render_torch import render_torch


def random_mixture(n, shape, rng, sigma=(0.8, 3.0), background=0.0):
    return GaussianMixture(
        rng.uniform(0, 1, (n, 3)) * (np.array(shape) - 1),
        rng.uniform(*sigma, (n, 3)),
        rng.normal(size=(n, 4)),
        rng.uniform(0.2, 1.0, n),
        background,
    )


def brute_force(mix, shape, origin=(0, 0, 0), step=(1, 1, 1)):
    grids = [o + np.arange(n) * s for n, o, s in zip(shape, origin, step, strict=True)]
    pts = np.stack(np.meshgrid(*grids, indexing="ij"), -1)
    out = np.full(shape, float(mix.background))
    for c, cov, a in zip(mix.centres, mix.covariances(), mix.amplitudes, strict=True):
        d = pts - c
        q = np.einsum("...i,ij,...j->...", d, np.linalg.inv(cov), d)
        out += a * np.exp(-0.5 * q) * (q <= TRUNCATION**2)
    return out


def placed_volume(rng, shape=(24, 48, 48), noise=0.004):
    """Six separated anisotropic, rotated Gaussians on a background, 16-bit."""
    centres = np.array(
        [[6, 12, 12], [6, 12, 36], [12, 30, 20], [18, 12, 24], [17, 36, 10], [16, 36, 38]],
        float,
    ) + rng.uniform(-0.4, 0.4, (6, 3))
    scales = np.array(
        [
            [1.5, 2.5, 2.0],
            [2.0, 1.5, 3.0],
            [1.8, 2.2, 2.2],
            [1.4, 3.0, 1.8],
            [2.0, 2.0, 1.5],
            [1.6, 1.6, 2.6],
        ]
    )
    rot = rng.normal(size=(6, 4))
    amps = np.array([0.9, 0.6, 0.75, 0.5, 0.8, 0.65])
    truth = GaussianMixture(centres, scales, rot, amps, 0.1)
    clean = brute_force(truth, shape)
    noisy = clean + rng.normal(0, noise, shape)
    return truth, np.clip(noisy * 40000, 0, 65535).astype(np.uint16)


def test_render_matches_brute_force_and_zoomed_grids():
    rng = np.random.default_rng(0)
    shape = (12, 20, 18)
    mix = random_mixture(8, shape, rng, background=0.25)
    np.testing.assert_allclose(render_region(mix, shape), brute_force(mix, shape), atol=1e-12)
    # Another grid (finer, shifted): the mixture is continuous.
    origin, step = (-0.25, -0.25, -0.25), (0.5, 0.5, 0.5)
    fine = render_region(mix, (24, 40, 36), origin, step)
    np.testing.assert_allclose(fine, brute_force(mix, (24, 40, 36), origin, step), atol=1e-12)


def test_render_costs_footprints_not_voxels():
    """Gaussians far outside a region are never evaluated for it."""
    rng = np.random.default_rng(1)
    mix = random_mixture(50, (40, 400, 400), rng)
    from napari_histovol.core.gaussians.render import select_near

    near = select_near(mix, (0, 0, 0), (39, 99, 99))
    assert 0 < len(near) < 20
    # ... and leaving them out changes nothing.
    part = render_region(mix, (40, 100, 100))
    np.testing.assert_allclose(part, brute_force(mix.subset(near), (40, 100, 100)), atol=1e-12)
    np.testing.assert_allclose(part, brute_force(mix, (40, 100, 100)), atol=1e-12)


def test_custom_backward_matches_autograd():
    torch.manual_seed(1)
    n, shape = 4, (9, 11, 13)
    mu = (torch.tensor([[4.0, 5.0, 6.0]]) + torch.randn(n, 3)).double().requires_grad_()
    s = (torch.rand(n, 3) + 0.8).double().requires_grad_()
    q = torch.randn(n, 4).double().requires_grad_()
    a = torch.rand(n).double().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda *t: render_torch(*t, shape), (mu, s, q, a), eps=1e-6, atol=1e-5
    )


def test_fit_recovers_placed_gaussians():
    rng = np.random.default_rng(2)
    truth, vol = placed_volume(rng)
    res = compress(vol, FitConfig(gaussians=6, iterations=300, init_fraction=1.0, ssim_weight=0))
    got = res.mixture
    assert len(got) == 6
    cost = np.linalg.norm(truth.centres[:, None] - got.centres[None], axis=2)
    rows, cols = linear_sum_assignment(cost)
    assert cost[rows, cols].max() < 0.3  # voxels
    cov_t = truth.covariances()[rows]
    cov_g = got.covariances()[cols]
    # Scales: compare the covariances' axis variances and determinants.
    np.testing.assert_allclose(
        np.linalg.det(cov_g) ** (1 / 6), np.linalg.det(cov_t) ** (1 / 6), rtol=0.1
    )
    amps_t = truth.amplitudes[rows] * 40000
    np.testing.assert_allclose(got.amplitudes[cols], amps_t, rtol=0.1)
    assert abs(got.background - 0.1 * 40000) < 0.02 * 40000
    assert metrics.psnr(vol, decompress_array(res.mixture, res.header).compute()) > 40


def test_file_round_trip_is_exact_up_to_quantisation():
    rng = np.random.default_rng(3)
    shape = (20, 30, 40)
    mix = random_mixture(300, shape, rng, background=100.0)
    mix = GaussianMixture(mix.centres, mix.scales, mix.rotations, mix.amplitudes * 1000, 100.0)
    header = HgmHeader(shape, "uint16", (0.0, 1200.0), (2.0, 0.5, 0.5), "micrometer")
    data = encode(mix, header)
    back, h2 = decode(data)
    q, _ = quantise(mix, shape)
    order = np.lexsort(np.round((q.centres + 0.5) / 0.125).T[::-1])
    for name in ("centres", "scales", "rotations", "amplitudes"):
        np.testing.assert_array_equal(getattr(back, name), getattr(q, name)[order])
    assert h2.shape == shape and h2.voxel_size == (2.0, 0.5, 0.5) and h2.unit == "micrometer"
    assert h2.value_range == (0.0, 1200.0) and back.background == 100.0
    # Quantisation moves centres by at most half a step and keeps the rendering close.
    assert np.abs(np.sort(q.centres, 0) - np.sort(mix.centres, 0)).max() <= 0.0625 + 1e-9
    a, b = render_region(mix, shape), render_region(back, shape)
    # Sharp (sigma 0.8) Gaussians move most per 1/16 voxel: the error stays over 40 dB down.
    assert metrics.psnr(a, b) > 45
    assert len(data) < 15 * len(mix) + 1000  # at most 15 bytes a Gaussian before coding


def test_truncated_foreign_and_damaged_files_are_rejected(tmp_path):
    rng = np.random.default_rng(4)
    mix = random_mixture(50, (10, 20, 20), rng)
    data = encode(mix, HgmHeader((10, 20, 20), "uint8", (0.0, 255.0)))
    for cut in (4, 20, len(data) // 2, len(data) - 1):
        with pytest.raises(InputError, match="truncated|not a histovol"):
            decode(data[:cut], "x.hgm")
    with pytest.raises(InputError, match="not a histovol"):
        decode(b"\x89PNG\r\n\x1a\n" + bytes(100), "x.hgm")
    damaged = bytearray(data)
    damaged[-10] ^= 0xFF
    with pytest.raises(InputError, match="damaged"):
        decode(bytes(damaged), "x.hgm")
    newer = bytearray(data)
    newer[8] = 99
    with pytest.raises(InputError, match="version 99"):
        decode(bytes(newer), "x.hgm")


def test_roi_decompression_equals_the_crop_of_the_whole():
    rng = np.random.default_rng(5)
    shape = (30, 70, 90)
    mix = random_mixture(400, shape, rng, background=3.0)
    mix = GaussianMixture(mix.centres, mix.scales, mix.rotations, mix.amplitudes * 500, 3.0)
    header = HgmHeader(shape, "uint16", (0.0, 2000.0))
    full = decompress_array(mix, header, chunks=(16, 32, 32)).compute()
    roi = parse_roi("5:17,20:61,:33", shape)
    part = decompress_array(mix, header, roi=roi).compute()
    np.testing.assert_array_equal(part, full[5:17, 20:61, 0:33])
    # Zoomed: the region of a zoomed decode is the crop of the zoomed whole.
    z_full = decompress_array(mix, header, zoom=2.0).compute()
    z_part = decompress_array(mix, header, zoom=2.0, roi=roi).compute()
    np.testing.assert_array_equal(z_part, z_full[10:34, 40:122, 0:66])
    with pytest.raises(InputError):
        parse_roi("0:5,0:5", shape)
    with pytest.raises(InputError):
        parse_roi("0:50,0:5,0:5", shape)


def test_blockwise_fit_has_no_seam():
    """Blobs straddle the block borders; the error at the seams is no worse than elsewhere."""
    rng = np.random.default_rng(6)
    shape = (16, 64, 64)
    n = 60
    truth = GaussianMixture(
        rng.uniform(0, 1, (n, 3)) * (np.array(shape) - 1),
        rng.uniform(1.2, 3.0, (n, 3)),
        rng.normal(size=(n, 4)),
        rng.uniform(0.3, 1.0, n),
        0.05,
    )
    vol = np.clip(brute_force(truth, shape) + rng.normal(0, 0.003, shape), 0, None) * 30000
    vol = vol.astype(np.uint16)
    cfg = FitConfig(gaussians=90, iterations=200, block_size=32, block_overlap=6)
    res = compress(vol, cfg, workers=2)
    assert res.header.blocks["grid"] == [1, 2, 2]
    dec = decompress_array(res.mixture, res.header).compute().astype(float)
    err = np.abs(dec - vol)
    seam = np.zeros(shape, bool)
    seam[:, 30:34, :] = True
    seam[:, :, 30:34] = True
    assert err[seam].mean() < 1.5 * err[~seam].mean()
    assert metrics.psnr(vol, dec) > 30


def test_ratio_budget_and_time_budget():
    rng = np.random.default_rng(7)
    _, vol = placed_volume(rng, shape=(24, 64, 64))
    res = compress(vol, FitConfig(ratio=300, iterations=60))
    assert res.ratio >= 300 and len(res.data) <= vol.nbytes / 300
    # A time budget stops the optimiser long before its 100000 steps.
    res = compress(vol, FitConfig(gaussians=20, iterations=100000, time_budget=2.0))
    assert max(h["iteration"] for h in res.history) < 100000 - 1
    with pytest.raises(InputError, match="too few"):
        compress(vol, FitConfig(ratio=1e7))


def test_bad_volumes_are_refused():
    with pytest.raises(InputError, match="NaN"):
        compress(np.full((4, 8, 8), np.nan, np.float32), FitConfig(gaussians=2))
    with pytest.raises(InputError, match="3D"):
        compress(np.zeros((8, 8), np.uint8), FitConfig(gaussians=2))
    with pytest.raises(InputError, match="not both"):
        FitConfig(ratio=10, gaussians=5)
    with pytest.raises(InputError):
        FitConfig()


def test_config_yaml_round_trip_and_overrides(tmp_path):
    cfg = FitConfig(ratio=150, iterations=321, edge_weight=0.7)
    path = tmp_path / "fit.yaml"
    cfg.to_yaml(path)
    assert FitConfig.from_yaml(path) == cfg
    over = FitConfig.from_yaml(path, gaussians=77, iterations=None)
    assert over.gaussians == 77 and over.ratio is None and over.iterations == 321
    path.write_text("ratio: 10\nbogus: 1\n")
    with pytest.raises(InputError, match="bogus"):
        FitConfig.from_yaml(path)


def test_plan_blocks_cover_the_volume_once():
    assert len(plan_blocks((60, 256, 256), 192, 8)) == 1  # fewer voxels than 192^3
    blocks = plan_blocks((50, 300, 130), 100, 8)
    assert len(blocks) == 1 * 3 * 2
    owned = np.zeros((50, 300, 130), int)
    for b in blocks:
        owned[b.core] += 1
        for c, r in zip(b.core, b.region, strict=True):
            assert r.start <= c.start and r.stop >= c.stop
    assert (owned == 1).all()


def test_metrics_against_known_values():
    a = np.zeros((4, 8, 8))
    a[0, 0, 0] = 100
    b = a.copy()
    assert metrics.psnr(a, b) == np.inf
    b[1, 1, 1] = 10  # MSE = 100 / 256
    assert metrics.psnr(a, b) == pytest.approx(10 * np.log10(100**2 / (100 / 256)))
    assert metrics.ssim(a, a) == pytest.approx(1.0)
    assert metrics.compression_ratio(1000, 10) == 100
    assert metrics.bits_per_voxel(10, 80) == 1.0


def test_rotation_quaternions_are_orthonormal():
    r = quaternion_to_matrix(np.random.default_rng(8).normal(size=(20, 4)))
    np.testing.assert_allclose(r @ r.transpose(0, 2, 1), np.tile(np.eye(3), (20, 1, 1)), atol=1e-12)


def test_cli_compress_and_decompress(tmp_path, capsys):
    import tifffile

    rng = np.random.default_rng(9)
    _, vol = placed_volume(rng, shape=(20, 40, 40))
    src = tmp_path / "vol.tif"
    tifffile.imwrite(src, vol)
    out = tmp_path / "vol.hgm"
    assert (
        main(["compress", str(src), str(out), "--gaussians", "12", "--iterations", "60", "--quiet"])
        == 0
    )
    report = json.loads((tmp_path / "vol.fit.json").read_text())
    assert report["gaussians"] <= 12 and report["psnr_db"] > 25
    assert report["file_bytes"] == out.stat().st_size
    assert "iterations: 60" in (tmp_path / "vol.fit.yaml").read_text()
    # Not overwritten without asking.
    assert main(["compress", str(src), str(out), "--gaussians", "12", "--quiet"]) == 2
    assert "exists" in capsys.readouterr().err
    npy = tmp_path / "dec.npy"
    assert main(["decompress", str(out), str(npy), "--quiet"]) == 0
    dec = np.load(npy)
    assert dec.shape == vol.shape and dec.dtype == np.uint16
    zarr_out = tmp_path / "roi.ome.zarr"
    assert (
        main(
            [
                "decompress",
                str(out),
                str(zarr_out),
                "--roi",
                "2:10,5:25,0:40",
                "--zoom",
                "2",
                "--quiet",
            ]
        )
        == 0
    )
    from napari_histovol.core.io.detect import read_volume

    roi = read_volume(zarr_out)
    assert roi.shape == (16, 40, 80)
    assert roi.meta.scale == pytest.approx((0.5, 0.5, 0.5))
    # A foreign file and a truncated one: one sentence, status 2, nothing written.
    fake = tmp_path / "fake.hgm"
    fake.write_bytes(src.read_bytes()[:500])
    assert main(["decompress", str(fake), str(tmp_path / "x.npy")]) == 2
    assert "not a histovol" in capsys.readouterr().err
    cut = tmp_path / "cut.hgm"
    cut.write_bytes(out.read_bytes()[:-7])
    assert main(["decompress", str(cut), str(tmp_path / "y.npy")]) == 2
    assert "truncated" in capsys.readouterr().err
    assert not (tmp_path / "x.npy").exists() and not (tmp_path / "y.npy").exists()


# --- degenerate volumes -------------------------------------------------------------------


@pytest.mark.parametrize(
    "vol",
    [
        np.full((8, 16, 16), 7, np.uint16),
        np.zeros((4, 5, 6), np.uint8),
        np.full((3, 4, 5), -2.5, np.float32),
        np.full((1, 1, 1), 3, np.int16),
    ],
    ids=["constant-uint16", "all-zero", "constant-float", "one-voxel"],
)
@pytest.mark.parametrize("budget", [{"gaussians": 5}, {"ratio": 50}])
def test_constant_volume_is_zero_gaussians_and_decodes_exactly(vol, budget):
    import contextlib

    from napari_histovol.core.errors import HistovolWarning

    # a ratio of 50 asks for fewer bytes than a file's header: said, not hidden
    small = "ratio" in budget and vol.nbytes / 50 < 300
    with pytest.warns(HistovolWarning, match="too small") if small else contextlib.nullcontext():
        res = compress(vol, FitConfig(iterations=20, **budget))
    assert len(res.mixture) == 0 and res.mixture.background == vol.flat[0]
    mix, header = decode(res.data)
    assert len(mix) == 0 and header.shape == vol.shape and header.dtype == vol.dtype.name
    back = decompress_array(mix, header).compute()
    assert back.dtype == vol.dtype
    np.testing.assert_array_equal(back, vol)
    # ... at another resolution too: the constant everywhere.
    zoomed = decompress_array(mix, header, zoom=2.0).compute()
    assert (zoomed == vol.flat[0]).all()


def test_tiny_volume_fits_its_gaussian():
    """2 x 3 x 4 voxels holding one known Gaussian over a background."""
    truth = GaussianMixture(
        np.array([[1.0, 1.0, 2.0]]),
        np.full((1, 3), 0.6),
        np.array([[1.0, 0, 0, 0]]),
        np.array([0.8]),
        0.1,
    )
    vol = (brute_force(truth, (2, 3, 4)) * 1000).astype(np.uint16)
    res = compress(vol, FitConfig(gaussians=1, iterations=300))
    (got,) = res.mixture.centres
    assert np.abs(got - [1.0, 1.0, 2.0]).max() <= 0.5
    assert res.mixture.amplitudes[0] == pytest.approx(800, rel=0.1)
    back = decompress_array(*decode(res.data)).compute()
    assert back.shape == (2, 3, 4) and back.dtype == np.uint16
    assert np.abs(back.astype(int) - vol).max() < 0.05 * vol.max()
    # A ratio cannot be met by so few bytes: one sentence naming the count as the remedy.
    with pytest.raises(InputError, match="number of Gaussians") as err:
        compress(vol, FitConfig(ratio=2))
    assert err.value.option == "gaussians"


def test_single_plane_fits_its_gaussians():
    truth = GaussianMixture(
        np.array([[0.0, 8, 10], [0, 16, 24]]),
        np.array([[2.0, 2.5, 2.0], [2, 1.8, 3.0]]),
        np.array([[1.0, 0, 0, 0], [0.9, 0, 0, 0.3]]),
        np.array([0.8, 0.6]),
        0.1,
    )
    vol = (brute_force(truth, (1, 24, 32)) * 1000).astype(np.uint16)
    res = compress(vol, FitConfig(gaussians=2, iterations=300, init_fraction=1.0))
    order = np.argsort(res.mixture.centres[:, 1])
    np.testing.assert_allclose(res.mixture.centres[order], truth.centres, atol=0.3)
    np.testing.assert_allclose(res.mixture.amplitudes[order], [800, 600], rtol=0.05)
    assert res.mixture.background == pytest.approx(100, abs=5)
    back = decompress_array(res.mixture, res.header).compute()
    assert back.shape == vol.shape and metrics.psnr(vol, back) > 40


@pytest.mark.parametrize(
    ("value", "count"), [(np.nan, 1), (np.inf, 1), (-np.inf, 3)], ids=["nan", "inf", "-inf"]
)
def test_nan_and_infinite_values_are_refused_in_one_sentence(value, count):
    vol = np.ones((4, 8, 8), np.float32)
    vol.flat[[5, 70, 200][:count]] = value
    with pytest.raises(InputError) as err:
        compress(vol, FitConfig(gaussians=2))
    msg = str(err.value)
    assert f"holds {count} NaN or infinite value" in msg and msg.count(".") == 1


def test_empty_volume_and_huge_float_values():
    with pytest.raises(InputError, match="empty"):
        compress(np.zeros((0, 4, 4), np.uint8), FitConfig(gaussians=2))
    # Values near the float64 limit normalise and measure without overflowing.
    ramp = np.linspace(-1e300, 1e300, 4 * 6 * 8).reshape(4, 6, 8)
    with np.errstate(over="raise", invalid="raise"):
        res = compress(ramp, FitConfig(gaussians=4, iterations=60))
        report = fit_report(res, ramp)
    assert np.isfinite(report["psnr_db"]) and report["psnr_db"] > 15


# --- torch is optional ----------------------------------------------------------------------


def test_reading_and_decoding_need_no_torch(tmp_path):
    """With torch unimportable: the package, the napari reader/writer and the widget import,
    .hgm files open and decode, constant volumes compress; a fit says to install torch."""
    import subprocess
    import sys
    import textwrap

    rng = np.random.default_rng(11)
    mix = random_mixture(40, (10, 20, 20), rng, background=20.0)
    mix = GaussianMixture(mix.centres, mix.scales, mix.rotations, mix.amplitudes * 100, 20.0)
    path = tmp_path / "m.hgm"
    path.write_bytes(encode(mix, HgmHeader((10, 20, 20), "uint16", (0.0, 300.0))))
    expected = decompress_array(*decode(path.read_bytes())).compute()
    np.save(tmp_path / "expected.npy", expected)
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # import torch now raises ImportError
        import numpy as np
        import napari_histovol.core.gaussians as g
        import napari_histovol._reader, napari_histovol._writer
        import napari_histovol._widgets.gaussian_widget
        layers = napari_histovol._reader.get_reader({str(path)!r})({str(path)!r})
        got = np.asarray(layers[0][0])
        assert np.array_equal(got, np.load({str(tmp_path / "expected.npy")!r}))
        from napari_histovol.core.errors import InputError
        flat = g.compress(np.full((3, 4, 5), 9, np.uint8), g.FitConfig(gaussians=3))
        assert len(flat.mixture) == 0
        try:
            g.compress(np.arange(60, dtype=np.uint8).reshape(3, 4, 5), g.FitConfig(gaussians=3))
        except InputError as e:
            print("refused:", e)
        assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None]
        """
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    line = p.stdout.strip().splitlines()[-1]
    assert line.startswith("refused:") and "torch" in line and line.count(".") == 1, line


# --- decode bounds --------------------------------------------------------------------------


def _small_hgm(tmp_path, shape=(20, 40, 40)):
    rng = np.random.default_rng(12)
    mix = random_mixture(30, shape, rng, background=10.0)
    header = HgmHeader(shape, "uint16", (0.0, 2000.0))
    path = tmp_path / "small.hgm"
    path.write_bytes(encode(mix, header))
    return path, header


def test_decode_size_is_known_and_absurd_sizes_are_refused_before_work(tmp_path, monkeypatch):
    from napari_histovol.core.gaussians import check_decode_size, iter_decompress_file
    from napari_histovol.core.gaussians import decompress as dec

    path, header = _small_hgm(tmp_path)
    size = check_decode_size(header, zoom=0.5, roi="2:10,0:40,10:30")
    assert size.shape == (4, 20, 10) and size.voxels == 800 and size.raw_bytes == 1600
    # zoom 1000 on 20 x 40 x 40 voxels: 20000 x 40000 x 40000 uint16, 58.2 TiB
    big = 20000 * 40000 * 40000 * 2
    assert check_decode_size(header, zoom=1000).raw_bytes == big
    seen = []

    def disk_usage(p):
        seen.append(p)
        return dec.shutil._ntuple_diskusage(10 * 2**40, 10 * 2**40 - 2**30, 2**30)

    monkeypatch.setattr(dec.shutil, "disk_usage", disk_usage)
    out = tmp_path / "not" / "yet" / "there.npy"
    with pytest.raises(InputError) as err:
        check_decode_size(header, zoom=1000, out=out)
    msg = str(err.value)
    assert "20000 x 40000 x 40000" in msg and "58.2 TiB" in msg and "1.0 GiB free" in msg
    assert "smaller zoom" in msg and "region" in msg and err.value.option == "zoom"
    assert seen == [tmp_path]  # the nearest folder that exists
    # Enough room: the same check passes and says what will be written.
    assert check_decode_size(header, zoom=2, out=out).shape == (40, 80, 80)
    # Beyond any output (int64 indexing, 128 TiB of address space): refused without a disk.
    with pytest.raises(InputError, match="beyond the 128.0 TiB"):
        check_decode_size(header, zoom=1e4)
    with pytest.raises(InputError, match="beyond"):
        decompress_array(*decode(path.read_bytes()), zoom=1e7)  # no graph is built
    # The file-level decode refuses before writing anything.
    gen = iter_decompress_file(path, out, zoom=1000)
    with pytest.raises(InputError, match="free"):
        next(gen)
    assert not out.exists() and not out.parent.exists()


@pytest.mark.parametrize(
    ("zoom", "words"),
    [
        (0.01, "z axis of 20 voxels with no voxel; use a zoom of at least 0.05"),
        ((1, 1, 0.01), "x axis of 40 voxels with no voxel; use a zoom of at least 0.025"),
        (0, "positive and finite"),
        (-2, "positive and finite"),
        (float("nan"), "positive and finite"),
        (float("inf"), "positive and finite"),
        ((1, 2), "one factor or three"),
        ("big", "must be a number"),
    ],
)
def test_bad_zooms_are_refused(tmp_path, zoom, words):
    from napari_histovol.core.gaussians import check_decode_size

    _, header = _small_hgm(tmp_path)
    with pytest.raises(InputError, match=words.replace("(", r"\(")) as err:
        check_decode_size(header, zoom=zoom)
    assert err.value.option == "zoom"


def test_decompress_file_writes_what_the_size_check_said(tmp_path):
    from napari_histovol.core.gaussians import iter_decompress_file
    from napari_histovol.core.progress import drain

    path, header = _small_hgm(tmp_path)
    out = tmp_path / "part.npy"
    written, size = drain(iter_decompress_file(path, out, zoom=2, roi="2:10,5:25,0:40"))
    data = np.load(written)
    assert data.shape == size.shape == (16, 40, 80) and data.dtype == np.uint16
    mix, _ = decode(path.read_bytes())
    whole = decompress_array(mix, header, zoom=2).compute()
    np.testing.assert_array_equal(data, whole[4:20, 10:50, 0:80])


# --- cancellation -----------------------------------------------------------------------------


def _fitting_threads() -> list[int]:
    import sys
    import traceback

    return [
        ident
        for ident, frame in sys._current_frames().items()
        if any(
            f.filename.replace("\\", "/").endswith(
                ("gaussians/fit.py", "gaussians/render_torch.py")
            )
            for f in traceback.extract_stack(frame)
        )
    ]


@pytest.mark.parametrize("how", ["event", "close"])
def test_cancel_stops_every_parallel_block_fit(monkeypatch, how):
    """Blocks fitted two at a time on dask threads all stop at their next optimiser step."""
    import threading
    import time

    from napari_histovol.core.gaussians import FitCancelled, iter_compress
    from napari_histovol.core.gaussians import fit as fit_module

    steps = [0]
    lock = threading.Lock()
    render = fit_module.render_torch

    def counting(*args, **kwargs):
        with lock:
            steps[0] += 1
        return render(*args, **kwargs)

    monkeypatch.setattr(fit_module, "render_torch", counting)
    vol = (np.random.default_rng(13).random((8, 16, 128)) * 1000).astype(np.uint16)
    cancel = threading.Event()
    cfg = FitConfig(gaussians=400, iterations=20000, block_size=16)  # 8 blocks, 2 colours
    gen = iter_compress(vol, cfg, workers=2, cancel=cancel)
    parallel = 0
    for _ in gen:
        parallel = max(parallel, len(_fitting_threads()))
        if steps[0] > 40 and parallel >= 2:
            break
    assert parallel >= 2
    if how == "event":
        cancel.set()
        with pytest.raises(FitCancelled):
            for _ in gen:
                pass
    else:
        gen.close()
    assert not _fitting_threads()
    assert not any(t.name == "histovol-gaussian-fit" for t in threading.enumerate())
    before = steps[0]
    time.sleep(1.0)
    assert steps[0] == before


def test_compress_file_writes_hgm_settings_and_report_together(tmp_path):
    import threading

    import dask.array as da

    from napari_histovol.core.errors import OutputError
    from napari_histovol.core.gaussians import FitCancelled, iter_compress_file, read_hgm
    from napari_histovol.core.io.meta import VolumeMeta
    from napari_histovol.core.io.volume import Volume
    from napari_histovol.core.progress import drain

    _, vol = placed_volume(np.random.default_rng(14), shape=(12, 32, 32))
    meta = VolumeMeta(scale=(2.0, 0.5, 0.5), unit="micrometer").with_planes(12)
    volume = Volume(da.from_array(vol), meta)
    out = tmp_path / "v.hgm"
    cfg = FitConfig(gaussians=8, iterations=40)
    res, report = drain(iter_compress_file(volume, out, cfg, source="v.tif"))
    mix, header = read_hgm(out)
    assert len(mix) == len(res.mixture) == report["gaussians"]
    assert header.voxel_size == (2.0, 0.5, 0.5) and header.unit == "micrometer"
    assert FitConfig.from_yaml(tmp_path / "v.fit.yaml") == cfg
    doc = json.loads((tmp_path / "v.fit.json").read_text())
    assert doc["input"] == "v.tif" and doc["file_bytes"] == out.stat().st_size
    # Existing outputs are refused before any work, and kept.
    with pytest.raises(OutputError) as err:
        next(iter_compress_file(volume, out, cfg))
    assert err.value.option == "overwrite"
    # A cancelled fit leaves no file at all.
    cancel = threading.Event()
    gen = iter_compress_file(volume, tmp_path / "c.hgm", cfg, cancel=cancel)
    next(gen)
    cancel.set()
    with pytest.raises(FitCancelled):
        drain(gen)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.fit.json", "v.fit.yaml", "v.hgm"]


def test_cancel_reaches_fits_on_a_dask_cluster():
    """On a distributed cluster (here in-process workers) the fits check a cluster-wide event."""
    import threading
    import time

    distributed = pytest.importorskip("distributed")
    from napari_histovol.core.gaussians import FitCancelled, iter_compress
    from napari_histovol.core.progress import drain

    vol = (np.random.default_rng(15).random((8, 16, 64)) * 1000).astype(np.uint16)
    with distributed.Client(
        processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None
    ) as client:
        res = compress(vol, FitConfig(gaussians=40, iterations=20, block_size=16), scheduler=client)
        assert 0 < len(res.mixture) <= 40
        cancel = threading.Event()
        cfg = FitConfig(gaussians=40, iterations=20000, block_size=16)
        outcome = []

        def drive():  # remote fits relay no progress: the generator waits in its thread
            try:
                drain(iter_compress(vol, cfg, scheduler=client, cancel=cancel))
            except FitCancelled:
                outcome.append("cancelled")

        runner = threading.Thread(target=drive)
        runner.start()
        deadline = time.monotonic() + 60
        while not _fitting_threads() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _fitting_threads()
        cancel.set()
        runner.join(timeout=30)
        assert outcome == ["cancelled"]
        deadline = time.monotonic() + 10
        while _fitting_threads() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _fitting_threads()


def test_a_header_without_voxels_is_damage():
    import struct
    import zlib

    from napari_histovol.core.gaussians.hgm import _PREFIX, MAGIC

    data = encode(GaussianMixture.empty(1.0), HgmHeader((2, 2, 2), "uint8", (1.0, 1.0)))
    _, version, flags, hlen = _PREFIX.unpack_from(data)
    meta = json.loads(data[_PREFIX.size : _PREFIX.size + hlen])
    meta["shape"] = [0, 5, 5]
    head = json.dumps(meta).encode()
    body = _PREFIX.pack(MAGIC, version, flags, len(head)) + head + data[_PREFIX.size + hlen : -4]
    with pytest.raises(InputError, match=r"damaged: its volume shape \[0, 5, 5\] holds no voxels"):
        decode(body + struct.pack("<I", zlib.crc32(body)), "x.hgm")


def test_decompressed_volume_keeps_z_numbers_gaps_generated_planes_and_known_sizes(tmp_path):
    """compress then decompress numbered a stack with gaps 0, 1, 2, ... (sections at the wrong
    depth) and counted its interpolated planes as measured (a helper's chain)."""
    from dataclasses import replace

    import dask.array as da

    from napari_histovol.core.io import Volume, read_volume, write_volume
    from napari_histovol.core.io.meta import VolumeMeta

    _, vol = placed_volume(np.random.default_rng(3), shape=(6, 32, 32))
    meta = VolumeMeta(
        z_numbers=(1, 2, 3, 5, 6, 8),
        gaps=(4, 7),
        scale=(4.0, 0.5, 0.5),
        unit="micrometer",
        scale_known=True,
        spacing_known=False,
    ).with_planes(6)
    meta = replace(meta, synthetic=(False, True, False, False, False, False))
    src = tmp_path / "in.ome.zarr"
    write_volume(Volume(da.from_array(vol), meta), src)
    hgm = tmp_path / "in.hgm"
    assert (
        main(["compress", str(src), str(hgm), "--gaussians", "8", "--iterations", "20", "--quiet"])
        == 0
    )
    # info describes the file as it decodes (it was refused as a format it does not read)
    from napari_histovol.core.info import describe

    said = describe(hgm)
    assert said["format"] == "hgm" and said["shape"] == [6, 32, 32]
    assert said["z_numbers"] == list(meta.z_numbers) and said["gaps"] == [4, 7]
    assert said["gaussians"] >= 1 and said["file_bytes"] == hgm.stat().st_size
    for out in ("whole.ome.zarr", "region.npy"):
        roi = [] if out.startswith("whole") else ["--roi", "3:6,0:32,0:32"]
        assert main(["decompress", str(hgm), str(tmp_path / out), *roi, "--quiet"]) == 0
        got = read_volume(tmp_path / out).meta
        first = 0 if not roi else 3
        assert got.z_numbers == meta.z_numbers[first:]
        assert got.synthetic == meta.synthetic[first:]
        assert got.gaps == ((4, 7) if not roi else (7,))
        assert (got.scale_known, got.spacing_known) == (True, False)


def test_a_missed_budget_is_said():
    """A ratio of 200 gave a file of ratio 320, and a count of 1500 kept 1050 Gaussians,
    without a word (a helper's journey); within a fifth of the budget nothing is said."""
    from napari_histovol.core.gaussians import CompressResult, GaussianMixture, HgmHeader

    header = HgmHeader((10, 100, 100), "uint8", (0.0, 255.0))  # 100 000 raw bytes
    mix = GaussianMixture.empty(0.0)

    def note(config, n_bytes):
        return CompressResult(mix, header, b"x" * n_bytes, config, 1.0).budget_note

    assert "of the 10 Gaussians asked" in note(FitConfig(gaussians=10), 50)
    assert "smaller than a ratio of 200" in note(FitConfig(ratio=200), 300)  # ratio 333
    assert note(FitConfig(ratio=200), 480) is None  # ratio 208
