"""The one table of focus metrics: each name and the object that scores with it.

The command line and the napari widget take their choices from :data:`METRICS` and their
default from :data:`DEFAULT_METRIC`; both are derived from :data:`REGISTRY`, so a metric added
here is offered everywhere. Every metric has the same interface: ``measure(img, *, tile,
min_tissue, threshold, use_mask) -> PlaneFocus``, a ``min_tile`` (the smallest tile it scores),
``learned`` and a one-line ``description``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Protocol

import numpy as np

from ..errors import InputError
from .maps import FocusMap, PlaneFocus, check_tile
from .metrics import (
    ResponseMetric,
    SpectralMetric,
    brenner_response,
    intensity_response,
    laplacian_response,
    tenengrad_response,
)
from .model import LearnedMetric


class FocusMetric(Protocol):
    """What every entry of the registry provides."""

    description: str
    learned: bool
    min_tile: int

    def measure(
        self,
        img: np.ndarray,
        *,
        tile: int | None = None,
        min_tissue: float = 0.1,
        threshold: float = 3.5,
        use_mask: bool = True,
    ) -> PlaneFocus: ...


#: Every focus metric by name; the first is the default.
REGISTRY: Mapping[str, FocusMetric] = MappingProxyType(
    {
        "laplacian": ResponseMetric(laplacian_response, "var", "variance of the Laplacian"),
        "tenengrad": ResponseMetric(tenengrad_response, "mean", "mean squared Sobel gradient"),
        "brenner": ResponseMetric(brenner_response, "mean", "mean squared 2-pixel difference"),
        "normalized_variance": ResponseMetric(
            intensity_response, "nvar", "intensity variance over mean"
        ),
        "spectral": SpectralMetric(0.15, "high-frequency share of the power spectrum"),
        "model": LearnedMetric("learned defocus-distance regressor (needs torch)"),
    }
)

#: The metric names, in the order offered to users (``model`` included).
METRICS: tuple[str, ...] = tuple(REGISTRY)
#: The metric used when none is chosen (the first of the registry).
DEFAULT_METRIC: str = METRICS[0]
#: The metrics that need no trained model (and no torch).
CLASSICAL_METRICS: tuple[str, ...] = tuple(n for n, m in REGISTRY.items() if not m.learned)


def get_metric(name: str) -> FocusMetric:
    """The registered metric called ``name``.

    Raises
    ------
    InputError
        When no metric has that name; the message lists the registered names.
    """
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise InputError(
            f"Unknown focus metric '{name}'; choose one of {', '.join(METRICS)}.",
            option="metric",
        ) from None


def score(img: np.ndarray, metric: str = DEFAULT_METRIC, *, use_mask: bool = True) -> float:
    """Sharpness of one image over its tissue (higher is sharper; blank images score 0).

    Parameters
    ----------
    img
        Gray or RGB image of any dtype.
    metric
        A name from :data:`METRICS`.
    use_mask
        Score only the tissue (classical metrics); False scores every pixel.
    """
    return get_metric(metric).measure(img, use_mask=use_mask).score


def focus_map(
    img: np.ndarray,
    *,
    tile: int = 256,
    metric: str = DEFAULT_METRIC,
    min_tissue: float = 0.1,
    threshold: float = 3.5,
) -> FocusMap:
    """Score every ``tile`` x ``tile`` tile of one image.

    Tiles with less than ``min_tissue`` tissue score 0; tiles are flagged out of focus when
    their robust z-score (median / MAD over tissue tiles) is below ``-threshold``.

    Raises
    ------
    InputError
        When the metric is unknown or the tile does not fit the image.
    """
    m = get_metric(metric)
    check_tile(tile, np.shape(img)[:2], min_tile=m.min_tile, metric=metric)
    fmap = m.measure(img, tile=tile, min_tissue=min_tissue, threshold=threshold).focus_map
    assert fmap is not None
    return fmap


__all__ = [
    "CLASSICAL_METRICS",
    "DEFAULT_METRIC",
    "METRICS",
    "REGISTRY",
    "FocusMetric",
    "focus_map",
    "get_metric",
    "score",
]
