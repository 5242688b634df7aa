"""torch is an optional extra: only fitting Gaussians needs it, never reading or decoding."""

from __future__ import annotations

from types import ModuleType

from ..errors import InputError

#: The sentence shown when torch is missing (the install hint names the package, no flags).
MISSING_TORCH = (
    "Fitting Gaussians needs the optional package torch, which is not installed; install it "
    "(pip install torch, or napari-histovol[torch]) and try again."
)


def require_torch() -> ModuleType:
    """Import and return torch, or raise :class:`InputError` saying which package to install."""
    try:
        import torch
    except ImportError:
        raise InputError(MISSING_TORCH) from None
    return torch
