"""Which planes to generate, and from which neighbours at which time t.

Every mode is one rule on a finer integer grid: with N frames between neighbours, section z
gets the number z0 + (z - z0)(N + 1); every number between the first and the last that no
measured section holds is generated from the measured sections on either side at
t = (z - z_a) / (z_b - z_a). ``fill_gaps`` is N = 0 (a gap of k numbers gets k frames at
1/(k+1) ... k/(k+1), as InterpolAI's auto mode); ``replace`` removes the listed sections first.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError

MAX_FRAMES_BETWEEN = 1000
#: Filling gaps may generate at most this many planes per measured section (and always up to
#: MIN_GAP_PLANES): more means the numbering is not section numbers, or a gap this wide is
#: better bridged with an explicit number of frames.
MAX_GAP_PLANES_PER_SECTION = 100
MIN_GAP_PLANES = 1000


@dataclass(frozen=True)
class Frame:
    """One output plane: measured (``source`` index) or generated (from ``a``, ``b`` at ``t``)."""

    z: int
    source: int | None = None
    a: int | None = None
    b: int | None = None
    t: float = 0.0

    @property
    def synthetic(self) -> bool:
        return self.source is None


@dataclass(frozen=True)
class Plan:
    frames: tuple[Frame, ...]
    frames_between: int
    replaced: tuple[int, ...]

    @property
    def kept(self) -> list[int]:
        """Indices of the sections the plan keeps (all but the replaced), in order."""
        return [f.source for f in self.frames if not f.synthetic]

    @property
    def n_synthetic(self) -> int:
        return sum(f.synthetic for f in self.frames)

    def pairs(self) -> dict[tuple[int, int], list[int]]:
        """Generated frame indices grouped by their (a, b) source pair (flow is made once per pair)."""
        out: dict[tuple[int, int], list[int]] = {}
        for k, f in enumerate(self.frames):
            if f.synthetic:
                out.setdefault((f.a, f.b), []).append(k)
        return out


def parse_z_numbers(text: str | None) -> list[int]:
    """z numbers written as text, separated by commas or spaces (``"12, 31"``), sorted.

    Raises
    ------
    InputError
        When a part is not a whole number.
    """
    parts = [p for p in str(text or "").replace(",", " ").split() if p]
    try:
        return sorted({int(p) for p in parts})
    except ValueError:
        raise InputError(
            f"'{text}' is not a list of z numbers; write whole numbers separated by commas, "
            "like 12, 31."
        ) from None


def make_plan(
    z_numbers: list[int] | tuple[int, ...],
    *,
    frames_between: int = 0,
    replace: tuple[int, ...] | list[int] = (),
) -> Plan:
    """Plan the output planes for sections numbered ``z_numbers`` (sorted, distinct)."""
    zs = [int(z) for z in z_numbers]
    if len(zs) < 2:
        raise InputError("Interpolation needs at least two sections.")
    if zs != sorted(set(zs)):
        raise InputError("The sections' z numbers must be distinct and increasing.")
    if not (0 <= frames_between <= MAX_FRAMES_BETWEEN):
        raise InputError(
            f"frames between must be between 0 and {MAX_FRAMES_BETWEEN}, not {frames_between}.",
            option="frames_between",
        )
    replace = tuple(sorted({int(r) for r in replace}))
    unknown = [r for r in replace if r not in zs]
    if unknown:
        raise InputError(
            f"Cannot replace z {', '.join(map(str, unknown))}: no such section "
            f"(the sections are {zs[0]}..{zs[-1]})."
        )
    keep = [i for i, z in enumerate(zs) if z not in replace]
    if len(keep) < 2:
        raise InputError("Replacing those sections leaves fewer than two to interpolate from.")
    if zs[0] in replace or zs[-1] in replace:
        raise InputError(
            "The first and the last section cannot be replaced: nothing lies beyond them."
        )
    step = frames_between + 1
    z0 = zs[0]
    missing = (zs[-1] - z0 + 1) - len(keep)  # numbers to fill, before frames are added
    if missing > max(MIN_GAP_PLANES, MAX_GAP_PLANES_PER_SECTION * len(keep)):
        raise InputError(
            f"Filling the gaps of z {zs[0]}..{zs[-1]} would generate {missing * step} planes "
            f"from {len(keep)} sections; check that the file numbers are section numbers, or "
            "choose a number of frames between sections instead of filling the gaps.",
            option="frames_between",
        )
    new_z = {i: z0 + (zs[i] - z0) * step for i in keep}
    frames = []
    for a, b in zip(keep[:-1], keep[1:], strict=True):
        za, zb = new_z[a], new_z[b]
        frames.append(Frame(za, source=a))
        for z in range(za + 1, zb):
            frames.append(Frame(z, a=a, b=b, t=(z - za) / (zb - za)))
    frames.append(Frame(new_z[keep[-1]], source=keep[-1]))
    return Plan(tuple(frames), frames_between, replace)
