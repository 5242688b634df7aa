"""Interpolate a stack: a lazy volume whose generated planes are flagged synthetic, and a
resumable folder writer."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np

from ..errors import InputError
from ..io.meta import VolumeMeta, planes_of
from ..io.naming import NamePattern
from ..io.volume import Volume
from ..progress import Progress, ProgressGenerator, drain
from .flow import PairFlow, cast_like, estimate_pair_flow, synthesize
from .plan import Plan, make_plan

METHODS = ("flow", "linear", "model", "learned")
MANIFEST = ".histovol-interpolate.json"


def interpolate_pair(
    a: np.ndarray,
    b: np.ndarray,
    ts: list[float],
    *,
    method: str = "flow",
    runner=None,
    tile: int = 512,
) -> np.ndarray:
    """Frames at times ``ts`` between two sections (same shape), in their dtype: (len(ts), ...)."""
    check_method(method)
    flow = estimate_pair_flow(a, b) if method == "flow" else None
    return np.stack(
        [frame_at(a, b, t, method=method, flow=flow, runner=runner, tile=tile) for t in ts]
    )


def check_method(method: str) -> None:
    """Raise :class:`InputError` unless ``method`` is one of :data:`METHODS`."""
    if method not in METHODS:
        raise InputError(
            f"Unknown interpolation method '{method}'; use one of {', '.join(METHODS)}."
        )


def frame_at(
    a: np.ndarray,
    b: np.ndarray,
    t: float,
    *,
    method: str = "flow",
    flow: PairFlow | None = None,
    runner=None,
    tile: int = 512,
) -> np.ndarray:
    """The one frame at time ``t`` between sections ``a`` and ``b``, in their dtype.

    Parameters
    ----------
    a, b
        The two sections (same shape), at t = 0 and t = 1.
    t
        Where the frame lies between them, in (0, 1).
    method
        ``flow``, ``linear`` or ``model`` (see :func:`iter_interpolate`).
    flow
        The pair's flow (:func:`estimate_pair_flow`), for ``flow``: estimated here when None.
    runner
        The model runner (:class:`~.model.ModelRunner`), for ``model``.
    tile
        The model's tile size.

    Returns
    -------
    numpy.ndarray
        The frame, rounded and clipped to the sections' dtype.
    """
    if method == "flow":
        f = synthesize(a, b, flow if flow is not None else estimate_pair_flow(a, b), t)
    elif method == "linear":
        f = (1 - t) * a.astype(np.float32) + t * b.astype(np.float32)
    elif method == "model":
        from .model import run_tiled

        f = run_tiled(runner, a, b, t, tile=tile)
    elif method == "learned":
        raise InputError(
            "The learned method reconstructs from the whole stack, not from one pair; use "
            "interpolate or live_interpolate with it.",
            option="method",
        )
    else:
        check_method(method)
    return cast_like(f, a.dtype)


@dataclass
class InterpolationResult:
    """The interpolated volume (lazy) and its plan (which planes are generated, from what)."""

    volume: Volume
    plan: Plan
    runner: Any = None

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()
            self.runner = None


def interpolate(volume: Volume, **kwargs: Any) -> InterpolationResult:
    """Plan and build the interpolated volume (drains :func:`iter_interpolate`)."""
    return drain(iter_interpolate(volume, **kwargs))


def iter_interpolate(
    volume: Volume,
    *,
    frames_between: int = 0,
    replace_z: tuple[int, ...] | list[int] = (),
    method: str = "flow",
    model_dir: str | os.PathLike | None = None,
    tile: int = 512,
    time_budget: float | None = None,
    seed: int = 0,
    should_stop=None,
    checkpoint: str | os.PathLike | None = None,
) -> ProgressGenerator[InterpolationResult]:
    """Build the interpolated volume lazily: one dask task per neighbouring pair (flow is
    estimated once per pair), so pairs run in parallel and nothing is computed until used.

    Parameters
    ----------
    volume
        (Z, Y, X[, C]) sections with their z numbers (gaps are missing numbers).
    frames_between
        N evenly spaced frames between neighbouring sections (0: only fill the gaps). Sections
        are renumbered z0 + (z - z0)(N + 1); the z spacing becomes spacing / (N + 1).
    replace_z
        z numbers of damaged sections to regenerate from their neighbours.
    method
        ``flow`` (default), ``linear`` (cross-fade), ``model`` (a FILM-style SavedModel in
        ``model_dir``, run in a child process), or ``learned`` (the self-supervised axial
        model of :mod:`~napari_histovol.core.isotropic`, trained on these sections).
    time_budget, seed, should_stop, checkpoint
        For ``learned``: seconds to train and apply the model, the training seed, a callable
        that ends training early, and a file that keeps the trained model for a rerun.
    """
    check_method(method)
    if method == "model" and not model_dir:
        raise InputError(
            "The model method needs a model folder (a TensorFlow SavedModel); give its path.",
            option="model_dir",
        )
    meta = volume.meta.with_planes(volume.shape[0])
    plan = make_plan(meta.z_numbers, frames_between=frames_between, replace=tuple(replace_z))
    yield Progress(0, 1, "planning", stage="interpolate")
    if method == "learned":
        out = yield from _iter_learned(volume, plan, time_budget, seed, should_stop, checkpoint)
        return InterpolationResult(Volume(out, interpolated_meta(meta, plan, method=method)), plan)
    runner = None
    if method == "model":
        from .model import ModelRunner

        runner = ModelRunner(model_dir)
    data = volume.data.rechunk((1,) + tuple(volume.shape[1:]))
    pieces = []
    pairs = plan.pairs()
    done_pairs: set = set()
    shape1 = tuple(volume.shape[1:])
    for f in plan.frames:
        if not f.synthetic:
            pieces.append(data[f.source : f.source + 1])
            continue
        key = (f.a, f.b)
        if key in done_pairs:
            continue
        done_pairs.add(key)
        idx = pairs[key]
        ts = [plan.frames[i].t for i in idx]
        block = dask.delayed(interpolate_pair, pure=True)(
            data[f.a],
            data[f.b],
            ts,
            method=method,
            runner=runner,
            tile=tile,
            dask_key_name=f"interp-{method}-{_token(volume, f.a, f.b, ts)}",
        )
        pieces.append(da.from_delayed(block, shape=(len(ts),) + shape1, dtype=volume.dtype))
    out = da.concatenate(pieces, axis=0)
    new_meta = interpolated_meta(meta, plan, method=method)
    yield Progress(1, 1, f"{plan.n_synthetic} planes to generate", stage="interpolate")
    return InterpolationResult(Volume(out, new_meta), plan, runner)


def kept_sections(volume: Volume, plan: Plan) -> Volume:
    """The sections ``plan`` keeps (the replaced ones left out), with their metadata: what the
    learned method trains on and reconstructs from."""
    keep = plan.kept
    meta = planes_of(volume.meta.with_planes(volume.shape[0]), keep)
    data = volume.data if len(keep) == volume.shape[0] else volume.data[keep]
    return Volume(data, meta)


def _iter_learned(volume, plan, time_budget, seed, should_stop, checkpoint):
    """The planned planes from the axial model trained on the kept sections: the plan's grid
    is the model's output grid at factor N + 1 over the kept sections' numbers."""
    from ..isotropic import DEFAULT_TIME_BUDGET, iter_isotropic

    result = yield from iter_isotropic(
        kept_sections(volume, plan),
        factor=plan.frames_between + 1,
        time_budget=time_budget or DEFAULT_TIME_BUDGET,
        seed=seed,
        should_stop=should_stop,
        checkpoint=checkpoint,
    )
    return result.volume.data


def interpolated_meta(meta: VolumeMeta, plan: Plan, *, method: str) -> VolumeMeta:
    """The metadata of an interpolated volume: renumbered z, synthetic flags, files of the
    measured planes, z spacing / (N + 1), and where every plane comes from.

    Parameters
    ----------
    meta
        The sections' metadata (one entry per section).
    plan
        The plan made from its z numbers (:func:`~.plan.make_plan`).
    method
        The interpolation method, recorded with the frame count and the replaced sections.

    Returns
    -------
    VolumeMeta
        One entry per planned plane; ``extra["planes"]`` holds :func:`plane_sources`.
    """
    from ..sections import chain_plane_sources, recorded_plane_sources, source_files

    step = plan.frames_between + 1
    m = meta.with_planes(len(meta.z_numbers))
    files = tuple(m.files[f.source] if not f.synthetic else "" for f in plan.frames)
    # a plane copied from a generated plane of the input (a built volume interpolated again)
    # is generated too; planes are named by the measured sections behind the input
    synthetic = tuple(f.synthetic or bool(m.synthetic[f.source]) for f in plan.frames)
    sections = source_files(m) if recorded_plane_sources(m) is not None else {}
    return replace(
        meta,
        z_numbers=tuple(f.z for f in plan.frames),
        synthetic=synthetic,
        gaps=(),
        files=files,
        scale=(meta.scale[0] / step, meta.scale[1], meta.scale[2]),
        extra={
            **{k: v for k, v in meta.extra.items() if k not in ("canvas_offsets", "source_shapes")},
            "planes_per_section": meta.planes_per_section * step,  # chained: multiplied
            "interpolation": {
                "method": method,
                "frames_between": plan.frames_between,
                "replaced_z": list(plan.replaced),
                "source_z": list(sections) if sections else list(meta.z_numbers),
                "source_files": list(sections.values()) if sections else list(meta.files),
            },
            # per output plane: the section it shows, or the two it was made from and where
            "planes": chain_plane_sources(m, plane_sources(plan, meta.z_numbers)),
        },
    )


def plane_sources(plan: Plan, z_numbers) -> list[dict]:
    """Where each planned plane comes from: ``{"source_z": z}`` for a measured section (its
    number before renumbering), ``{"between": [z_a, z_b], "t": t}`` for a generated one (with
    ``"replaces": z`` when it regenerates a damaged section)."""
    zs = list(z_numbers)
    step = plan.frames_between + 1
    replaced = {zs[0] + (r - zs[0]) * step: r for r in plan.replaced}
    out = []
    for f in plan.frames:
        if f.synthetic:
            src = {"between": [int(zs[f.a]), int(zs[f.b])], "t": round(float(f.t), 6)}
            if f.z in replaced:
                src["replaces"] = int(replaced[f.z])
            out.append(src)
        else:
            out.append({"source_z": int(zs[f.source])})
    return out


def _token(volume: Volume, a: int, b: int, ts: list[float]) -> str:
    return hashlib.sha1(f"{volume.data.name}-{a}-{b}-{ts}".encode()).hexdigest()[:16]


# ------------------------------------------------------------------ resumable folder output


def iter_write_interpolated_folder(
    result: InterpolationResult,
    out: str | os.PathLike,
    *,
    pattern: NamePattern | None = None,
    ext: str | None = None,
    overwrite: bool = False,
    params: dict | None = None,
) -> ProgressGenerator[Path]:
    """Write the interpolated stack into a folder, one file per plane, resumably.

    The folder is written under a hidden temporary name (``.OUT.partial``) and renamed when
    complete, so a folder under the final name is always whole. Each plane file is written under
    a temporary name and renamed, so a plane present is complete. ``params`` (whatever
    identifies the run: input, frames, method...) is recorded there: a rerun with the same
    parameters after a kill skips the planes already written and finishes the folder; other
    parameters start it over. A run that fails before writing any plane leaves nothing behind.
    Measured sections keep their names when their number is unchanged; generated planes take
    the folder pattern with their z number. ``synthetic.txt`` lists the generated files and
    ``histovol.json`` holds scale, z numbers and flags.
    """
    from ..io.atomic import atomic_output, remove_path, write_json
    from ..io.slices import plane_names, write_folder_sidecars, write_plane
    from ..io.text import read_text

    vol = result.volume
    meta = vol.meta.with_planes(vol.shape[0])
    pattern, names = plane_names(meta, vol.dtype, pattern=pattern, ext=ext)
    out = Path(out).expanduser()
    manifest = {"version": 2, "params": params or {}, "names": names}
    with atomic_output(out, overwrite=overwrite, is_dir=True, keep_partial=True) as tmp:
        man_path = tmp / MANIFEST
        try:
            previous = json.loads(read_text(man_path)) if man_path.is_file() else None
        except (ValueError, InputError):
            previous = None
        if previous != manifest:  # another run's leftovers: start over
            for child in tmp.iterdir():
                remove_path(child)
            write_json(man_path, manifest)
        todo = [i for i, n in enumerate(names) if not (tmp / n).is_file()]
        total = len(names)
        done = total - len(todo)
        yield Progress(done, total, f"{done} planes already written", stage="write")
        try:
            # compute per chunk, so a pair's flow is estimated once for all its frames
            want = set(todo)
            for start, stop in _runs(todo, vol.data.chunks[0]):
                block = np.asarray(vol.data[start:stop].compute())
                for k, i in enumerate(range(start, stop)):
                    if i not in want:
                        continue
                    write_plane(tmp / names[i], block[k], meta)
                    done += 1
                    yield Progress(done, total, names[i], stage="write")
        except BaseException:
            if not any((tmp / n).is_file() for n in names):
                remove_path(tmp)  # nothing worth resuming
            raise
        write_folder_sidecars(tmp, meta, names, pattern)
        man_path.unlink()
    return out


def _runs(todo: list[int], chunks: tuple[int, ...]) -> list[tuple[int, int]]:
    """Chunk-aligned index ranges that contain planes still to write."""
    want = set(todo)
    runs, start = [], 0
    for c in chunks:
        stop = start + c
        if any(i in want for i in range(start, stop)):
            runs.append((start, stop))
        start = stop
    return runs
