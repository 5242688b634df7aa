"""Training the learned focus regressor, with an honest validation split.

Training pairs come from sharp images defocused synthetically (:mod:`.defocus`), optionally
with patches of a real focus stack whose in-focus plane and step are known. Validation never
sees an image region used for training:

* a source with several images holds out its last images whole (a contiguous block, so a
  series of neighbouring sections shares at most one boundary with the training images);
* a source with one image, and a real focus stack (every plane shows the same field of view),
  holds out a strip along the longer side, the same strip on every plane, separated from the
  training region by :data:`GAP` pixels.

Patches are cut inside each region, so no validation patch overlaps a training pixel. Training
uses Adam, ReduceLROnPlateau and early stopping on the held-out error. torch is imported only
when training starts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..io.volume import Volume
from ..progress import Progress, ProgressGenerator, drain
from .defocus import Optics, defocus
from .metrics import focus_channel
from .model import build_model, import_torch
from .patches import CROP, MARGIN, PATCH, normalise_patches

#: Pixels left out between a training region and the validation strip of the same image.
GAP = 16


@dataclass(frozen=True)
class Region:
    """A rectangle ``[y0, y1) x [x0, x1)`` of one image of a source (``image`` None: the same
    rectangle of every image, as for a focus stack)."""

    source: str
    image: int | None
    y0: int
    y1: int
    x0: int
    x1: int

    def as_dict(self) -> dict:
        """JSON-friendly form."""
        return {
            "source": self.source,
            "image": self.image,
            "rows": [self.y0, self.y1],
            "cols": [self.x0, self.x1],
        }


@dataclass(frozen=True)
class TrainValSplit:
    """Sharp training and validation images (gray float32 in [0, 1], cut to their regions),
    the regions they come from, and real patches with known distance for each side."""

    train: tuple[np.ndarray, ...]
    val: tuple[np.ndarray, ...]
    train_regions: tuple[Region, ...]
    val_regions: tuple[Region, ...]
    train_real: tuple[tuple[np.ndarray, float], ...] = ()
    val_real: tuple[tuple[np.ndarray, float], ...] = ()
    notes: tuple[str, ...] = field(default=())

    def describe(self) -> dict:
        """What was held out, for the model's JSON description."""
        return {
            "rule": "validation holds out whole images of each source with several images, "
            f"and a strip along the longer side (gap {GAP} px) of a single image or a real "
            "focus stack; no validation patch is cut from a training region",
            "train": [r.as_dict() for r in self.train_regions],
            "val": [r.as_dict() for r in self.val_regions],
            "real_patches": {"train": len(self.train_real), "val": len(self.val_real)},
            "notes": list(self.notes),
        }


def strip_bounds(length: int, *, val_fraction: float, min_part: int) -> tuple[int, int] | None:
    """Where to cut a side of ``length`` pixels: ``(train_end, val_start)`` with the training
    part ``[0, train_end)`` and the validation strip ``[val_start, length)``, :data:`GAP`
    apart and both at least ``min_part`` long; None when the side is too short."""
    val = max(min_part, int(round(val_fraction * length)))
    train_end = length - val - GAP
    if train_end < min_part:
        return None
    return train_end, length - val


def _gray(img: np.ndarray) -> np.ndarray:
    g = np.asarray(img)
    if g.dtype == np.float32 and g.ndim == 2:
        return g
    return focus_channel(g)


def _cut(g: np.ndarray, axis: int, lo: int, hi: int) -> np.ndarray:
    return g[lo:hi] if axis == 0 else g[:, lo:hi]


