"""Serial-section alignment: translation, rigid, affine and elastic, with QC.

Register small, warp big: transforms are estimated on downsized registration images and
applied lazily, section by section, to the full-resolution data.
"""

from ..image import CHANNELS
from .stack import ENGINES, METHODS, REFERENCES, AlignResult, align, iter_align
from .transforms import SectionTransform, load_transforms, save_transforms
from .warp import apply_transforms

__all__ = [
    "CHANNELS",
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
]
