"""Section transforms: 3x3 matrices (aligned pixel -> source pixel), elastic fields, and the
transforms file ``T.json``.

Convention: ``matrix`` maps an aligned-image pixel (x, y, 1) to source-image pixel coordinates
(pixel centres at integers). An elastic field ``u`` (2, h, w) lives on the aligned grid at the
registration scale ``s``: source = M @ (x + u(x)), with u in full-resolution pixels after scaling.
"""

from __future__ import annotations

import json
import os
import re
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import InputError
from ..io.atomic import FIELDS_MARKER, atomic_output, check_output, remove_path
from ..io.naming import check_z_numbers
from ..io.npy import save_array
from ..io.text import read_text

TRANSFORMS_VERSION = 1
_LEGACY_FIELD = re.compile(r"\d{4}_z-?\d+\.npy")


@dataclass(frozen=True, eq=False)
class FieldFile:
    """An elastic field kept in a ``.npy`` file and read when it is used, so that a stack's
    fields do not all sit in memory. Scaling it (``* k``, ``/ s``) scales the values read.

    Parameters
    ----------
    path
        The ``(2, h, w)`` float32 ``.npy`` file.
    factor
        Multiplies the values read.
    keep_alive
        An object that must live as long as the file is needed (its temporary folder).
    """

    path: Path
    factor: float = 1.0
    keep_alive: Any = dc_field(default=None, repr=False)

    def load(self) -> np.ndarray:
        """The field's values, float32 (2, h, w)."""
        a = np.load(self.path, allow_pickle=False).astype(np.float32, copy=False)
        return a if self.factor == 1.0 else a * np.float32(self.factor)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(np.load(self.path, mmap_mode="r", allow_pickle=False).shape)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        a = self.load()
        return a if dtype is None else a.astype(dtype)

    def __mul__(self, k: float) -> FieldFile:
        return replace(self, factor=self.factor * float(k))

    __rmul__ = __mul__

    def __truediv__(self, s: float) -> FieldFile:
        return replace(self, factor=self.factor / float(s))


def field_values(field: np.ndarray | FieldFile | None) -> np.ndarray | None:
    """The values of an in-memory or on-disk elastic field (None stays None)."""
    return field.load() if isinstance(field, FieldFile) else field


