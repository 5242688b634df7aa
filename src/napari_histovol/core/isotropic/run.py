"""``iter_isotropic``: learn the axial model from a volume's own x-y planes within a time
budget, and return the reconstructed volume lazily."""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.meta import VolumeMeta
from ..io.volume import Volume
from ..progress import Progress, ProgressGenerator
from .geometry import AxialGeometry, axial_geometry

DEFAULT_TIME_BUDGET = 150.0
#: At most this many x-y planes (and at most TRAIN_SIDE pixels square of each) are read to
#: train on: a sample of the volume, so a volume larger than memory trains in bounded memory.
TRAIN_PLANES = 24
TRAIN_SIDE = 1024
#: The smallest share of the budget left to training when applying the model is estimated to
#: take the rest.
MIN_TRAIN_SHARE = 0.1


@dataclass
class IsotropicResult:
    """The reconstructed volume (lazy), the model and the grids."""

    volume: Volume
    model: object
    geometry: AxialGeometry
    time_budget: float | None = None

    @property
    def budget_note(self) -> str | None:
        """A sentence when applying the model alone was estimated to take more than the time
        budget (the budget is then overrun, and training had only its minimum share)."""
        apply_s = float(getattr(self.model, "apply_estimate_s", 0.0) or 0.0)
        budget = self.time_budget
        if not budget or apply_s <= (1 - MIN_TRAIN_SHARE) * budget:
            return None
        return (
            f"applying the model to this volume takes about {apply_s:.0f} s on this device, "
            f"more than the {budget:g} s time budget, so the job runs past it; a budget of "
            f"{2 * apply_s:.0f} s or more leaves as long again for training"
        )


def iter_isotropic(
    volume: Volume,
    *,
    factor: float,
    time_budget: float = DEFAULT_TIME_BUDGET,
    steps: int | None = None,
    seed: int = 0,
    device: str | None = None,
    block: int = 256,
    checkpoint: str | os.PathLike | None = None,
    should_stop=None,
) -> ProgressGenerator[IsotropicResult]:
    """Reconstruct a volume at ``factor`` planes per section spacing with a model learned from
    its own x-y planes.

    Parameters
    ----------
    volume
        (Z, Y, X[, C]) sections with their z numbers (missing numbers are reconstructed too).
    factor
        Output planes per section spacing; plane ``k * factor`` is section k. May be
        fractional when ``(z_last - z_0) * factor`` is whole.
    time_budget
        Seconds for training and applying the model together: training stops early enough
        for the estimated cost of applying it (on this device) to fit.
    steps
        Train exactly this many steps instead (reproducible with ``seed``).
    seed
        Seed of the training patches and the initial weights.
    device
        torch device; default CUDA when present, else the CPU.
    block
        Lateral block side for applying the model (memory per block ~ planes x block^2).
    checkpoint
        A file to keep the trained model in: when it holds a model trained with the same
        parameters on the same input, training is skipped (a killed run resumes there).
    should_stop
        Callable; True ends training early and keeps the best model so far.

    Returns
    -------
    IsotropicResult
        ``volume`` is lazy: nothing beyond training is computed until it is read.
    """
    from .apply import reconstruct_lazy

    t_start = time.perf_counter()
    if time_budget is not None and not (np.isfinite(time_budget) and time_budget > 0):
        raise InputError(
            f"The time budget must be a positive number of seconds, not {time_budget}.",
            option="time_budget",
        )
    meta = volume.meta.with_planes(volume.shape[0])
    geometry = axial_geometry(meta, factor)
    # the key reads a sample of the pixels: only worth it when there is a checkpoint to match
    key = _params_key(volume, geometry, steps, seed, time_budget) if checkpoint else None
    model = _load_checkpoint(checkpoint, key)
    if model is None:
        model = yield from iter_train_model(
            volume,
            geometry,
            time_budget=time_budget,
            steps=steps,
            seed=seed,
            device=device,
            should_stop=should_stop,
            started=t_start,
        )
        _save_checkpoint(checkpoint, key, model)
    data = reconstruct_lazy(volume.data, model, geometry, block=block, device=device)
    out_meta = isotropic_meta(meta, geometry, model)
    yield Progress(1, 1, f"{geometry.n_out} planes to write", stage="train")
    return IsotropicResult(Volume(data, out_meta), model, geometry, time_budget)


