"""Optional pretrained backend from a local checkpoint (never downloaded at run time).

The weight-free default needs no file. A user who has an nnInteractive model folder (the
official checkpoint, or one trained with nnInteractive's trainer) points the segmentation at
it: every object is segmented by the network from the same clicks and scribbles, in a window
around them, and the checkpoint's licence is shown. micro-sam is recognised (a ``.pt``/``.pth``
file) and refused with one sentence: its 3D propagation is not driven by this version.

The nnInteractive package is imported only here, only when a checkpoint is given.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..progress import Progress, ProgressGenerator
from .masks import ObjectMasks, crop_mask
from .prompts import Prompt, Scribbles

#: backend name -> (importable package, how to install it, checkpoint files it reads)
BACKENDS = {
    "micro-sam": ("micro_sam", "conda install -c conda-forge micro_sam", ".pt/.pth SAM checkpoint"),
    "nnInteractive": ("nnInteractive", "pip install nnInteractive", "nnInteractive model folder"),
}
#: files an nnInteractive model folder must hold (besides ``fold_*/checkpoint_final.pth``)
NNINTERACTIVE_FILES = ("plans.json", "dataset.json")
NNINTERACTIVE_SESSION_FILES = ("inference_info.json", "inference_session_class.json")
#: what nnInteractive reports for a folder without a LICENSE file
_MISSING_LICENCE = "!!MISSING!!"


def check_model_backend(checkpoint: str | os.PathLike) -> str:
    """Check that a local checkpoint can be used, before any work, and return its backend.

    Parameters
    ----------
    checkpoint
        An nnInteractive model folder (``plans.json``, ``dataset.json``,
        ``inference_info.json``, ``fold_N/checkpoint_final.pth``; a ``LICENSE`` file whose first
        line names the licence). A micro-sam ``.pt``/``.pth`` file is recognised and refused.

    Returns
    -------
    str
        ``"nnInteractive"``.

    Raises
    ------
    InputError
        When the checkpoint is missing or incomplete, the package that reads it is not
        installed, or it is a micro-sam file; the message names the package and the file.
    """
    p = Path(os.fspath(checkpoint)).expanduser()
    if not p.exists():
        raise InputError(
            f"The model checkpoint '{p}' does not exist; give a local nnInteractive model folder "
            "(nothing is downloaded), or leave the model out to use the weight-free default.",
            option="model",
        )
    if p.is_file():
        if p.suffix.lower() in (".pt", ".pth"):
            raise InputError(
                f"'{p.name}' looks like a micro-sam checkpoint; this version drives nnInteractive "
                "model folders only, so give one of those or leave the model out to use the "
                "weight-free default.",
                option="model",
            )
        raise InputError(
            f"'{p.name}' is a file; give the nnInteractive model folder itself (the one that "
            "holds plans.json and fold_N/checkpoint_final.pth, unpacked), or leave the model "
            "out to use the weight-free default.",
            option="model",
        )
    package, install, kind = BACKENDS["nnInteractive"]
    if importlib.util.find_spec(package) is None:
        raise InputError(
            f"'{p.name}' looks like an {kind}, which needs the {package} package ({install}); "
            "it is not installed. Install it, or leave the model out to use the weight-free "
            "default.",
            option="model",
        )
    missing = [f for f in NNINTERACTIVE_FILES if not (p / f).is_file()]
    if not any((p / f).is_file() for f in NNINTERACTIVE_SESSION_FILES):
        missing.append(NNINTERACTIVE_SESSION_FILES[0])
    if not list(p.glob("fold_*/checkpoint_final.pth")):
        missing.append("fold_N/checkpoint_final.pth")
    if missing:
        raise InputError(
            f"The model folder '{p}' lacks {', '.join(missing)}; give the folder that holds an "
            "nnInteractive model's plans.json and fold_N/checkpoint_final.pth, or leave the "
            "model out to use the weight-free default.",
            option="model",
        )
    return "nnInteractive"


def default_device() -> Any:
    """torch's CUDA device when one is present, else the CPU."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class PretrainedModel:
    """A loaded nnInteractive model and what a user should be told about it.

    Attributes
    ----------
    folder
        The model folder.
    licence
        The licence named by the folder's ``LICENSE`` file (its first line).
    input_channels
        Image channels the network takes (RGB sections are given as luminance to a
        one-channel network).
    patch_size
        The network's input patch (z, y, x) in voxels; the window around an object's prompts
        reaches this far on each side.
    log
        What the package printed while loading (kept off the command line's output).
    """

    folder: Path
    licence: str
    input_channels: int
    patch_size: tuple[int, int, int]
    session: Any = field(repr=False)
    log: str = field(default="", repr=False)