@dataclass
class SectionTransform:
    """Where every aligned pixel of one section comes from.

    ``matrix`` is in the coordinates of the section as read (the common canvas) at full
    resolution; ``field`` (2, h, w) float32 holds (dx, dy) on the aligned grid at
    ``field_scale`` (registration resolution), in full-resolution pixels, or is None.
    """

    matrix: np.ndarray
    field: np.ndarray | FieldFile | None = None
    field_scale: float = 1.0

    def __post_init__(self) -> None:
        self.matrix = np.asarray(self.matrix, dtype=np.float64).reshape(3, 3)

    @property
    def is_identity(self) -> bool:
        return self.field is None and np.allclose(self.matrix, np.eye(3))

    def displacement_at(self, xy: np.ndarray) -> np.ndarray:
        """Field value (dx, dy) at full-resolution aligned points ``xy`` (N, 2)."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        if self.field is None:
            return np.zeros_like(xy)
        values = field_values(self.field)
        s = self.field_scale
        p = ((xy + 0.5) * s - 0.5).astype(np.float32)
        n = len(p)
        cols = 4096  # OpenCV maps must stay below 32767 a side
        rows = -(-n // cols)
        pad = rows * cols - n
        px = np.pad(p[:, 0], (0, pad)).reshape(rows, cols)
        py = np.pad(p[:, 1], (0, pad)).reshape(rows, cols)
        return np.stack([_sample(values[c], px, py).ravel()[:n] for c in range(2)], axis=1).astype(
            np.float64
        )

    def displacement_on_grid(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """Field (2, len(ys), len(xs)) at the full-resolution aligned grid ys x xs."""
        s = self.field_scale
        py, px = np.meshgrid(
            ((ys + 0.5) * s - 0.5).astype(np.float32),
            ((xs + 0.5) * s - 0.5).astype(np.float32),
            indexing="ij",
        )
        values = field_values(self.field)
        return np.stack([_sample(values[c], px, py) for c in range(2)])

    def aligned_to_source(self, xy: np.ndarray) -> np.ndarray:
        """Map aligned points (N, 2) in (x, y) to source points."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        q = xy + self.displacement_at(xy)
        return _apply(self.matrix, q)

    def source_to_aligned(self, xy: np.ndarray, iterations: int = 50) -> np.ndarray:
        """Map source points (N, 2) to the aligned frame (inverting the field by fixed point)."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        q = _apply(np.linalg.inv(self.matrix), xy)
        if self.field is None:
            return q
        x = q.copy()
        for _ in range(iterations):
            nxt = q - self.displacement_at(x)
            if np.abs(nxt - x).max() < 1e-4:
                x = nxt
                break
            x = nxt
        return x

    def translated(self, offset_xy: tuple[float, float]) -> SectionTransform:
        """The same transform with source coordinates shifted by ``-offset`` (canvas -> file)."""
        t = np.array([[1, 0, -offset_xy[0]], [0, 1, -offset_xy[1]], [0, 0, 1]], float)
        return SectionTransform(t @ self.matrix, self.field, self.field_scale)


def _sample(channel: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    return cv2.remap(
        channel.astype(np.float32, copy=False),
        px,
        py,
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )


def _apply(m: np.ndarray, xy: np.ndarray) -> np.ndarray:
    h = np.c_[xy, np.ones(len(xy))] @ m.T
    return h[:, :2] / h[:, 2:3]


def scale_matrix(s: float) -> np.ndarray:
    """Pixel-centre-correct map from full-resolution to scale-``s`` pixel coordinates."""
    return np.array([[s, 0, 0.5 * s - 0.5], [0, s, 0.5 * s - 0.5], [0, 0, 1.0]])


def rescale(matrix_small: np.ndarray, s: float) -> np.ndarray:
    """A matrix estimated at scale ``s`` expressed at full resolution."""
    a = scale_matrix(s)
    return np.linalg.inv(a) @ matrix_small @ a


def transform_size(m: np.ndarray, shape: tuple[int, int]) -> dict[str, float]:
    """Translation (px, at the image centre), rotation (deg), scale and shear of a matrix."""
    h, w = shape
    c = np.array([(w - 1) / 2, (h - 1) / 2])
    moved = _apply(m, c[None])[0]
    a = m[:2, :2]
    rot = float(np.degrees(np.arctan2(a[1, 0], a[0, 0])))
    sx = float(np.hypot(a[0, 0], a[1, 0]))
    det = float(np.linalg.det(a))
    sy = det / sx if sx else 0.0
    shear = float((a[0, 0] * a[0, 1] + a[1, 0] * a[1, 1]) / det) if det else 0.0
    return {
        "translation_px": float(np.hypot(*(moved - c))),
        "rotation_deg": rot,
        "scale_x": sx,
        "scale_y": sy,
        "shear": shear,
    }


# ------------------------------------------------------------------------ transforms file


def save_transforms(
    path: str | os.PathLike,
    transforms: list[SectionTransform],
    *,
    files: list[str],
    z_numbers: list[int],
    offsets: list[tuple[int, int]],
    source_shapes: list[tuple[int, int]],
    canvas: tuple[int, int],
    extra: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``T.json`` (and the elastic fields as .npy files in ``T.fields/``), all or nothing.

    Matrices are written in each source file's own pixel coordinates (the canvas offset is
    folded in), so that they apply to the files as they are on disk. Both outputs are written
    under temporary names and renamed when complete; a failure (a full disk) leaves neither.

    Parameters
    ----------
    overwrite
        Whether an existing transforms file (and its fields folder) may be replaced.

    Raises
    ------
    OutputError
        When an output exists and ``overwrite`` is False, or cannot be written.
    """
    path = check_output(path, overwrite=overwrite, kind="file")
    field_dir = fields_folder(path)
    with_fields = any(t.field is not None for t in transforms)
    if with_fields:
        check_output(field_dir, overwrite=overwrite, kind="dir")
        _adopt_legacy_fields(field_dir)
    with ExitStack() as stack:
        tmp_json = stack.enter_context(atomic_output(path, overwrite=overwrite))
        tmp_fields = (
            stack.enter_context(atomic_output(field_dir, overwrite=overwrite, is_dir=True))
            if with_fields
            else None
        )
        slices = []
        for i, t in enumerate(transforms):
            ft = t.translated((offsets[i][1], offsets[i][0]))
            entry: dict[str, Any] = {
                "file": files[i],
                "z": int(z_numbers[i]),
                "matrix": [[float(v) for v in row] for row in ft.matrix],
                "field": None,
                "source_shape": [int(v) for v in source_shapes[i]],
                "canvas_offset": [int(offsets[i][0]), int(offsets[i][1])],
            }
            if t.field is not None and tmp_fields is not None:
                name = f"{i:04d}_z{int(z_numbers[i])}.npy"
                save_array(tmp_fields / name, field_values(t.field).astype(np.float32))
                entry["field"] = f"{field_dir.name}/{name}"
                entry["field_scale"] = float(t.field_scale)
            slices.append(entry)
        if tmp_fields is not None:
            (tmp_fields / FIELDS_MARKER).write_text(path.name + "\n", encoding="utf-8")
        doc = {
            "version": TRANSFORMS_VERSION,
            "convention": "matrix maps aligned pixel (x, y, 1) to source-file pixel (x, y) at full "
            "resolution; field (dx, dy) on the aligned grid at field_scale, in full-resolution "
            "pixels: source = matrix @ (p + field(p))",
            "canvas": [int(canvas[0]), int(canvas[1])],
            "slices": slices,
            **(extra or {}),
        }
        tmp_json.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    if not with_fields and (field_dir / FIELDS_MARKER).is_file():
        remove_path(field_dir)  # the fields of the transforms file just replaced
    return path


