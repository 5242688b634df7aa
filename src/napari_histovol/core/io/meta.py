"""VolumeMeta: what travels with a volume besides its pixels.

Physical scale (µm), axes, the z numbers of the planes, gaps in the numbering, which planes
are synthetic (interpolated or restored, never to be passed off as measured), the source
files and their naming pattern. Serialised as JSON into OME-Zarr attributes, OME-TIFF
MapAnnotations, a folder's ``histovol.json`` and the ``.npy.json`` sidecar, and into napari
layer metadata under the key ``"histovol"``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .naming import NamePattern

META_KEY = "histovol"
META_VERSION = 1


@dataclass(frozen=True)
class VolumeMeta:
    """Metadata of a (Z, Y, X[, C]) volume.

    Parameters
    ----------
    scale
        Size of one voxel along (z, y, x), in ``unit``. z is the distance between planes.
    unit
        Unit of ``scale``; ``"micrometer"`` when known, ``"pixel"`` when not.
    rgb
        True when the last axis holds red, green, blue (an RGB volume: axes ``zyxc``).
    z_numbers
        The z number of every plane (from file names for a slice folder; 0..n-1 otherwise).
    synthetic
        Per plane: True when the plane was generated (interpolated / restored), not measured.
    gaps
        z numbers missing from the source numbering (lost or damaged sections).
    files
        Source file name of every plane ("" for a generated plane).
    pattern
        Naming pattern of the source folder, used to name written slices.
    channel_names
        Names of the channels (``("red", "green", "blue")`` for RGB).
    scale_known
        Whether the x/y pixel size came from the data or the user (False: a default of 1).
    spacing_known
        Whether the z spacing came from the data or the user.
    """

    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    unit: str = "pixel"
    rgb: bool = False
    z_numbers: tuple[int, ...] = ()
    synthetic: tuple[bool, ...] = ()
    gaps: tuple[int, ...] = ()
    files: tuple[str, ...] = ()
    pattern: NamePattern | None = None
    channel_names: tuple[str, ...] = ()
    scale_known: bool = False
    spacing_known: bool = False
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def axes(self) -> str:
        """Axis names of the array in order: ``"zyx"`` or ``"zyxc"``."""
        return "zyxc" if self.rgb or self.channel_names else "zyx"

    @property
    def n_planes(self) -> int:
        return len(self.z_numbers)

    @property
    def synthetic_z(self) -> tuple[int, ...]:
        """z numbers of the synthetic planes."""
        return tuple(z for z, s in zip(self.z_numbers, self.synthetic, strict=True) if s)

    @property
    def planes_per_section(self) -> float:
        """Planes per section spacing: recorded by the stages that renumber the planes
        (interpolation, isotropic reconstruction; multiplied when they are chained), else one
        more than the frames of the last interpolation, else 1."""
        recorded = self.extra.get("planes_per_section")
        if recorded is not None:
            return float(recorded)
        frames = (self.extra.get("interpolation") or {}).get("frames_between", 0) or 0
        return float(1 + int(frames))

    @property
    def section_spacing(self) -> float:
        """The distance (in ``unit``) between consecutive section numbers."""
        return float(self.scale[0]) * self.planes_per_section

    @property
    def z_origin(self) -> float:
        """Physical z (in ``unit``) of plane 0: its z number times the section spacing (the
        stages that renumber planes keep the first section's number for plane 0)."""
        z0 = self.z_numbers[0] if self.z_numbers else 0
        return float(z0) * self.section_spacing

    def with_planes(self, n: int) -> VolumeMeta:
        """Fill in default per-plane fields for an ``n``-plane volume where they are missing."""
        zs = self.z_numbers if len(self.z_numbers) == n else tuple(range(n))
        syn = self.synthetic if len(self.synthetic) == n else (False,) * n
        files = self.files if len(self.files) == n else ("",) * n
        return replace(
            self, z_numbers=tuple(int(z) for z in zs), synthetic=tuple(map(bool, syn)), files=files
        )

    def with_scale(
        self,
        *,
        pixel_size: float | None = None,
        section_spacing: float | None = None,
    ) -> VolumeMeta:
        """Override the physical scale (µm) in x/y and/or z."""
        z, y, x = self.scale
        if pixel_size is not None:
            _check_positive(pixel_size, "pixel size")
            y = x = float(pixel_size)
        if section_spacing is not None:
            _check_positive(section_spacing, "section spacing")
            z = float(section_spacing)
        known = self.scale_known or pixel_size is not None
        spacing_known = self.spacing_known or section_spacing is not None
        unit = "micrometer" if (known or spacing_known) else self.unit
        return replace(
            self, scale=(z, y, x), scale_known=known, spacing_known=spacing_known, unit=unit
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (the ``histovol`` metadata block)."""
        d = {
            "version": META_VERSION,
            "axes": self.axes,
            "scale": [float(s) for s in self.scale],
            "unit": self.unit,
            "scale_known": self.scale_known,
            "spacing_known": self.spacing_known,
            "rgb": self.rgb,
            "z_numbers": [int(z) for z in self.z_numbers],
            "synthetic": [bool(s) for s in self.synthetic],
            "gaps": [int(g) for g in self.gaps],
            "files": list(self.files),
            "pattern": self.pattern.to_dict() if self.pattern else None,
            "channel_names": list(self.channel_names),
        }
        if self.extra:
            d["extra"] = self.extra
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VolumeMeta:
        """Inverse of :meth:`to_dict`; tolerant of missing keys."""
        pat = d.get("pattern")
        return cls(
            scale=tuple(float(s) for s in d.get("scale", (1.0, 1.0, 1.0))),
            unit=str(d.get("unit", "pixel")),
            rgb=bool(d.get("rgb", False)),
            z_numbers=tuple(int(z) for z in d.get("z_numbers", ())),
            synthetic=tuple(bool(s) for s in d.get("synthetic", ())),
            gaps=tuple(int(g) for g in d.get("gaps", ())),
            files=tuple(str(f) for f in d.get("files", ())),
            pattern=NamePattern.from_dict(pat) if pat else None,
            channel_names=tuple(d.get("channel_names", ())),
            scale_known=bool(d.get("scale_known", False)),
            spacing_known=bool(d.get("spacing_known", False)),
            extra=dict(d.get("extra", {})),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> VolumeMeta:
        return cls.from_dict(json.loads(text))


#: ``VolumeMeta.extra`` key set on label volumes (object k's voxels hold k): their pyramid
#: levels take the nearest pixel, and napari opens them as a Labels layer
LABELS_KEY = "labels"


def is_label_volume(meta: VolumeMeta) -> bool:
    """Whether ``meta`` describes a label volume (see :data:`LABELS_KEY`)."""
    return bool(meta.extra.get(LABELS_KEY)) and not meta.rgb


def meta_from_block(block: Any, *, source: str) -> VolumeMeta | None:
    """:meth:`VolumeMeta.from_dict` for a block read from a file: a block that cannot be
    understood is ignored with a warning naming ``source`` (None is returned)."""
    if block is None:
        return None
    try:
        if not isinstance(block, dict):
            raise TypeError(f"expected a JSON object, found {type(block).__name__}")
        return VolumeMeta.from_dict(block)
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as e:
        import warnings

        from ..errors import HistovolWarning

        warnings.warn(
            f"Ignoring the unreadable napari-histovol metadata in '{source}' ({e}).",
            HistovolWarning,
            stacklevel=3,
        )
        return None


def _check_positive(value: float, what: str) -> None:
    import math

    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        from ..errors import InputError

        raise InputError(f"The {what} must be a positive number of micrometres, not {value!r}.")


def unit_to_micrometer(unit: str | None) -> float | None:
    """Factor that converts a length unit name to micrometres (None if not a length)."""
    if unit is None:
        return None
    # ImageJ writes the micro sign as the escape "\\u00B5" in its text metadata
    u = str(unit).strip().lower().replace("\\u00b5", "u").replace("µ", "u").replace("μ", "u")
    table = {
        "micrometer": 1.0,
        "micrometre": 1.0,
        "um": 1.0,
        "micron": 1.0,
        "microns": 1.0,
        "nanometer": 1e-3,
        "nanometre": 1e-3,
        "nm": 1e-3,
        "millimeter": 1e3,
        "millimetre": 1e3,
        "mm": 1e3,
        "centimeter": 1e4,
        "centimetre": 1e4,
        "cm": 1e4,
        "meter": 1e6,
        "metre": 1e6,
        "m": 1e6,
        "angstrom": 1e-4,
        "a": 1e-4,
        "picometer": 1e-6,
        "pm": 1e-6,
        "inch": 25400.0,
        "inches": 25400.0,
    }
    return table.get(u)


def planes_of(meta: VolumeMeta, index: Sequence[int]) -> VolumeMeta:
    """Metadata of the subset of planes ``index`` (in order)."""
    m = meta.with_planes(len(meta.z_numbers))
    return replace(
        m,
        z_numbers=tuple(m.z_numbers[i] for i in index),
        synthetic=tuple(m.synthetic[i] for i in index),
        files=tuple(m.files[i] for i in index),
    )
