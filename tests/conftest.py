"""Shared fixtures: synthetic section folders with known content, and the shared real data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HISTOVOL_SHARED_DATA", REPO.parent / "shared" / "data"))


def histovol(*args) -> int:
    """Run the command in-process, as the console script does, and return its exit status
    (the warning hook it installs is put back)."""
    import warnings

    from napari_histovol.cli import main

    saved = warnings.showwarning
    try:
        return main([str(a) for a in args])
    finally:
        warnings.showwarning = saved


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` beside the checkout; tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set HISTOVOL_SHARED_DATA)")
    return SHARED_DATA


def tissue(
    shape: tuple[int, int],
    seed: int,
    *,
    rgb: bool = False,
    dtype=np.uint8,
    background: str = "white",
) -> np.ndarray:
    """A smooth random 'tissue' blob on a white (brightfield) or black background."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    h, w = shape
    field = ndi.gaussian_filter(rng.random((h, w)), sigma=max(2, min(h, w) / 20))
    field = (field - field.min()) / (np.ptp(field) + 1e-9)
    yy, xx = np.mgrid[:h, :w]
    mask = ((yy - h / 2) / (0.38 * h)) ** 2 + ((xx - w / 2) / (0.38 * w)) ** 2 < 1
    top = np.iinfo(dtype).max if np.dtype(dtype).kind == "u" else 1.0
    if background == "white":
        img = np.where(mask, (0.2 + 0.6 * field) * top, top)
    else:
        img = np.where(mask, (0.2 + 0.8 * field) * top, 0)
    img = img.astype(dtype)
    if rgb:
        img = np.stack(
            [img, (img * 0.8).astype(dtype) + (top * 0.2 if background == "white" else 0), img],
            axis=-1,
        ).astype(dtype)
        if background == "white":
            img[~mask] = top
    return img


def write_image(path: Path, img: np.ndarray) -> None:
    ext = path.suffix.lower()
    if ext in (".tif", ".tiff"):
        import tifffile

        tifffile.imwrite(
            path,
            img,
            photometric="rgb" if img.ndim == 3 and img.shape[-1] in (3, 4) else "minisblack",
        )
    elif ext == ".png":
        import imagecodecs

        path.write_bytes(imagecodecs.png_encode(img))
    else:
        from PIL import Image

        Image.fromarray(img).save(path, **({"quality": 95} if ext in (".jpg", ".jpeg") else {}))


@pytest.fixture
def make_sections(tmp_path):
    """Write a folder of sections with known pixels; return (folder, {z: array})."""

    def make(
        names=None,
        *,
        zs=(1, 2, 3, 5),
        shape=(48, 64),
        ext=".png",
        rgb=False,
        dtype=np.uint8,
        prefix="sec_",
        width=3,
        folder="sections",
        background="white",
        shapes=None,
    ):
        d = tmp_path / folder
        d.mkdir(parents=True, exist_ok=True)
        truth = {}
        names = names or [f"{prefix}{z:0{width}d}{ext}" for z in zs]
        for i, name in enumerate(names):
            shp = shapes[i] if shapes else shape
            img = tissue(shp, seed=i, rgb=rgb, dtype=dtype, background=background)
            write_image(d / name, img)
            truth[name] = img
        return d, truth

    return make