def iter_train_model(
    volume: Volume,
    geometry: AxialGeometry,
    *,
    time_budget: float = DEFAULT_TIME_BUDGET,
    steps: int | None = None,
    seed: int = 0,
    device: str | None = None,
    should_stop=None,
    started: float | None = None,
) -> ProgressGenerator:
    """Train the axial model for ``geometry`` on ``volume``'s x-y planes (see
    :func:`iter_isotropic`); training stops early enough for applying the model to the whole
    volume to fit the budget counted from ``started``. Returns the
    :class:`~.network.AxialModel`."""
    from .network import (
        APPLY_MARGIN,
        SAFETY_S,
        forward_seconds_per_pixel,
        iter_train,
        spline_only_model,
    )

    t_start = started if started is not None else time.perf_counter()
    if not geometry.has_missing_rows:
        # sections no farther apart than the pixels and none missing: nothing to learn
        yield Progress(1, 1, "sections are as close as the pixels: cubic spline", stage="train")
        return spline_only_model(geometry)
    yield Progress(0, 1, "reading planes to learn from", stage="train")
    train_planes, val_planes, lo, hi, peak = _training_planes(volume, seed)
    if steps is None:
        n_pix = geometry.n_model * volume.shape[1] * volume.shape[2]
        n_pix *= (volume.shape[3] if volume.data.ndim == 4 else 1) * len(geometry.orientations)
        per_pixel = forward_seconds_per_pixel(
            device, rows=geometry.n_model, length=max(volume.shape[1], volume.shape[2])
        )
        apply_s = per_pixel * n_pix * APPLY_MARGIN + SAFETY_S
        spent = time.perf_counter() - t_start
        seconds = max(MIN_TRAIN_SHARE * time_budget, time_budget - spent - apply_s)
        if apply_s > (1 - MIN_TRAIN_SHARE) * time_budget:
            yield Progress(
                0, 1, f"applying will take about {apply_s:.0f} s: beyond the budget", "train"
            )
    else:
        apply_s, seconds = 0.0, float("inf")
    model = yield from iter_train(
        train_planes,
        val_planes,
        geometry,
        lo=lo,
        hi=hi,
        peak=peak,
        seconds=seconds,
        steps=steps,
        seed=seed,
        device=device,
        should_stop=should_stop,
    )
    model.apply_estimate_s = float(apply_s)
    return model


