"""The main job: a folder of sections -> a multiscale OME-Zarr volume with physical scale.

read (z numbers, gaps, common canvas) -> normalise (downsize to ``size``) -> align ->
interpolate (fill the gaps, or N frames between sections) -> write (multiscale OME-Zarr with
the synthetic-plane flags), with the transforms and QC files beside the output.

Everything is lazy and streams block by block, so peak memory does not grow with the number of
sections. A run is resumable: registrations are cached in a work folder keyed by their
parameters, and the output is written under a temporary name with a log of finished blocks,
so ``resume=True`` after a kill does not redo finished work and gives the same output as an
uninterrupted run. With ``scheduler`` the blocks are computed on a ``dask.distributed`` cluster.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import dask.array as da
import numpy as np

from .align import DEFAULT_NEIGHBOURS, DEFAULT_REFERENCE, iter_align
from .align.transforms import SectionTransform, load_transforms, rescale, save_transforms
from .align.warp import warp_volume
from .cluster import dask_client
from .errors import InputError
from .interpolate import InterpolationResult, iter_interpolate, make_plan
from .io.atomic import check_output, output_lock, temp_name, write_json
from .io.detect import detect_format, read_volume
from .io.ome_zarr import iter_write_ome_zarr
from .io.text import read_text
from .io.volume import Volume
from .progress import Progress, ProgressGenerator, drain

ALIGN_CHOICES = ("none", "translation", "rigid", "affine", "elastic")
#: How the build makes generated planes (the model method needs a model folder: interpolate).
INTERPOLATION_CHOICES = ("flow", "linear", "learned")


@dataclass(frozen=True)
class BuildResult:
    """Where the build wrote its output and side files, and the written volume's metadata."""

    out: Path
    transforms: Path | None
    qc: Path | None
    shape: tuple[int, ...]
    scale: tuple[float, float, float]
    synthetic_z: tuple[int, ...]
    flagged_z: tuple[int, ...]


