"""Segment stage: prompt-based 3D segmentation without weights.

Click an object in one section (and correct it with more clicks or scribbles); a pixel
classifier trained on the fly from the prompts on multi-scale texture and stain features gives
its probability, a seeded watershed cuts it out of the section, and propagation carries it
through the neighbouring sections until it ends.

Modules
-------
features    multi-scale per-section features, computed lazily with a bounded cache
classifier  the on-the-fly pixel classifier and its implicit negatives
propagate   seeded watershed in a section; carrying an object to the next section
prompts     clicks (PROMPTS.csv) and scribbles
session     :class:`SegmentSession`: prompts in, per-section object masks out
volume      :func:`iter_segment_volume` (the batch entry point), per-object volumes in µm³
backend     the optional pretrained backend (nnInteractive) from a local model folder
masks       objects as cropped per-section masks; the lazy label volume built from them
"""

from .backend import (
    BACKENDS,
    PretrainedModel,
    check_model_backend,
    iter_segment_pretrained,
    load_pretrained,
)
from .classifier import PixelClassifier, implicit_negatives
from .features import FeatureStack, section_features
from .prompts import (
    PROMPT_COLUMNS,
    Prompt,
    Scribbles,
    check_prompts,
    prompts_to_csv,
    read_prompts_csv,
    scribbles_from_labels,
)
from .propagate import segment_section
from .session import SegmentSession
from .volume import (
    SegmentResult,
    iter_segment_volume,
    object_table_csv,
    object_volumes,
    segment_volume,
)

__all__ = [
    "BACKENDS",
    "PROMPT_COLUMNS",
    "FeatureStack",
    "PixelClassifier",
    "PretrainedModel",
    "Prompt",
    "Scribbles",
    "SegmentResult",
    "SegmentSession",
    "check_model_backend",
    "check_prompts",
    "implicit_negatives",
    "iter_segment_pretrained",
    "iter_segment_volume",
    "load_pretrained",
    "object_table_csv",
    "object_volumes",
    "prompts_to_csv",
    "read_prompts_csv",
    "scribbles_from_labels",
    "section_features",
    "segment_section",
    "segment_volume",
]
