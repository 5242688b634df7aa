"""Batch segmentation of a volume from prompts and scribbles, and per-object volumes in µm³."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..errors import InputError
from ..io.meta import LABELS_KEY, VolumeMeta
from ..io.volume import Volume
from ..progress import ProgressGenerator, drain
from .backend import PretrainedModel, iter_segment_pretrained
from .masks import lazy_labels, voxel_counts
from .prompts import Prompt, Scribbles, check_prompts, object_ids
from .session import DEFAULT_MARGIN, DEFAULT_THRESHOLD, SegmentSession


@dataclass(frozen=True)
class SegmentResult:
    """Labels of a segmented volume.

    Parameters
    ----------
    labels
        The label volume (lazy): object k's voxels hold k; scale and z numbers of the input.
    voxels
        Voxels per object id.
    voxel_um3
        Volume of one voxel in µm³ (None when the scale is in pixels).
    """

    labels: Volume
    voxels: dict[int, int]
    voxel_um3: float | None

    def volumes(self) -> list[dict[str, Any]]:
        """One row per object: id, voxels and, where the scale is known, µm³."""
        return object_volumes(self.voxels, self.voxel_um3)


def voxel_volume_um3(meta: VolumeMeta) -> float | None:
    """The volume of one voxel in µm³, or None when the scale is not in micrometres."""
    if meta.unit != "micrometer":
        return None
    z, y, x = meta.scale
    return float(z * y * x)


def object_volumes(voxels: dict[int, int], voxel_um3: float | None) -> list[dict[str, Any]]:
    """Rows ``{"object", "voxels", "volume_um3"}`` (``volume_um3`` None when unknown).

    Parameters
    ----------
    voxels
        Voxel count per object id.
    voxel_um3
        Volume of one voxel in µm³, or None.
    """
    return [
        {
            "object": int(k),
            "voxels": int(n),
            "volume_um3": None if voxel_um3 is None else float(n) * voxel_um3,
        }
        for k, n in sorted(voxels.items())
    ]


def object_table_csv(rows: list[dict[str, Any]]) -> str:
    """CSV text of :func:`object_volumes` rows: ``object,voxels,volume_um3``."""
    lines = ["object,voxels,volume_um3"]
    for r in rows:
        v = "" if r["volume_um3"] is None else f"{r['volume_um3']:.6g}"
        lines.append(f"{r['object']},{r['voxels']},{v}")
    return "\n".join(lines) + "\n"


def known_voxel_size(meta: VolumeMeta) -> tuple[float, float, float] | None:
    """The voxel size (z, y, x) when both the pixel size and the section spacing are known, else
    None (which :class:`SegmentSession` takes for serial sections)."""
    return tuple(meta.scale) if meta.scale_known and meta.spacing_known else None


def label_meta(meta: VolumeMeta) -> VolumeMeta:
    """The input's metadata for its label volume: same scale and planes, one channel, marked
    as labels (nearest-pixel pyramid levels; napari opens it as a Labels layer), without the
    image's display range."""
    extra = {k: v for k, v in meta.extra.items() if k != "contrast_limits"}
    return replace(meta, rgb=False, channel_names=(), extra={**extra, LABELS_KEY: True})


def iter_segment_volume(
    volume: Volume,
    prompts: list[Prompt] | None = None,
    *,
    scribbles: Scribbles | None = None,
    margin: int = DEFAULT_MARGIN,
    threshold: float = DEFAULT_THRESHOLD,
    model: PretrainedModel | None = None,
) -> ProgressGenerator[SegmentResult]:
    """Segment the objects named by clicks and scribbles through a volume.

    Parameters
    ----------
    volume
        The input (lazy); RGB or gray, any dtype.
    prompts
        Clicks: object ids, positive or negative, voxel coordinates.
    scribbles
        Scribbled voxels: labels that a click names are object ids; other labels are background
        for every object (with no clicks at all, every label is an object).
    margin
        Pixels around an object's clicks, in the section plane, that it is segmented in.
    threshold
        Object probability above which a pixel may belong to an object.
    model
        A pretrained nnInteractive model (:func:`~.backend.load_pretrained`) that segments
        every object instead of the weight-free method (``margin`` and ``threshold`` unused).

    Returns
    -------
    SegmentResult
        Yields :class:`~napari_histovol.core.progress.Progress` while segmenting.
    """
    prompts = list(prompts or [])
    check_prompts(prompts, volume.shape)
    meta = label_meta(volume.meta.with_planes(volume.shape[0]))
    if model is not None:
        objects = object_ids(prompts, scribbles)
        _check_objects(objects)
        masks = yield from iter_segment_pretrained(
            volume.data, model, prompts, objects, rgb=volume.meta.rgb, scribbles=scribbles
        )
        shape = tuple(volume.shape[:3])
        labels = Volume(lazy_labels(masks, shape), meta)
        return SegmentResult(labels, voxel_counts(masks, shape[1:]), voxel_volume_um3(meta))
    session = SegmentSession(
        volume.data,
        rgb=volume.meta.rgb,
        sampling=known_voxel_size(volume.meta),
        margin=margin,
        threshold=threshold,
        prompts=prompts,
        scribbles=scribbles,
    )
    _check_objects(session.objects)
    yield from session.iter_segment()
    labels = Volume(session.labels(), meta)
    return SegmentResult(labels, session.voxel_counts(), voxel_volume_um3(meta))


def _check_objects(objects: list[int]) -> None:
    if not objects:
        raise InputError(
            "There is nothing to segment: no positive click and no scribbled object; give at "
            "least one positive click or a scribble."
        )


def segment_volume(
    volume: Volume, prompts: list[Prompt] | None = None, **kwargs: Any
) -> SegmentResult:
    """:func:`iter_segment_volume` run to the end."""
    return drain(iter_segment_volume(volume, prompts, **kwargs))


def as_volume(data: Any, meta: VolumeMeta | None = None) -> Volume:
    """Wrap a numpy or dask (Z, Y, X[, C]) array as a :class:`Volume` (default metadata)."""
    import dask.array as da

    arr = data if isinstance(data, da.Array) else da.from_array(np.asarray(data))
    meta = meta or VolumeMeta(rgb=arr.ndim == 4)
    return Volume(arr, meta.with_planes(arr.shape[0]))
