"""Section interpolation: N frames between sections, filling missing numbers, replacing
damaged sections; linear cross-fade, optical-flow synthesis, or a FILM-style SavedModel."""

from .live import PairCache, live_interpolate
from .plan import Frame, Plan, make_plan, parse_z_numbers
from .stack import (
    METHODS,
    InterpolationResult,
    frame_at,
    interpolate,
    interpolate_pair,
    iter_interpolate,
    iter_write_interpolated_folder,
)

__all__ = [
    "METHODS",
    "Frame",
    "InterpolationResult",
    "PairCache",
    "Plan",
    "frame_at",
    "interpolate",
    "interpolate_pair",
    "iter_interpolate",
    "iter_write_interpolated_folder",
    "live_interpolate",
    "make_plan",
    "parse_z_numbers",
]
