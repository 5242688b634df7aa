"""Axial (isotropic) reconstruction with a self-supervised network learned from the volume's
own x-y planes: more planes along z than were measured, and the missing sections.

torch is imported only when a model is trained or applied (:func:`iter_isotropic`).
"""

from .geometry import MAX_FACTOR, AxialGeometry, axial_geometry
from .run import DEFAULT_TIME_BUDGET, IsotropicResult, isotropic_meta, iter_isotropic

__all__ = [
    "DEFAULT_TIME_BUDGET",
    "MAX_FACTOR",
    "AxialGeometry",
    "IsotropicResult",
    "axial_geometry",
    "isotropic_meta",
    "iter_isotropic",
]
