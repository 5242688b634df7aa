"""Focus stage: how sharp each section (and each tile of it) is, which are blurry relative to
the others, the best plane of a focus series, and the learned defocus-distance regressor.

Modules
-------
metrics    classical sharpness metrics (focus channel, per-pixel responses, spectral ratio)
maps       focus maps per tile, tile-size bounds, robust out-of-focus flags
registry   the one table of metric names -> scorers (``METRICS``, ``DEFAULT_METRIC``)
stack      per-plane scores over a volume, flags, best plane (``iter_focus_stack``)
defocus    optics and the synthetic defocus used for training and benchmarks
patches    the learned metric's 64 x 64 patches
model      the torch regressor: network, save / load, prediction, the ``model`` metric
training   honest train / validation split, training loop, ``iter_train_focus_model``

Importing this package does not import torch; only the learned metric and training do.
"""

from .defocus import Optics, defocus, defocus_psf
from .maps import FocusMap, PlaneFocus, check_tile, robust_flags, robust_z
from .metrics import focus_channel, spectral_ratio
from .model import (
    SHIPPED,
    focus_model_files,
    image_distance,
    load_model,
    predict_focus_distance,
    save_focus_model,
)
from .patches import PATCH, image_patches, normalise_patches
from .registry import (
    CLASSICAL_METRICS,
    DEFAULT_METRIC,
    METRICS,
    REGISTRY,
    focus_map,
    get_metric,
    score,
)
from .stack import best_plane, focus_stack, iter_focus_stack
from .training import (
    FocusDataset,
    TrainValSplit,
    iter_train,
    iter_train_focus_model,
    split_sources,
    stack_patches,
    train_focus_model,
)

__all__ = [
    "CLASSICAL_METRICS",
    "DEFAULT_METRIC",
    "METRICS",
    "PATCH",
    "REGISTRY",
    "SHIPPED",
    "FocusDataset",
    "FocusMap",
    "Optics",
    "PlaneFocus",
    "TrainValSplit",
    "best_plane",
    "check_tile",
    "defocus",
    "defocus_psf",
    "focus_channel",
    "focus_map",
    "focus_model_files",
    "focus_stack",
    "get_metric",
    "image_distance",
    "image_patches",
    "iter_focus_stack",
    "iter_train",
    "iter_train_focus_model",
    "load_model",
    "normalise_patches",
    "predict_focus_distance",
    "robust_flags",
    "robust_z",
    "save_focus_model",
    "score",
    "spectral_ratio",
    "split_sources",
    "stack_patches",
    "train_focus_model",
]
