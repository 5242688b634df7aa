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
    parse_roi,
    plan_blocks,
    render_region,
)
from napari_histovol.core.gaussians.hgm import quantise
from napari_histovol.core.gaussians.mixture import TRUNCATION, quaternion_to_matrix
from napari_histovol.core.gaussians.render import render_torch


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