def load_pretrained(checkpoint: str | os.PathLike, *, device: Any = None) -> PretrainedModel:
    """Load a local nnInteractive model folder (see :func:`check_model_backend`).

    Parameters
    ----------
    checkpoint
        The model folder.
    device
        A torch device; default :func:`default_device`.

    Returns
    -------
    PretrainedModel
    """
    check_model_backend(checkpoint)
    folder = Path(os.fspath(checkpoint)).expanduser()
    from nnInteractive.inference.inference_session import nnInteractiveInferenceSession

    device = device if device is not None else default_device()
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):
            session = nnInteractiveInferenceSession(
                device=device,
                use_torch_compile=False,
                verbose=False,
                torch_n_threads=os.cpu_count() or 1,
                do_autozoom=True,
                interactions_storage="tensor",
                enable_undo=False,
            )
            session.initialize_from_trained_model_folder(str(folder))
    except Exception as e:  # the package's own errors: a bad plans.json, weights of another net
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(
            f"nnInteractive could not load the model folder '{folder}' ({first}); give a "
            "complete model folder or leave the model out to use the weight-free default.",
            option="model",
        ) from None
    licence = str(session.license or _MISSING_LICENCE)
    if licence == _MISSING_LICENCE:
        licence = "unknown (the model folder has no LICENSE file)"
    patch = tuple(int(v) for v in session.configuration_manager.patch_size)
    channels = len(session.dataset_json["channel_names"])
    return PretrainedModel(folder, licence, channels, patch, session, log.getvalue())


def _model_input(block: np.ndarray, rgb: bool, channels: int) -> np.ndarray:
    """(C, Z, Y, X) float32 for the network from a (Z, Y, X[, C]) block."""
    a = np.asarray(block, dtype=np.float32)
    if not rgb:
        return np.repeat(a[None], channels, axis=0)
    a = np.moveaxis(a[..., :3], -1, 0)
    if channels == a.shape[0]:
        return np.ascontiguousarray(a)
    lum = 0.299 * a[0] + 0.587 * a[1] + 0.114 * a[2]
    return np.repeat(lum[None], channels, axis=0)


def object_window(
    points: np.ndarray, shape: tuple[int, int, int], reach: tuple[int, int, int]
) -> tuple[slice, slice, slice]:
    """The box around (N, 3) voxel coordinates widened by ``reach`` per axis, in the volume."""
    lo = np.maximum(points.min(axis=0) - np.asarray(reach), 0)
    hi = np.minimum(points.max(axis=0) + np.asarray(reach) + 1, np.asarray(shape))
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


@contextlib.contextmanager
def _seeded(seed: int):
    """numpy's and torch's global random state seeded for the block, then given back:
    nnInteractive places some of its refinement boxes at random (``np.random``), so the same
    clicks gave masks that differed by up to a third of their voxels from run to run."""
    import torch

    state = np.random.get_state()  # noqa: NPY002 (the package draws from the legacy global)
    np.random.seed(seed)  # noqa: NPY002
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        np.random.set_state(state)  # noqa: NPY002