def split_sources(
    sources: Mapping[str, Sequence[np.ndarray]], *, val_fraction: float = 0.2
) -> TrainValSplit:
    """Split sharp images into training and validation without sharing any region.

    Parameters
    ----------
    sources
        Images by source name (a source is one image, or a series such as the sections of one
        block). Gray float images in [0, 1] are used as they are; others go through
        :func:`.metrics.focus_channel`.
    val_fraction
        Share of each source held out (whole images, or the strip's share of the longer side).

    Raises
    ------
    InputError
        When no image is large enough to train on, or a single image is too small to hold out
        a strip.
    """
    if not 0 < val_fraction < 1:
        raise InputError(
            f"The validation share must be between 0 and 1, not {val_fraction}.",
            option="val_fraction",
        )
    train, val, tr_reg, va_reg, notes = [], [], [], [], []
    for name, images in sources.items():
        imgs = [(i, _gray(im)) for i, im in enumerate(images)]
        usable = [(i, g) for i, g in imgs if min(g.shape) >= CROP]
        if len(usable) < len(imgs):
            notes.append(
                f"{name}: {len(imgs) - len(usable)} image(s) under {CROP} x {CROP} px left out"
            )
        if not usable:
            continue
        if len(usable) >= 2:
            k = min(len(usable) - 1, max(1, int(round(val_fraction * len(usable)))))
            for j, (i, g) in enumerate(usable):
                region = Region(name, i, 0, g.shape[0], 0, g.shape[1])
                (val if j >= len(usable) - k else train).append(g)
                (va_reg if j >= len(usable) - k else tr_reg).append(region)
            continue
        i, g = usable[0]
        h, w = g.shape
        axis = 1 if w >= h else 0
        cut = strip_bounds(g.shape[axis], val_fraction=val_fraction, min_part=CROP)
        if cut is None:
            raise InputError(
                f"The only image of '{name}' ({h} x {w} px) is too small to hold out a "
                f"validation strip; give an image of at least {2 * CROP + GAP} px along its "
                "longer side, or several images."
            )
        train_end, val_start = cut
        train.append(_cut(g, axis, 0, train_end))
        val.append(_cut(g, axis, val_start, g.shape[axis]))
        if axis == 1:
            tr_reg.append(Region(name, i, 0, h, 0, train_end))
            va_reg.append(Region(name, i, 0, h, val_start, w))
        else:
            tr_reg.append(Region(name, i, 0, train_end, 0, w))
            va_reg.append(Region(name, i, val_start, h, 0, w))
    if not train or not val:
        raise InputError(
            f"No sharp image of at least {CROP} x {CROP} px to train on; give larger images."
        )
    return TrainValSplit(tuple(train), tuple(val), tuple(tr_reg), tuple(va_reg), notes=tuple(notes))


def stack_patches(
    planes: Sequence[np.ndarray],
    z_numbers: Sequence[int],
    *,
    focus_z: float,
    step_um: float,
    val_fraction: float = 0.2,
    name: str = "stack",
) -> tuple[list[tuple[np.ndarray, float]], list[tuple[np.ndarray, float]], Region, Region]:
    """Patches of a real focus stack with their known distance ``|z - focus_z| * step_um``,
    split by a strip along the longer side (the same strip on every plane).

    Returns
    -------
    train, val
        ``(patch, distance_um)`` pairs.
    train_region, val_region
        The rectangles they come from (on every plane).

    Raises
    ------
    InputError
        When the planes are too small to hold out a strip of whole patches.
    """
    if len(planes) == 0:
        raise InputError("The focus stack has no planes; give a stack of sections.", option="stack")
    g0 = _gray(planes[0])
    h, w = g0.shape
    axis = 1 if w >= h else 0
    cut = (
        strip_bounds(g0.shape[axis], val_fraction=val_fraction, min_part=PATCH)
        if min(h, w) >= PATCH
        else None
    )
    if cut is None:
        raise InputError(
            f"The focus stack's planes ({h} x {w} px) are too small to hold out a validation "
            f"strip; give planes of at least {PATCH} x {2 * PATCH + GAP} px.",
            option="stack",
        )
    train_end, val_start = cut
    train, val = [], []
    for img, z in zip(planes, z_numbers, strict=True):
        g = _gray(img)
        d = float(abs(z - focus_z) * step_um)
        for part, lo, hi in ((train, 0, train_end), (val, val_start, g.shape[axis])):
            region = _cut(g, axis, lo, hi)
            for y in range(0, region.shape[0] - PATCH + 1, PATCH):
                for x in range(0, region.shape[1] - PATCH + 1, PATCH):
                    part.append((region[y : y + PATCH, x : x + PATCH].copy(), d))
    if axis == 1:
        regions = Region(name, None, 0, h, 0, train_end), Region(name, None, 0, h, val_start, w)
    else:
        regions = Region(name, None, 0, train_end, 0, w), Region(name, None, val_start, h, 0, w)
    return train, val, *regions


