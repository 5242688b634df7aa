"""Section interpolation: N frames between sections, filling missing numbers, replacing
damaged sections; linear cross-fade, optical-flow synthesis, or a FILM-style SavedModel."""

from .plan import Frame, Plan, make_plan, parse_z_numbers
from .stack import (
    METHODS,
    InterpolationResult,
    interpolate,
    interpolate_pair,
    iter_interpolate,
    iter_write_interpolated_folder,
)

__all__ = [
    "METHODS",
    "Frame",
    "InterpolationResult",
    "Plan",
    "interpolate",
    "interpolate_pair",
    "iter_interpolate",
    "iter_write_interpolated_folder",
    "make_plan",
    "parse_z_numbers",
]