def _training_planes(volume: Volume, seed: int):
    """Up to TRAIN_PLANES planes, evenly spread, each cropped to at most TRAIN_SIDE square
    (a seeded random window), normalised to zero mean and unit variance (``peak``: the
    0.1-99.9 percentile range in those units, for PSNR); every fifth held back
    for validation when there are at least four (a separate draw of the same planes
    otherwise). RGB channels are planes of their own."""
    rng = np.random.default_rng(seed)
    n, h, w = volume.shape[:3]
    idx = np.unique(np.linspace(0, n - 1, min(n, TRAIN_PLANES)).round().astype(int))
    ch, cw = min(h, TRAIN_SIDE), min(w, TRAIN_SIDE)
    planes = []
    for i in idx:
        y0, x0 = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
        p = np.asarray(volume.data[i, y0 : y0 + ch, x0 : x0 + cw].compute(), dtype=np.float32)
        planes.extend([p] if p.ndim == 2 else [p[..., c] for c in range(p.shape[-1])])
    sample = np.concatenate([p[::4, ::4].ravel() for p in planes])
    sample = sample[np.isfinite(sample)]
    if not sample.size:
        sample = np.zeros(1, np.float32)
    # unit variance: the network learns as readily on sparse fluorescence as on dense EM
    lo, sd = float(sample.mean()), float(sample.std())
    p_lo, p_hi = np.percentile(sample, [0.1, 99.9])
    hi = lo + (sd if sd > 0 else 1.0)
    peak = float(p_hi - p_lo) / (hi - lo) if p_hi > p_lo else 1.0
    planes = [np.nan_to_num((p - lo) / (hi - lo)).astype(np.float32) for p in planes]
    per_plane = 1 if volume.data.ndim == 3 else volume.shape[3]
    n_sel = len(planes) // per_plane
    if n_sel >= 4:
        held = {k for k in range(n_sel) if k % 5 == 2}
        train = [p for k, p in enumerate(planes) if k // per_plane not in held]
        val = [p for k, p in enumerate(planes) if k // per_plane in held]
    else:
        train, val = planes, []
    return train, val, float(lo), float(hi), peak


def isotropic_meta(meta: VolumeMeta, geometry: AxialGeometry, model) -> VolumeMeta:
    """Metadata of the reconstructed volume: z numbers z_0 + j, measured planes keep their
    files, every other plane is synthetic, z spacing / factor, the model's record."""
    measured = geometry.measured_out_planes()
    z0 = int(meta.z_numbers[0])
    n_out = geometry.n_out
    pos = np.asarray(geometry.positions)
    planes = []
    for j, q in enumerate(geometry.out_positions):
        if j in measured:
            planes.append({"source_z": int(meta.z_numbers[measured[j]])})
            continue
        b = int(np.clip(np.searchsorted(pos, q), 1, len(pos) - 1))
        za, zb = meta.z_numbers[b - 1], meta.z_numbers[b]
        t = (q - pos[b - 1]) / (pos[b] - pos[b - 1])
        planes.append({"between": [int(za), int(zb)], "t": round(float(t), 6)})
    from ..sections import chain_plane_sources

    m = meta.with_planes(len(meta.z_numbers))
    # an input plane that was itself generated (a built volume) stays generated, and every
    # plane is named by the measured sections behind the input
    planes = chain_plane_sources(m, planes)
    return replace(
        meta,
        z_numbers=tuple(z0 + j for j in range(n_out)),
        synthetic=tuple(j not in measured or bool(m.synthetic[measured[j]]) for j in range(n_out)),
        gaps=(),
        files=tuple(
            meta.files[measured[j]] if j in measured and meta.files else "" for j in range(n_out)
        ),
        scale=(meta.scale[0] / geometry.factor, meta.scale[1], meta.scale[2]),
        extra={
            **{
                k: v
                for k, v in meta.extra.items()
                if k not in ("canvas_offsets", "source_shapes", "planes")
            },
            "planes_per_section": meta.planes_per_section * geometry.factor,  # chained
            "isotropic": {
                "factor": geometry.factor,
                "model_factor": geometry.model_factor,
                "row_step": geometry.row_step,
                "orientations": list(geometry.orientations),
                "steps": model.steps,
                "train_seconds": round(model.train_seconds, 2),
                "validation_psnr_db": model.validation_psnr,
                "source_z": list(meta.z_numbers),
            },
            "planes": planes,
        },
    )


def _params_key(volume, geometry, steps, seed, budget) -> str:
    """What identifies a training run: the parameters and a fingerprint of the pixels (a
    volume read twice gets a new dask name each time, so the name cannot say it is the same)."""
    token = json.dumps(
        [
            _fingerprint(volume),
            list(volume.shape),
            str(volume.dtype),
            list(geometry.positions),
            geometry.factor,
            list(volume.meta.scale),
            steps,
            seed,
            budget,
        ]
    )
    return hashlib.sha1(token.encode()).hexdigest()


def _fingerprint(volume: Volume) -> str:
    """A hash of four planes, each sampled on a grid of at most 64 x 64 pixels."""
    n, h, w = volume.shape[:3]
    sy, sx = max(1, h // 64), max(1, w // 64)
    digest = hashlib.sha1()
    for i in np.unique(np.linspace(0, n - 1, min(n, 4)).round().astype(int)):
        digest.update(np.ascontiguousarray(volume.data[i, ::sy, ::sx].compute()).tobytes())
    return digest.hexdigest()


def _load_checkpoint(path, key):
    if not path or not Path(path).is_file():
        return None
    from .network import AxialModel

    try:
        import torch

        state = torch.load(path, weights_only=False)
        if state.get("key") != key:
            return None
        return AxialModel.from_state(state)
    except Exception:  # noqa: BLE001 - a damaged checkpoint is retrained, not trusted
        return None


def _save_checkpoint(path, key, model) -> None:
    if not path:
        return
    import torch

    from ..io.atomic import atomic_output

    state = model.state()
    state["key"] = key
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(Path(path), overwrite=True) as tmp:
        torch.save(state, tmp)
