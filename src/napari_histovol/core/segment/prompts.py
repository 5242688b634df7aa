"""Prompts: clicks (``z, y, x, object, positive``) and scribbles, read, checked and grouped."""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

PROMPT_COLUMNS = ("z", "y", "x", "object", "positive")


@dataclass(frozen=True)
class Prompt:
    """One click: voxel ``(z, y, x)`` of the input; ``positive`` True for "this is object
    ``object``", False for "this is not"."""

    z: int
    y: int
    x: int
    object: int
    positive: bool = True


def check_prompts(prompts: list[Prompt], shape: tuple[int, ...], *, source: str = "the prompts"):
    """Raise :class:`InputError` for a click outside a volume of ``shape`` (Z, Y, X, ...) or an
    object id below 1."""
    nz, ny, nx = (int(s) for s in shape[:3])
    for i, p in enumerate(prompts):
        if p.object < 1:
            raise InputError(
                f"Click {i + 1} of {source} has object id {p.object}; object ids start at 1."
            )
        if not (0 <= p.z < nz and 0 <= p.y < ny and 0 <= p.x < nx):
            raise InputError(
                f"Click {i + 1} of {source} at z={p.z}, y={p.y}, x={p.x} is outside the volume "
                f"({nz} x {ny} x {nx} voxels); give voxel coordinates of the input."
            )


def _int(text: str, what: str, row: int, path: Path) -> int:
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise InputError(
            f"Row {row} of '{path.name}': {what} {text!r} is not a number; every row needs "
            f"{', '.join(PROMPT_COLUMNS)}."
        ) from None
    if v != v or abs(v) > 2**31:
        raise InputError(f"Row {row} of '{path.name}': {what} {text!r} is out of range.")
    return int(round(v))


def read_prompts_csv(path: str | os.PathLike) -> list[Prompt]:
    """Read a PROMPTS.csv: a header ``z,y,x,object,positive`` (any order, extra columns ignored)
    and one click per row.

    Parameters
    ----------
    path
        The CSV file.

    Returns
    -------
    list of Prompt
        The clicks in file order (the order they are applied in).
    """
    p = Path(os.fspath(path)).expanduser()
    if not p.is_file():
        raise InputError(f"The prompts file '{p}' does not exist.")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"'{p.name}' is not a text CSV file of prompts.") from None
    rows = list(csv.reader(line for line in text.splitlines() if line.strip()))
    if not rows:
        raise InputError(f"'{p.name}' is empty; write a header {','.join(PROMPT_COLUMNS)}.")
    header = [h.strip().lower() for h in rows[0]]
    missing = [c for c in PROMPT_COLUMNS if c not in header]
    if missing:
        raise InputError(
            f"'{p.name}' lacks the column(s) {', '.join(missing)}; its header must name "
            f"{','.join(PROMPT_COLUMNS)}."
        )
    col = {c: header.index(c) for c in PROMPT_COLUMNS}
    out = []
    for r, row in enumerate(rows[1:], start=2):
        if len(row) < len(header):
            raise InputError(
                f"Row {r} of '{p.name}' has {len(row)} values; {len(header)} expected."
            )
        v = {c: _int(row[col[c]].strip(), c, r, p) for c in PROMPT_COLUMNS}
        if v["positive"] not in (0, 1):
            raise InputError(
                f"Row {r} of '{p.name}': positive must be 1 or 0, not {v['positive']}."
            )
        out.append(Prompt(v["z"], v["y"], v["x"], v["object"], bool(v["positive"])))
    if not out:
        raise InputError(f"'{p.name}' holds no clicks; add rows {','.join(PROMPT_COLUMNS)}.")
    return out


def prompts_to_csv(prompts: list[Prompt]) -> str:
    """The CSV text of ``prompts`` (header ``z,y,x,object,positive``)."""
    lines = [",".join(PROMPT_COLUMNS)]
    lines += [f"{p.z},{p.y},{p.x},{p.object},{int(p.positive)}" for p in prompts]
    return "\n".join(lines) + "\n"


@dataclass
class Scribbles:
    """Scribbled voxels grouped by label: ``label -> (N, 3)`` voxel coordinates (z, y, x)."""

    points: dict[int, np.ndarray]

    @property
    def labels(self) -> list[int]:
        return sorted(self.points)

    def in_section(self, label: int, z: int) -> np.ndarray:
        """(N, 2) (y, x) of ``label``'s scribbled voxels in section ``z``."""
        pts = self.points.get(label)
        if pts is None or not len(pts):
            return np.zeros((0, 2), int)
        return pts[pts[:, 0] == z][:, 1:]


def scribbles_from_labels(labels: Any, shape: tuple[int, ...], *, source: str = "the scribbles"):
    """Collect the scribbled voxels of a label volume (0 = unlabelled), one section at a time.

    Parameters
    ----------
    labels
        (Z, Y, X) integer array, numpy or dask, the input's shape.
    shape
        The input's (Z, Y, X[, C]) shape.
    source
        Name for messages.

    Returns
    -------
    Scribbles
    """
    if tuple(labels.shape[:3]) != tuple(shape[:3]) or labels.ndim != 3:
        raise InputError(
            f"{source} has shape {tuple(labels.shape)}; a label volume of the input's shape "
            f"{tuple(shape[:3])} is needed."
        )
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise InputError(f"{source} holds {labels.dtype} values; labels must be integers.")
    found: dict[int, list[np.ndarray]] = {}
    for z in range(labels.shape[0]):
        plane = np.asarray(labels[z])
        nz = np.nonzero(plane)
        if not len(nz[0]):
            continue
        vals = plane[nz].astype(np.int64)
        if vals.min() < 0:
            raise InputError(f"{source} holds negative labels; use 0 for unlabelled, 1, 2, ...")
        for v in np.unique(vals):
            sel = vals == v
            pts = np.stack([np.full(sel.sum(), z), nz[0][sel], nz[1][sel]], axis=1)
            found.setdefault(int(v), []).append(pts)
    return Scribbles({k: np.concatenate(v) for k, v in found.items()})


def scribbled_objects(prompts: list[Prompt], scribbles: Scribbles | None) -> list[int]:
    """Scribbled labels that are objects: those a click names (every scribbled label when
    there are no clicks at all); the other labels are background for every object."""
    if scribbles is None:
        return []
    named = {p.object for p in prompts}
    return [k for k in scribbles.labels if not named or k in named]


def object_ids(prompts: list[Prompt], scribbles: Scribbles | None = None) -> list[int]:
    """Ids of the objects to segment: those with a positive click, and
    :func:`scribbled_objects`."""
    ids = {p.object for p in prompts if p.positive}
    return sorted(ids | set(scribbled_objects(prompts, scribbles)))
