"""The learned focus metric: a small residual CNN in plain torch (no torchvision) that predicts
the defocus distance |z| (µm) of a 64 x 64 patch; saving, loading, prediction, and the metric
that scores a section by the median distance over its tissue patches.

torch is an optional dependency: it is imported inside the functions that need it, and a clear
:class:`InputError` says so when it is missing. The package ships a model trained by
``scripts/train_focus_model.py`` (see :mod:`.training`).
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..io.atomic import atomic_outputs
from .defocus import Optics
from .maps import FocusMap, PlaneFocus, robust_flags, tile_grid
from .patches import PATCH, image_patches, normalise_patches

#: The model shipped with the package.
SHIPPED = Path(__file__).resolve().parents[2] / "models" / "focus_regressor.pt"


def import_torch():
    """The torch module, or an InputError that says the learned focus metric needs it."""
    try:
        import torch
    except ImportError:
        raise InputError(
            "The learned focus model needs PyTorch, which is not installed; install "
            "napari-histovol[torch] (or torch), or choose a classical focus metric.",
            option="metric",
        ) from None
    return torch


def build_model():
    """A fresh FocusNet: 64 x 64 normalised patch -> defocus distance (µm, >= 0)."""
    torch = import_torch()
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


def focus_model_files(path: str | os.PathLike) -> tuple[Path, Path]:
    """The two files a saved model consists of: ``OUT.pt`` and its description ``OUT.json``."""
    model = Path(os.fspath(path)).expanduser()
    return model, model.with_suffix(".json")


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as plain Python values, for JSON."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def save_focus_model(
    model,
    path: str | os.PathLike,
    *,
    optics: Optics,
    info: dict,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Write a trained model to ``path`` and its description to the ``.json`` beside it.

    Both files are written together under temporary names and renamed when complete, so a
    failure leaves neither.

    Parameters
    ----------
    model
        A trained FocusNet (from :func:`.training.iter_train_focus_model`).
    path
        The model file, conventionally ``OUT.pt``; the description goes to ``OUT.json``.
    optics
        The optics the model was trained for.
    info
        What it was trained on, its validation error and history (JSON-serialisable).
    overwrite
        Whether existing files may be replaced.

    Returns
    -------
    model_path, json_path

    Raises
    ------
    OutputError
        When a file exists and ``overwrite`` is False, or the files cannot be written.
    """
    torch = import_torch()
    path, side = focus_model_files(path)
    if side == path:
        raise InputError(
            f"The model file '{path}' would be overwritten by its own description "
            f"'{side.name}'; give the model a name ending in .pt."
        )
    info = _plain(info)
    doc = {"optics": asdict(optics), **info}
    # serialised in memory, written by plain file I/O: torch's own writer reports a full disk
    # as a RuntimeError that hides the OSError
    buf = io.BytesIO()
    torch.save({"state_dict": model.state_dict(), "optics": asdict(optics), "info": info}, buf)
    with atomic_outputs([path, side], overwrite=overwrite) as (tmp_model, tmp_json):
        tmp_model.write_bytes(buf.getvalue())
        tmp_json.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    _LOADED.pop(path.resolve(), None)
    return path, side


_LOADED: dict[Path, tuple[tuple[int, int], Any, Optics]] = {}


def load_model(path: str | os.PathLike | None = None):
    """``(model, optics)`` from a saved model file (the shipped model by default).

    Cached per file (reloaded when the file changes).

    Raises
    ------
    InputError
        When the file is missing or is not a focus model, or torch is not installed.
    """
    torch = import_torch()
    path = Path(os.fspath(path)).expanduser() if path is not None else SHIPPED
    if not path.is_file():
        raise InputError(
            f"No focus model at '{path}'; give the path of a model saved by focus training.",
            option="model_path",
        )
    key = path.resolve()
    st = path.stat()
    stamp = (st.st_mtime_ns, st.st_size)
    hit = _LOADED.get(key)
    if hit is not None and hit[0] == stamp:
        return hit[1], hit[2]
    try:
        doc = torch.load(path, map_location="cpu", weights_only=False)
        model = build_model()
        model.load_state_dict(doc["state_dict"])
        optics = Optics(**doc["optics"])
    except Exception as e:  # a truncated file, a pickle of something else, another network
        raise InputError(
            f"'{path}' is not a focus model saved by napari-histovol ({type(e).__name__}); "
            "give the path of a model saved by focus training.",
            option="model_path",
        ) from None
    model.eval()
    _LOADED[key] = (stamp, model, optics)
    return model, optics


