"""Where the planes of an axially reconstructed volume lie, and how they are made from the
measured ones before the network refines them.

Positions along z are counted in *section units* from the first section: section k of a stack
numbered z_0, z_1, ... lies at p_k = z_k - z_0 (gaps in the numbering are missing positions).
With a factor F the output planes lie at q_j = j / F, j = 0 .. (z_last - z_0) F: plane k F is
section k whenever k F is whole.

The network works on 2D slices that cut through z (x-z and y-z), on a *model grid* whose rows
are ``row_step`` lateral pixels apart (1 for an isotropic volume). It is trained on the x-y
planes, where a lateral axis *stands in* for z: rows ``row_step`` pixels apart, every
``model_factor``-th row kept, the others to be restored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import make_interp_spline

from ..errors import InputError
from ..io.meta import VolumeMeta

#: Largest factor accepted (planes per section): beyond it the output is mostly invented.
MAX_FACTOR = 64
#: Both lateral axes stand in for z when their pixel sizes are within this ratio; otherwise only
#: the one closest to the z spacing to reach (the ISBI stack seen along y: x at 4 nm, not z at
#: 50 nm).
STAND_IN_TOLERANCE = 1.5


@dataclass(frozen=True)
class AxialGeometry:
    """The output grid and the model grid of one reconstruction.

    Parameters
    ----------
    positions
        Positions of the measured sections, in section units (``z - z_0``).
    factor
        Output planes per section spacing (may be fractional).
    model_factor
        Model-grid rows per section spacing (``factor`` unless the output asks for planes
        finer than the lateral pixels).
    row_step
        Lateral pixels between model-grid rows (the stand-in axis's sampling when training).
    orientations
        The slices the network runs on: ``"zy"`` (y-z slices, x stands in for z in training)
        and/or ``"zx"`` (x-z slices, y stands in).
    """

    positions: tuple[float, ...]
    factor: float
    model_factor: float
    row_step: float
    orientations: tuple[str, ...]

    @property
    def n_out(self) -> int:
        """Number of output planes: ``(z_last - z_0) * factor + 1``."""
        return int(round(self.positions[-1] * self.factor)) + 1

    @property
    def out_positions(self) -> np.ndarray:
        return np.arange(self.n_out) / self.factor

    @property
    def n_model(self) -> int:
        return int(round(self.positions[-1] * self.model_factor)) + 1

    @property
    def model_positions(self) -> np.ndarray:
        return np.arange(self.n_model) / self.model_factor

    @property
    def has_missing_rows(self) -> bool:
        """Whether the model grid has rows between measured sections (something to learn)."""
        rows = np.asarray(self.positions) * self.model_factor
        return bool(np.any(np.diff(rows) > 1 + 1e-6))

    def measured_out_planes(self) -> dict[int, int]:
        """Output plane index -> input plane index, for output planes that are measured."""
        out = {}
        for k, p in enumerate(self.positions):
            j = p * self.factor
            if abs(j - round(j)) < 1e-6:
                out[int(round(j))] = k
        return out


def axial_geometry(meta: VolumeMeta, factor: float) -> AxialGeometry:
    """The grids for reconstructing ``meta``'s volume at ``factor`` planes per section.

    The anisotropy comes from the physical scale when both the pixel size and the section
    spacing are known; otherwise the factor is taken to make the volume isotropic.

    Raises
    ------
    InputError
        When the factor is not a number >= 1 and <= :data:`MAX_FACTOR`, the volume has fewer
        than two sections, or ``(z_last - z_0) * factor`` is not (nearly) whole.
    """
    f = float(factor)
    if not (np.isfinite(f) and 1.0 <= f <= MAX_FACTOR):
        raise InputError(
            f"The factor must be a number from 1 to {MAX_FACTOR} (planes per section spacing), "
            f"not {factor}.",
            option="factor",
        )
    zs = np.asarray(meta.z_numbers, dtype=float)
    if zs.size < 2:
        raise InputError("Axial reconstruction needs at least two sections.")
    positions = tuple(float(z - zs[0]) for z in zs)
    span = positions[-1] * f
    if abs(span - round(span)) > 1e-3 * max(1.0, span):
        raise InputError(
            f"A factor of {f:g} does not fit {positions[-1]:g} section spacings a whole number "
            f"of times ({span:.3f} planes); choose a factor that does, such as "
            f"{round(span) / positions[-1]:g}.",
            option="factor",
        )
    f = round(span) / positions[-1] if positions[-1] else f
    dy, dx = float(meta.scale[1]), float(meta.scale[2])
    stand_ins = {"zy": dx, "zx": dy}  # y-z slices learn from x, x-z slices from y
    if meta.scale_known and meta.spacing_known and min(dy, dx) > 0:
        target = float(meta.scale[0]) / f  # the z spacing to reach
        # the lateral axis whose pixels are closest to that spacing stands in for z; the other
        # too when its pixels are within the tolerance of the first's
        best = min(stand_ins.values(), key=lambda s: abs(np.log(s / target)))
        orientations = tuple(
            o for o, s in stand_ins.items() if max(s, best) <= STAND_IN_TOLERANCE * min(s, best)
        )
        ratio = float(meta.scale[0]) / best  # stand-in pixels per section spacing
    else:
        orientations = ("zy", "zx")
        ratio = f
    row_step = max(1.0, ratio / f)
    model_factor = max(1.0, ratio / row_step)
    return AxialGeometry(positions, f, model_factor, row_step, orientations)


def spline_matrix(sample_pos: np.ndarray, target_pos: np.ndarray) -> np.ndarray:
    """The (targets, samples) matrix of cubic-spline interpolation (not-a-knot) through samples
    at ``sample_pos`` evaluated at ``target_pos``; linear for two samples, constant for one.
    Targets outside the samples take the nearest end value."""
    s = np.asarray(sample_pos, dtype=float)
    t = np.clip(np.asarray(target_pos, dtype=float), s[0], s[-1])
    n = s.size
    if n == 1:
        return np.ones((t.size, 1))
    k = min(3, n - 1)
    spline = make_interp_spline(s, np.eye(n), k=k)
    return np.asarray(spline(t), dtype=float)


def linear_matrix(sample_pos: np.ndarray, target_pos: np.ndarray) -> np.ndarray:
    """The (targets, samples) matrix of linear interpolation (ends held)."""
    s = np.asarray(sample_pos, dtype=float)
    t = np.clip(np.asarray(target_pos, dtype=float), s[0], s[-1])
    m = np.zeros((t.size, s.size))
    if s.size == 1:
        m[:] = 1
        return m
    idx = np.clip(np.searchsorted(s, t, side="right") - 1, 0, s.size - 2)
    w = (t - s[idx]) / (s[idx + 1] - s[idx])
    m[np.arange(t.size), idx] = 1 - w
    m[np.arange(t.size), idx + 1] = w
    return m


def gap_weight(sample_pos: np.ndarray, target_pos: np.ndarray, unit: float = 1.0) -> np.ndarray:
    """Per target: its distance to the nearest sample in ``unit`` (the section spacing), at
    most 4 - the network's second input channel (0 on a measured section, 0.5 midway between
    neighbours, 1 midway across a missing section)."""
    s = np.asarray(sample_pos, dtype=float)
    t = np.asarray(target_pos, dtype=float)
    d = np.min(np.abs(t[:, None] - s[None, :]), axis=1) if s.size else np.full(t.shape, 4.0)
    return np.clip(d / unit, 0, 4)