def fields_folder(path: str | os.PathLike) -> Path:
    """The folder that holds the elastic fields of transforms file ``path`` (``T.fields``)."""
    p = Path(os.fspath(path))
    return p.with_name(p.stem + ".fields")


def _adopt_legacy_fields(field_dir: Path) -> None:
    """Mark a fields folder written before folders carried :data:`FIELDS_MARKER` (it holds
    only ``NNNN_zZ.npy`` files) so that it may be replaced like any folder histovol wrote."""
    if not field_dir.is_dir() or (field_dir / FIELDS_MARKER).exists():
        return
    try:
        names = os.listdir(field_dir)
        if names and all(_LEGACY_FIELD.fullmatch(n) for n in names):
            (field_dir / FIELDS_MARKER).write_text("\n", encoding="utf-8")
    except OSError:
        pass


@dataclass
class TransformsFile:
    """A loaded ``T.json``: per-slice transforms in source-file coordinates."""

    canvas: tuple[int, int]
    files: list[str]
    z_numbers: list[int]
    transforms: list[SectionTransform]
    source_shapes: list[tuple[int, int]]
    raw: dict = field(default_factory=dict)

    def index_of(self, slice_id: str) -> int:
        """Find a slice by file name, z number, or 0-based position (``#3``)."""
        if slice_id in self.files:
            return self.files.index(slice_id)
        base = os.path.basename(slice_id)
        if base in self.files:
            return self.files.index(base)
        if slice_id.startswith("#") and slice_id[1:].isdigit():
            i = int(slice_id[1:])
            if 0 <= i < len(self.files):
                return i
        if slice_id.lstrip("-").isdigit() and int(slice_id) in self.z_numbers:
            return self.z_numbers.index(int(slice_id))
        raise InputError(
            f"No slice '{slice_id}' in the transforms file; give a file name, a z number "
            f"({self.z_numbers[0]}..{self.z_numbers[-1]}) or #index."
        )


def load_transforms(path: str | os.PathLike) -> TransformsFile:
    """Read a ``T.json`` written by :func:`save_transforms`."""
    path = Path(os.fspath(path)).expanduser()
    text = read_text(path, what="the transforms file")
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise InputError(f"The transforms file '{path}' is not valid JSON ({e}).") from None
    if not isinstance(doc, dict) or "slices" not in doc:
        raise InputError(f"'{path}' is not a napari-histovol transforms file (no 'slices').")
    ts, files, zs, shapes = [], [], [], []
    for i, s in enumerate(doc["slices"]):
        try:
            m = np.asarray(s["matrix"], float)
            if m.shape != (3, 3) or not np.isfinite(m).all():
                raise ValueError("matrix must be 3x3 numbers")
            fld = None
            if s.get("field"):
                fpath = path.parent / str(s["field"])
                head = np.load(fpath, mmap_mode="r", allow_pickle=False)  # header only
                if head.ndim != 3 or head.shape[0] != 2 or head.dtype.kind != "f":
                    raise ValueError(f"its field {s['field']} is not a (2, h, w) float array")
                del head
                fld = FieldFile(fpath)  # read when used: a stack's fields stay on disk
            ts.append(SectionTransform(m, fld, float(s.get("field_scale", 1.0))))
            files.append(str(s.get("file", "")))
            zs.append(int(s.get("z", i)))
            shapes.append(tuple(s.get("source_shape", doc.get("canvas", (0, 0)))))
        except (KeyError, ValueError, TypeError, OSError) as e:
            raise InputError(f"Slice {i} of '{path}' is malformed ({e}).") from None
    check_z_numbers(zs, source=str(path))
    return TransformsFile(tuple(doc.get("canvas", (0, 0))), files, zs, ts, shapes, doc)