class FocusDataset:
    """Sharp gray images defocused on the fly, plus real patches with a known distance.

    Parameters
    ----------
    sharp
        Gray float images in [0, 1]; those under ``CROP`` x ``CROP`` pixels are left out.
    optics
        The synthetic defocus.
    seed
        Random seed (patch choice, distance, noise).
    real
        ``(patch, distance_um)`` pairs from real focus stacks (drawn 30% of the time).
    """

    def __init__(
        self,
        sharp: Sequence[np.ndarray],
        optics: Optics,
        *,
        seed: int = 0,
        real: Sequence[tuple[np.ndarray, float]] | None = None,
    ) -> None:
        self.sharp = [np.asarray(s, np.float32) for s in sharp if min(np.shape(s)) >= CROP]
        if not self.sharp:
            raise InputError(
                f"No sharp image of at least {CROP} x {CROP} px to train on; give larger images."
            )
        self.optics = optics
        self.rng = np.random.default_rng(seed)
        self.real = list(real or [])

    def crop(self) -> np.ndarray:
        """One sharp ``CROP`` x ``CROP`` crop of a random image (tissue preferred: a crop with
        some contrast, else the last of 20 tries)."""
        img = self.sharp[self.rng.integers(len(self.sharp))]
        for _ in range(20):
            y = self.rng.integers(0, img.shape[0] - CROP + 1)
            x = self.rng.integers(0, img.shape[1] - CROP + 1)
            p = img[y : y + CROP, x : x + CROP]
            if p.std() > 0.03:  # tissue, not empty slide
                break
        return p

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` normalised patches ``(n, 1, 64, 64)`` and their distances in µm."""
        xs, ys = [], []
        for _ in range(n):
            if self.real and self.rng.random() < 0.3:
                p, d = self.real[self.rng.integers(len(self.real))]
                xs.append(p[:PATCH, :PATCH])
                ys.append(d)
                continue
            d = float(self.rng.uniform(0, self.optics.max_defocus_um))
            p = self.crop()
            if self.rng.random() < 0.5:
                p = p[::-1]
            if self.rng.random() < 0.5:
                p = p.T
            blurred = defocus(np.ascontiguousarray(p), d, self.optics, self.rng)
            xs.append(blurred[MARGIN : MARGIN + PATCH, MARGIN : MARGIN + PATCH])
            ys.append(d)
        return normalise_patches(np.stack(xs))[:, None], np.array(ys, np.float32)


def iter_train(
    split: TrainValSplit,
    *,
    optics: Optics,
    steps: int = 1500,
    batch: int = 64,
    val_batches: int = 8,
    seed: int = 0,
    patience: int = 6,
    eval_every: int = 150,
) -> ProgressGenerator[tuple[object, list[dict]]]:
    """Train a FocusNet on a split; the held-out error drives the learning rate and early
    stopping, and the best weights are kept.

    Parameters
    ----------
    split
        From :func:`split_sources` (with real patches added, if any).
    optics
        The synthetic defocus.
    steps
        Largest number of optimisation steps.
    batch
        Patches per step (and per validation batch).
    val_batches
        Size of the fixed validation set, in batches.
    seed
        Random seed (weights, patches, noise).
    patience
        Evaluations without improvement before stopping.
    eval_every
        Steps between evaluations.

    Yields
    ------
    Progress
        One per step (stage ``"train"``), the latest validation error in the message.

    Returns
    -------
    model, history
        The trained model (in eval mode) and one entry per evaluation (``step``,
        ``train_loss``, ``val_mae_um``, ``lr``).
    """
    torch = import_torch()
    if steps < 1:
        raise InputError(f"Training needs at least one step, not {steps}.", option="steps")
    torch.manual_seed(seed)
    data = FocusDataset(split.train, optics, seed=seed, real=split.train_real)
    held = FocusDataset(split.val, optics, seed=seed + 1, real=split.val_real)
    vx, vy = zip(*[held.batch(batch) for _ in range(val_batches)], strict=True)
    vx, vy = torch.from_numpy(np.concatenate(vx)), torch.from_numpy(np.concatenate(vy))
    model = build_model()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2)
    best, best_state, bad, history = math.inf, None, 0, []
    message = ""
    for step in range(1, steps + 1):
        model.train()
        x, y = data.batch(batch)
        loss = torch.nn.functional.smooth_l1_loss(model(torch.from_numpy(x)), torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        stop = False
        if step % eval_every == 0 or step == steps:
            model.eval()
            with torch.no_grad():
                mae = float((model(vx) - vy).abs().mean())
            sched.step(mae)
            history.append(
                {
                    "step": step,
                    "train_loss": float(loss.item()),
                    "val_mae_um": mae,
                    "lr": float(opt.param_groups[0]["lr"]),
                }
            )
            message = f"validation MAE {mae:.3f} µm"
            if mae < best - 1e-3:
                best, bad = mae, 0
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
            else:
                bad += 1
                stop = bad >= patience
        yield Progress(steps if stop else step, steps, message, stage="train")
        if stop:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, history


def train_info(history: list[dict], split: TrainValSplit, **extra) -> dict:
    """The description saved beside a model: steps run, best held-out error, history, split."""
    return {
        **extra,
        "steps": history[-1]["step"] if history else 0,
        "val_mae_um": min(h["val_mae_um"] for h in history) if history else None,
        "split": split.describe(),
        "history": history,
    }


def iter_train_focus_model(
    sharp: Volume,
    *,
    optics: Optics | None = None,
    steps: int = 1500,
    stack: Volume | None = None,
    stack_focus_z: int | None = None,
    stack_step_um: float | None = None,
    val_fraction: float = 0.2,
    batch: int = 64,
    seed: int = 0,
) -> ProgressGenerator[tuple[object, dict]]:
    """Train the focus regressor on in-focus sections (and a real focus stack).

    The sections are one source: their last ``val_fraction`` (whole planes; a strip for a
    single plane) is held out for validation, as is a strip of the focus stack.

    Parameters
    ----------
    sharp
        In-focus sections, gray or RGB, at least 80 x 80 px.
    optics
        Pixel size, numerical aperture, wavelength and largest defocus of the synthetic blur
        (default :class:`.defocus.Optics`).
    steps
        Largest number of optimisation steps (training stops early when the held-out error
        stops improving).
    stack
        A real focus series of one field of view, whose in-focus plane and step are known.
    stack_focus_z
        z number of the stack's in-focus plane (needed with ``stack``).
    stack_step_um
        Distance between the stack's planes in µm (needed with ``stack``).
    val_fraction
        Share held out for validation.
    batch
        Patches per step.
    seed
        Random seed.

    Yields
    ------
    Progress
        Reading (stage ``"read"``), then one per step (stage ``"train"``).

    Returns
    -------
    model, info
        The trained model and its description (``val_mae_um``, ``history``, ``split``,
        ``steps``, ``seconds``, ``seed``, ``sections``, ``real_stack``), ready for
        :func:`.model.save_focus_model`.

    Raises
    ------
    InputError
        When stack arguments are missing or invalid, images are too small, or torch is
        missing (all before training starts).
    """
    optics = optics or Optics()
    if stack is not None:
        if stack_focus_z is None:
            raise InputError(
                "A real focus stack needs the z number of its in-focus plane.",
                option="stack_focus_z",
            )
        if stack_step_um is None or not stack_step_um > 0:
            raise InputError(
                "A real focus stack needs the distance between its planes in µm (above 0).",
                option="stack_step_um",
            )
    if steps < 1:
        raise InputError(f"Training needs at least one step, not {steps}.", option="steps")
    import_torch()  # say it is missing before reading anything
    t0 = time.time()
    n = int(sharp.shape[0])
    n_stack = int(stack.shape[0]) if stack is not None else 0
    planes = []
    for i in range(n):
        planes.append(focus_channel(np.asarray(sharp.data[i].compute())))
        yield Progress(i + 1, n + n_stack, "sharp sections", stage="read")
    split = split_sources({"sections": planes}, val_fraction=val_fraction)
    if stack is not None:
        st_planes = []
        for i in range(n_stack):
            st_planes.append(focus_channel(np.asarray(stack.data[i].compute())))
            yield Progress(n + i + 1, n + n_stack, "focus stack", stage="read")
        zs = stack.meta.with_planes(n_stack).z_numbers
        tr, va, tr_reg, va_reg = stack_patches(
            st_planes, zs, focus_z=stack_focus_z, step_um=stack_step_um, val_fraction=val_fraction
        )
        split = TrainValSplit(
            split.train,
            split.val,
            split.train_regions + (tr_reg,),
            split.val_regions + (va_reg,),
            tuple(tr),
            tuple(va),
            split.notes,
        )
    model, history = yield from iter_train(
        split, optics=optics, steps=steps, batch=batch, seed=seed
    )
    meta = sharp.meta.with_planes(n)
    info = train_info(
        history,
        split,
        sections=[{"z": z, "file": f} for z, f in zip(meta.z_numbers, meta.files, strict=True)],
        real_stack=(
            {"planes": n_stack, "focus_z": stack_focus_z, "step_um": stack_step_um}
            if stack is not None
            else None
        ),
        seed=seed,
        seconds=time.time() - t0,
    )
    return model, info


def train_focus_model(
    sharp: Volume,
    *,
    optics: Optics | None = None,
    steps: int = 1500,
    stack: Volume | None = None,
    stack_focus_z: int | None = None,
    stack_step_um: float | None = None,
    val_fraction: float = 0.2,
    batch: int = 64,
    seed: int = 0,
) -> tuple[object, dict]:
    """:func:`iter_train_focus_model` run to the end (same parameters); returns model and info."""
    return drain(
        iter_train_focus_model(
            sharp,
            optics=optics,
            steps=steps,
            stack=stack,
            stack_focus_z=stack_focus_z,
            stack_step_um=stack_step_um,
            val_fraction=val_fraction,
            batch=batch,
            seed=seed,
        )
    )


__all__ = [
    "GAP",
    "FocusDataset",
    "Region",
    "TrainValSplit",
    "iter_train",
    "iter_train_focus_model",
    "split_sources",
    "stack_patches",
    "strip_bounds",
    "train_focus_model",
    "train_info",
]