def predict_focus_distance(
    patches: np.ndarray, *, model_path: str | os.PathLike | None = None, batch: int = 256
) -> np.ndarray:
    """Defocus distance (µm) of each ``(N, 64, 64)`` patch (any range; normalised here).

    Parameters
    ----------
    patches
        Gray patches.
    model_path
        A saved model; the shipped one by default.
    batch
        Patches per forward pass.
    """
    torch = import_torch()
    model, _ = load_model(model_path)
    x = normalise_patches(np.asarray(patches, np.float32))[:, None]
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(model(torch.from_numpy(x[i : i + batch])).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def image_distance(img: np.ndarray, *, model_path: str | os.PathLike | None = None) -> float:
    """Median predicted defocus (µm) over an image's tissue patches."""
    patches, _ = image_patches(img)
    return float(np.median(predict_focus_distance(patches, model_path=model_path)))


def distance_score(distance_um: float | np.ndarray):
    """Sharpness score of a defocus distance: ``1 / (1 + d)`` (higher is sharper, as for the
    classical metrics)."""
    return 1.0 / (1.0 + distance_um)


@dataclass(frozen=True)
class LearnedMetric:
    """The learned regressor as a focus metric: the score is ``1 / (1 + d)`` for the median
    predicted distance ``d`` over the tissue patches; tile maps take the median over the
    patches centred in each tile (so tiles must hold a patch).

    Parameters
    ----------
    description
        One line for help texts.
    model_path
        A saved model; the shipped one by default.
    """

    description: str
    model_path: str | None = None
    learned: bool = True
    min_tile: int = PATCH

    def measure(
        self,
        img: np.ndarray,
        *,
        tile: int | None = None,
        min_tissue: float = 0.1,
        threshold: float = 3.5,
        use_mask: bool = True,
    ) -> PlaneFocus:
        """Score one image (and its tiles when ``tile`` is given), with its defocus in µm.

        ``min_tissue`` and ``use_mask`` do not apply: empty-slide patches are left out by their
        contrast, and a tile counts when a tissue patch is centred in it.
        """
        patches, corners = image_patches(img)
        d = predict_focus_distance(patches, model_path=self.model_path)
        dist = float(np.median(d))
        if not tile:
            return PlaneFocus(float(distance_score(dist)), None, dist)
        ny, nx = tile_grid(np.shape(img)[:2], tile)
        tile_dist = np.zeros((ny, nx))
        cover = np.zeros((ny, nx))
        cells: dict[tuple[int, int], list[float]] = {}
        for (y, x), v in zip(corners, d, strict=True):
            cells.setdefault(((y + PATCH // 2) // tile, (x + PATCH // 2) // tile), []).append(v)
        for (j, i), vals in cells.items():
            if j < ny and i < nx:
                tile_dist[j, i] = float(np.median(vals))
                cover[j, i] = 1.0
        sc = np.where(cover > 0, distance_score(tile_dist), 0.0)
        flags = robust_flags(sc, valid=cover > 0, threshold=threshold)
        return PlaneFocus(float(distance_score(dist)), FocusMap(sc, cover, tile, flags), dist)


__all__ = [
    "SHIPPED",
    "LearnedMetric",
    "build_model",
    "distance_score",
    "image_distance",
    "import_torch",
    "load_model",
    "focus_model_files",
    "predict_focus_distance",
    "save_focus_model",
]
