"""A learned focus-distance regressor: a small residual CNN in plain torch (no torchvision).

It predicts the defocus distance |z| (µm) of a 64 x 64 patch. Training pairs come from sharp
patches defocused with a physically sensible, depth-dependent point spread function: a
geometric pillbox of radius |z| tan(asin(NA)) / pixel size (the cone of light of a lens of
numerical aperture NA), convolved with the in-focus diffraction blur (Gaussian, sigma
0.21 lambda / NA), then photon (Poisson) and read (Gaussian) noise and a random gain. Real focus
stacks with known offsets can be added. Training uses Adam, ReduceLROnPlateau and early
stopping on a held-out split. The package ships a model trained by ``scripts/train_focus_model.py``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

PATCH = 64
SHIPPED = Path(__file__).resolve().parents[1] / "models" / "focus_regressor.pt"


@dataclass(frozen=True)
class Optics:
    """Imaging parameters of the synthetic defocus."""

    pixel_um: float = 0.5
    na: float = 0.5
    wavelength_um: float = 0.55
    max_defocus_um: float = 8.0

    def blur_radius_px(self, z_um: float) -> float:
        return abs(z_um) * math.tan(math.asin(min(self.na, 0.95))) / self.pixel_um

    @property
    def diffraction_sigma_px(self) -> float:
        return 0.21 * self.wavelength_um / self.na / self.pixel_um


def defocus_psf(z_um: float, optics: Optics) -> np.ndarray:
    """Pillbox of the geometric blur radius, convolved with the diffraction Gaussian."""
    r = optics.blur_radius_px(z_um)
    s = optics.diffraction_sigma_px
    half = int(math.ceil(r + 3 * s)) + 1
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    # anti-aliased pillbox: coverage of each pixel by the disk
    d = np.sqrt(yy**2 + xx**2)
    disk = np.clip(r + 0.5 - d, 0, 1) if r >= 0.5 else (d == 0).astype(np.float32)
    psf = cv2.GaussianBlur(disk.astype(np.float32), (0, 0), s)
    return psf / psf.sum()


def defocus(
    patch: np.ndarray, z_um: float, optics: Optics, rng: np.random.Generator, *, noise: bool = True
) -> np.ndarray:
    """A sharp float patch in [0, 1] as seen ``z_um`` out of focus, with noise."""
    out = cv2.filter2D(
        patch.astype(np.float32), -1, defocus_psf(z_um, optics), borderType=cv2.BORDER_REFLECT
    )
    if noise:
        photons = rng.uniform(200, 2000)
        out = rng.poisson(np.clip(out, 0, None) * photons).astype(np.float32) / photons
        out += rng.normal(0, rng.uniform(0.002, 0.01), out.shape).astype(np.float32)
        out = out * rng.uniform(0.7, 1.3) + rng.uniform(-0.1, 0.1)
    return out


def normalise_patches(p: np.ndarray) -> np.ndarray:
    """Per patch: subtract the mean, divide by the standard deviation (contrast-invariant)."""
    m = p.mean(axis=(-2, -1), keepdims=True)
    s = p.std(axis=(-2, -1), keepdims=True)
    return ((p - m) / np.maximum(s, 1e-3)).astype(np.float32)


def build_model():
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.skip = (
                nn.Sequential()
                if stride == 1 and cin == cout
                else nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )
            )

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(y)) + self.skip(x))

    class FocusNet(nn.Module):
        """Residual CNN: 64x64 patch -> defocus distance (µm, >= 0)."""

        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()
            )
            self.body = nn.Sequential(
                Block(16, 16, 1), Block(16, 32, 2), Block(32, 64, 2), Block(64, 64, 2)
            )
            self.head = nn.Linear(64, 1)

        def forward(self, x):
            y = self.body(self.stem(x)).mean(dim=(2, 3))
            return nn.functional.softplus(self.head(y)).squeeze(1)

    return FocusNet()


class FocusDataset:
    """Sharp patches (gray, [0, 1]) defocused on the fly; or real patches with known distance."""

    def __init__(
        self,
        sharp: list[np.ndarray],
        optics: Optics,
        *,
        seed: int = 0,
        real: list[tuple[np.ndarray, float]] | None = None,
    ) -> None:
        self.sharp = [s.astype(np.float32) for s in sharp if min(s.shape) >= PATCH]
        if not self.sharp:
            raise ValueError("no sharp image of at least 64 x 64 pixels")
        self.optics = optics
        self.rng = np.random.default_rng(seed)
        self.real = real or []

    def _random_patch(self) -> np.ndarray:
        img = self.sharp[self.rng.integers(len(self.sharp))]
        for _ in range(20):
            y = (
                self.rng.integers(0, img.shape[0] - PATCH - 16 + 1)
                if img.shape[0] > PATCH + 16
                else 0
            )
            x = (
                self.rng.integers(0, img.shape[1] - PATCH - 16 + 1)
                if img.shape[1] > PATCH + 16
                else 0
            )
            p = img[y : y + PATCH + 16, x : x + PATCH + 16]
            if p.std() > 0.03:  # tissue, not empty slide
                return p
        return p

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for _ in range(n):
            if self.real and self.rng.random() < 0.3:
                p, d = self.real[self.rng.integers(len(self.real))]
                xs.append(p[:PATCH, :PATCH])
                ys.append(d)
                continue
            d = float(self.rng.uniform(0, self.optics.max_defocus_um))
            p = self._random_patch()
            if self.rng.random() < 0.5:
                p = p[::-1]
            if self.rng.random() < 0.5:
                p = p.T
            xs.append(
                defocus(np.ascontiguousarray(p), d, self.optics, self.rng)[
                    8 : 8 + PATCH, 8 : 8 + PATCH
                ]
            )
            ys.append(d)
        return normalise_patches(np.stack(xs))[:, None], np.array(ys, np.float32)


def train(
    dataset: FocusDataset,
    *,
    steps: int = 3000,
    batch: int = 64,
    val_batches: int = 8,
    seed: int = 0,
    patience: int = 6,
    eval_every: int = 150,
    progress=None,
):
    """Train a FocusNet; returns (model, history). Adam + ReduceLROnPlateau + early stopping."""
    import torch

    torch.manual_seed(seed)
    model = build_model()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2)
    val = FocusDataset(dataset.sharp, dataset.optics, seed=seed + 1, real=dataset.real)
    vx, vy = zip(*[val.batch(batch) for _ in range(val_batches)], strict=True)
    vx, vy = torch.from_numpy(np.concatenate(vx)), torch.from_numpy(np.concatenate(vy))
    best, best_state, bad, history = float("inf"), None, 0, []
    for step in range(1, steps + 1):
        model.train()
        x, y = dataset.batch(batch)
        loss = torch.nn.functional.smooth_l1_loss(model(torch.from_numpy(x)), torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % eval_every == 0 or step == steps:
            model.eval()
            with torch.no_grad():
                mae = float((model(vx) - vy).abs().mean())
            sched.step(mae)
            history.append(
                {
                    "step": step,
                    "train_loss": loss.item(),
                    "val_mae_um": mae,
                    "lr": opt.param_groups[0]["lr"],
                }
            )
            if progress:
                progress(step, steps, mae)
            if mae < best - 1e-3:
                best, bad = mae, 0
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
            else:
                bad += 1
                if bad >= patience:
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, history


def save_model(model, path: str | os.PathLike, *, optics: Optics, info: dict) -> Path:
    import torch

    path = Path(path)
    torch.save({"state_dict": model.state_dict(), "optics": asdict(optics), "info": info}, path)
    path.with_suffix(".json").write_text(json.dumps({"optics": asdict(optics), **info}, indent=1))
    return path


_LOADED: dict = {}


def load_model(path: str | os.PathLike | None = None):
    """(model, optics) from a saved file (the shipped model by default); cached."""
    import torch

    path = Path(path or SHIPPED)
    if path in _LOADED:
        return _LOADED[path]
    if not path.is_file():
        from .errors import InputError

        raise InputError(f"No focus model at '{path}'; train one with 'histovol focus-train'.")
    doc = torch.load(path, map_location="cpu", weights_only=False)
    model = build_model()
    model.load_state_dict(doc["state_dict"])
    model.eval()
    _LOADED[path] = (model, Optics(**doc["optics"]))
    return _LOADED[path]


def predict_focus_distance(patches: np.ndarray, *, model_path=None, batch: int = 256) -> np.ndarray:
    """Defocus distance (µm) of each (N, 64, 64) patch (any range; normalised here)."""
    import torch

    model, _ = load_model(model_path)
    x = normalise_patches(np.asarray(patches, np.float32))[:, None]
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(model(torch.from_numpy(x[i : i + batch])).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def image_patches(
    img: np.ndarray, *, stride: int = PATCH, min_std: float = 0.02
) -> tuple[np.ndarray, np.ndarray]:
    """Tissue patches of an image (gray [0, 1] via focus_channel) and their top-left corners."""
    from .focus import focus_channel

    g = focus_channel(img)
    h, w = g.shape
    if h < PATCH or w < PATCH:
        g = np.pad(g, ((0, max(0, PATCH - h)), (0, max(0, PATCH - w))), mode="reflect")
        h, w = g.shape
    ys = range(0, h - PATCH + 1, stride)
    xs = range(0, w - PATCH + 1, stride)
    corners = np.array([(y, x) for y in ys for x in xs])
    patches = np.stack([g[y : y + PATCH, x : x + PATCH] for y, x in corners])
    keep = patches.std(axis=(1, 2)) > min_std
    if not keep.any():
        keep[:] = True
    return patches[keep], corners[keep]


def image_distance(img: np.ndarray, *, model_path=None) -> float:
    """Median predicted defocus (µm) over an image's tissue patches."""
    patches, _ = image_patches(img)
    return float(np.median(predict_focus_distance(patches, model_path=model_path)))
