"""Serial-section alignment: translation, rigid, affine and elastic, with QC.

Register small, warp big: transforms are estimated on downsized registration images and
applied lazily, section by section, to the full-resolution data.
"""

from .stack import METHODS, REFERENCES, AlignResult, align, iter_align
from .transforms import SectionTransform, load_transforms, save_transforms
from .warp import apply_transforms

__all__ = [
    "METHODS",
    "REFERENCES",
    "AlignResult",
    "SectionTransform",
    "align",
    "apply_transforms",
    "iter_align",
    "load_transforms",
    "save_transforms",
]