def iter_segment_pretrained(
    data: Any,
    model: PretrainedModel,
    prompts: list[Prompt],
    objects: list[int],
    *,
    rgb: bool = False,
    scribbles: Scribbles | None = None,
) -> ProgressGenerator[ObjectMasks]:
    """Segment every object with the pretrained network from its clicks and scribbles.

    Each object is segmented on its own (nnInteractive segments one object at a time): its
    window (its prompts and scribbles widened by the network's patch) is read, and its clicks
    are given in file order, each followed by a prediction, as a user's clicks would be; its
    scribbles are given last, the object's label as positive and every label that is not an
    object as negative.

    Parameters
    ----------
    data
        The (Z, Y, X[, C]) volume, numpy or dask (only the windows are read).
    model
        From :func:`load_pretrained`.
    prompts
        All clicks.
    objects
        The ids to segment.
    rgb
        Whether the last axis holds colour.
    scribbles
        Scribbled voxels by label.

    Returns
    -------
    dict
        Object id -> section -> cropped mask (:mod:`.masks`); yields progress per object.
    """
    shape = tuple(int(s) for s in data.shape[:3])
    background = [k for k in (scribbles.labels if scribbles else []) if k not in objects]
    drawn_labels = scribbles.points if scribbles else {}
    plans = []
    for obj in objects:
        clicks = [p for p in prompts if p.object == obj]
        marks = {k: drawn_labels[k] for k in [obj, *background] if k in drawn_labels}
        pts = [np.array([[p.z, p.y, p.x] for p in clicks], int).reshape(-1, 3)]
        pts += [v for k, v in marks.items() if k == obj]
        pts = np.concatenate(pts)
        if len(pts):
            plans.append((obj, clicks, marks, object_window(pts, shape, model.patch_size)))
    total = sum(1 + len(c) + len(m) for _, c, m, _ in plans)
    done = 0
    masks: ObjectMasks = {}
    s = model.session

    def call(step: int, fn, *args, **kwargs):
        # the package prints on stdout and draws random boxes: quiet and seeded, per call
        # (never across a yield, which would hand the caller a redirected stdout)
        with contextlib.redirect_stdout(io.StringIO()), _seeded(step):
            return fn(*args, **kwargs)

    for obj, clicks, marks, win in plans:
        yield Progress(done, total, f"object {obj}: reading its window", "segment")
        origin = np.array([w.start for w in win])
        image = _model_input(data[win], rgb, model.input_channels)
        done += 1
        if not np.any(image):
            masks[obj] = {}
            done += len(clicks) + len(marks)
            continue
        target = np.zeros(image.shape[1:], np.uint8)
        call(obj, s.set_image, image)
        s.set_target_buffer(target)
        for n, p in enumerate(clicks):
            kind = "click" if p.positive else "negative click"
            yield Progress(done, total, f"object {obj}: {kind} {n + 1} of {len(clicks)}", "segment")
            local = tuple(int(v) for v in np.array([p.z, p.y, p.x]) - origin)
            call(obj * 1000 + n, s.add_point_interaction, local, include_interaction=p.positive)
            done += 1
        for n, (k, v) in enumerate(marks.items()):
            yield Progress(done, total, f"object {obj}: scribbles {k}", "segment")
            done += 1
            local = v - origin
            inside = np.all((local >= 0) & (local < np.array(target.shape)), axis=1)
            if not inside.any():
                continue
            drawn = np.zeros(target.shape, np.uint8)
            drawn[tuple(local[inside].T)] = 1
            call(obj * 1000 + 500 + n, s.add_scribble_interaction, drawn, k == obj)
        per_z = {}
        for dz in range(target.shape[0]):
            c = crop_mask(target[dz] > 0, int(origin[1]), int(origin[2]))
            if c is not None:
                per_z[int(origin[0]) + dz] = c
        masks[obj] = per_z
    yield Progress(total, total, "nnInteractive: done", "segment")
    return masks