def side_files(out: Path) -> tuple[Path, Path]:
    """``OUT.ome.zarr`` -> (``OUT.transforms.json``, ``OUT.qc.json``) beside it."""
    name = out.name
    for suffix in (".ome.zarr", ".zarr"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return out.parent / f"{name}.transforms.json", out.parent / f"{name}.qc.json"


def work_folder(out: Path) -> Path:
    """Hidden folder beside the output that caches registrations between runs."""
    return out.parent / f".{out.name}.work"


def build_volume(
    input_path: str | os.PathLike, out: str | os.PathLike, **kwargs: Any
) -> BuildResult:
    """Build a volume (drains :func:`iter_build_volume`)."""
    return drain(iter_build_volume(input_path, out, **kwargs))


def _key(*parts: Any) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _input_fingerprint(path: Path, fmt: str, files: tuple[str, ...]) -> list:
    """What identifies the input for the resume keys: each section file's size and time for a
    folder; the metadata files of an OME-Zarr (rewritten with every change); the file itself
    otherwise. (An OME-Zarr's ``files`` name its sources, which are not inside it.)"""
    if fmt == "folder":
        return [[f, *_stat(path / f)] for f in files]
    if path.is_dir():
        meta = sorted(
            q for q in path.rglob("*") if q.name in ("zarr.json", ".zattrs", ".zarray", ".zgroup")
        )
        return [[str(q.relative_to(path)), *_stat(q)] for q in meta]
    return [str(path), *_stat(path)]


def _stat(p: Path) -> list[int]:
    st = p.stat()
    return [st.st_size, st.st_mtime_ns]


def normalise(volume: Volume, size: int | None) -> tuple[Volume, float]:
    """Downsize every section so that its larger side is at most ``size`` (area averaging);
    returns the lazy volume and the scale factor (<= 1)."""
    h, w = volume.shape[1:3]
    if not size or max(h, w) <= size:
        return volume, 1.0
    s = size / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    data = volume.data.rechunk((1,) + tuple(volume.shape[1:]))

    def shrink(block):
        p = block[0]
        small = cv2.resize(
            p if p.dtype != np.float64 else p.astype(np.float32),
            (nw, nh),
            interpolation=cv2.INTER_AREA,
        )
        return small.astype(p.dtype).reshape((1, nh, nw) + p.shape[2:])

    chunks = ((1,) * volume.shape[0], (nh,), (nw,)) + tuple((c,) for c in volume.shape[3:])
    small = da.map_blocks(shrink, data, dtype=volume.dtype, chunks=chunks)
    m = volume.meta
    meta = replace(m, scale=(m.scale[0], m.scale[1] * h / nh, m.scale[2] * w / nw))
    return Volume(small, meta), s


def iter_build_volume(
    input_path: str | os.PathLike, out: str | os.PathLike, **options: Any
) -> ProgressGenerator[BuildResult]:
    """Build a multiscale OME-Zarr volume from a folder of sections.

    Parameters
    ----------
    frames_between
        N frames between neighbouring sections; None (default) only fills the gaps.
    align
        ``none``, ``translation``, ``rigid`` (default), ``affine`` or ``elastic``.
    size
        Downsize sections so their larger side is at most ``size`` pixels (None: full size).
    pixel_size, section_spacing
        µm; the output's z spacing is section_spacing / (N + 1), its x/y pixel size follows
        the downsizing.
    interp_method, time_budget
        How generated planes are made (``flow``, ``linear``, ``learned``), and for
        ``learned`` the seconds to train and apply the model (default 150).
    resume
        Reuse cached registrations and finish a killed run's partial output.
    scheduler
        A ``dask.distributed`` scheduler address (or Client): blocks are computed there.
    """
    work = work_folder(Path(os.fspath(out)).expanduser())
    had_work = work.exists()
    try:
        # the output's lock from the start: a second build of the same output, started while
        # the first was aligning, deleted the first's registration cache (a helper's journey)
        with output_lock(out):
            return (yield from _iter_build_volume(input_path, out, **options))
    except BaseException:
        # a failed first run (a full disk, bad input) leaves no empty work folder behind
        if not had_work and work.is_dir() and not any(work.iterdir()):
            work.rmdir()
        raise


def _iter_build_volume(
    input_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    frames_between: int | None = None,
    align: str = "rigid",
    reference: str = DEFAULT_REFERENCE,
    neighbours: int = DEFAULT_NEIGHBOURS,
    smooth: float = 0.0,
    reg_size: int = 512,
    size: int | None = None,
    pixel_size: float | None = None,
    section_spacing: float | None = None,
    interp_method: str = "flow",
    time_budget: float | None = None,
    resume: bool = False,
    scheduler: Any = None,
    overwrite: bool = False,
    on_corrupt: str = "error",
    workers: int = 2,
    ngff_version: str = "0.5",
) -> ProgressGenerator[BuildResult]:
    """:func:`iter_build_volume` without the clean-up of its work folder."""
    out = Path(os.fspath(out)).expanduser()
    if not out.name.lower().endswith((".ome.zarr", ".zarr")):
        raise InputError(f"The build writes OME-Zarr: name the output '{out.name}.ome.zarr'.")
    if align not in ALIGN_CHOICES:
        raise InputError(f"Unknown alignment '{align}'; use one of {', '.join(ALIGN_CHOICES)}.")
    if size is not None and size < 16:
        raise InputError(f"The canvas size must be at least 16 pixels, not {size}.", option="size")
    if interp_method not in INTERPOLATION_CHOICES:
        raise InputError(
            f"Unknown interpolation '{interp_method}'; use one of {', '.join(INTERPOLATION_CHOICES)}.",
            option="interp_method",
        )
    if frames_between is not None and frames_between < 0:
        raise InputError(
            "The number of frames between sections must be 0 or more.", option="frames_between"
        )
    t_path, qc_path = side_files(out)
    for p in (out, t_path, qc_path):
        check_output(p, overwrite=overwrite)
    client = dask_client(scheduler)

    yield Progress(0, 1, "reading headers", stage="read")
    in_fmt = detect_format(input_path)
    source = read_volume(
        input_path, on_corrupt=on_corrupt, pixel_size=pixel_size, section_spacing=section_spacing
    )
    if source.shape[0] < 2 and (frames_between or align != "none"):
        import warnings

        from .errors import HistovolWarning

        warnings.warn("A single section: the volume has one plane.", HistovolWarning, stacklevel=2)
    in_path = Path(os.fspath(input_path)).expanduser()
    fingerprint = _input_fingerprint(in_path, in_fmt, source.meta.files)
    yield Progress(1, 1, f"{source.shape[0]} sections", stage="read")

    if source.shape[0] >= 2:  # the interpolation's bounds, checked before any work
        make_plan(source.meta.z_numbers, frames_between=frames_between or 0)
    vol, s = normalise(source, size)
    work = work_folder(out)
    align_opts = (neighbours, float(smooth)) if reference == "global" else ()
    align_key = _key("align", fingerprint, size, align, reference, reg_size, *align_opts)
    transforms: list[SectionTransform] | None = None
    qc: dict | None = None
    flagged: tuple[int, ...] = ()
    if align != "none" and vol.shape[0] > 1:
        cache_t, cache_qc = work / f"align-{align_key}.json", work / f"align-{align_key}.qc.json"
        if resume and cache_t.is_file() and cache_qc.is_file():
            transforms = load_transforms(cache_t).transforms
            qc = json.loads(read_text(cache_qc, what="the cached QC report"))
            yield Progress(1, 1, "registrations reused", stage="register")
        else:
            result = yield from iter_align(
                vol,
                method=align,
                reference=reference,
                neighbours=neighbours,
                smooth=smooth,
                reg_size=reg_size,
                workers=workers,
                scratch=work / f"align-{align_key}.sections",
            )
            transforms, qc = result.transforms, result.qc
            work.mkdir(parents=True, exist_ok=True)
            n = vol.shape[0]
            save_transforms(
                cache_t,
                transforms,
                files=list(vol.meta.files),
                z_numbers=list(vol.meta.z_numbers),
                offsets=[(0, 0)] * n,
                source_shapes=[tuple(vol.shape[1:3])] * n,
                canvas=tuple(vol.shape[1:3]),
                overwrite=True,
            )
            write_json(cache_qc, qc, overwrite=True)
        flagged = tuple(sec["z"] for sec in qc["sections"] if sec["flags"])
        aligned = Volume(
            warp_volume(vol.data, transforms, tuple(vol.shape[1:3])),
            replace(
                vol.meta,
                extra={
                    **vol.meta.extra,
                    "alignment": {
                        "method": align,
                        "reference": reference,
                        "flagged_z": list(flagged),
                    },
                },
            ),
        )
    else:
        aligned = vol

    if aligned.shape[0] >= 2:
        interp = yield from iter_interpolate(
            aligned,
            frames_between=frames_between or 0,
            method=interp_method,
            time_budget=time_budget,
            # a resumed build reuses the learned model its blocks were written with
            checkpoint=work_folder(Path(os.fspath(out)).expanduser()) / "learned-model.pt"
            if interp_method == "learned"
            else None,
        )
    else:  # one section: nothing lies between sections (warned above)
        interp = InterpolationResult(aligned, None)
    final = interp.volume
    extra = {
        k: v for k, v in final.meta.extra.items() if k not in ("canvas_offsets", "source_shapes")
    }
    extra["build"] = {
        "input": str(in_path),
        "size": size,
        "downsize": s,
        "align": align,
        "reference": reference,
        "frames_between": frames_between or 0,
        "interpolation": interp_method,
    }
    final = Volume(final.data, replace(final.meta, extra=extra))

    write_key = _key(
        "write",
        align_key,
        frames_between,
        interp_method,
        time_budget,
        pixel_size,
        section_spacing,
        ngff_version,
        fingerprint,
        size,
    )
    if not resume:
        shutil.rmtree(temp_name(out), ignore_errors=True)
    try:
        yield from iter_write_ome_zarr(
            final,
            out,
            overwrite=overwrite,
            resume_key=write_key,
            client=client,
            workers=workers,
            ngff_version=ngff_version,
        )
    finally:
        interp.close()
    t_written = qc_written = None
    if transforms is not None:
        offsets = source.meta.extra.get("canvas_offsets") or [[0, 0]] * source.shape[0]
        shapes = (
            source.meta.extra.get("source_shapes") or [list(source.shape[1:3])] * source.shape[0]
        )
        full = [
            SectionTransform(
                rescale(t.matrix, s), None if t.field is None else t.field / s, t.field_scale * s
            )
            for t in transforms
        ]
        t_written = save_transforms(
            t_path,
            full,
            files=list(source.meta.files),
            z_numbers=list(source.meta.z_numbers),
            offsets=[tuple(o) for o in offsets],
            source_shapes=[tuple(x) for x in shapes],
            canvas=tuple(source.shape[1:3]),
            extra={"method": align, "reference": reference, "build_downsize": s},
            overwrite=True,
        )
        qc_written = write_json(qc_path, qc, overwrite=True)
    yield Progress(1, 1, "done", stage="finish")
    return BuildResult(
        out,
        t_written,
        qc_written,
        tuple(final.shape),
        tuple(final.meta.scale),
        final.meta.synthetic_z,
        flagged,
    )


__all__ = [
    "ALIGN_CHOICES",
    "INTERPOLATION_CHOICES",
    "BuildResult",
    "build_volume",
    "iter_build_volume",
    "normalise",
    "side_files",
    "work_folder",
]
