"""Serial-section alignment: translation, rigid, affine and elastic, with QC.

Register small, warp big: transforms are estimated on downsized registration images and
applied lazily, section by section, to the full-resolution data.
"""

from ..image import CHANNELS
from .stack import (
    DEFAULT_NEIGHBOURS,
    DEFAULT_REFERENCE,
    ENGINES,
    MAX_NEIGHBOURS,
    METHODS,
    REFERENCES,
    AlignResult,
    align,
    iter_align,
    turn_note,
)
from .transforms import SectionTransform, load_transforms, save_transforms
from .warp import apply_transforms

__all__ = [
    "CHANNELS",
    "DEFAULT_NEIGHBOURS",
    "DEFAULT_REFERENCE",
    "MAX_NEIGHBOURS",
    "ENGINES",
    "METHODS",
    "REFERENCES",
    "AlignResult",
    "SectionTransform",
    "align",
    "apply_transforms",
    "iter_align",
    "load_transforms",
    "save_transforms",
    "turn_note",
]
