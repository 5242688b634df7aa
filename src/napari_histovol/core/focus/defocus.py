"""Physically sensible synthetic defocus: the optics, the depth-dependent point spread function
and the noise of a camera (numpy and OpenCV only; used for training data and benchmarks).

The PSF is a geometric pillbox of radius ``|z| tan(asin(NA)) / pixel size`` (the cone of light
of a lens of numerical aperture NA), convolved with the in-focus diffraction blur (Gaussian,
sigma ``0.21 lambda / NA``); then photon (Poisson) and read (Gaussian) noise and a random gain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Optics:
    """Imaging parameters of the synthetic defocus.

    Parameters
    ----------
    pixel_um
        Pixel size in the sample, µm.
    na
        Numerical aperture of the objective.
    wavelength_um
        Wavelength of the light, µm.
    max_defocus_um
        Largest distance from focus the regressor is trained on, µm.
    """

    pixel_um: float = 0.5
    na: float = 0.5
    wavelength_um: float = 0.55
    max_defocus_um: float = 8.0

    def blur_radius_px(self, z_um: float) -> float:
        """Radius of the geometric blur disk at ``z_um`` from focus, in pixels."""
        return abs(z_um) * math.tan(math.asin(min(self.na, 0.95))) / self.pixel_um

    @property
    def diffraction_sigma_px(self) -> float:
        """Sigma of the in-focus diffraction blur, in pixels."""
        return 0.21 * self.wavelength_um / self.na / self.pixel_um


def defocus_psf(z_um: float, optics: Optics) -> np.ndarray:
    """Pillbox of the geometric blur radius, convolved with the diffraction Gaussian (sum 1)."""
    r = optics.blur_radius_px(z_um)
    s = optics.diffraction_sigma_px
    half = int(math.ceil(r + 3 * s)) + 1
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    # anti-aliased pillbox: coverage of each pixel by the disk
    d = np.sqrt(yy**2 + xx**2)
    disk = np.clip(r + 0.5 - d, 0, 1) if r >= 0.5 else (d == 0).astype(np.float32)
    psf = cv2.GaussianBlur(disk.astype(np.float32), (0, 0), s)
    return psf / psf.sum()


def defocus(
    patch: np.ndarray, z_um: float, optics: Optics, rng: np.random.Generator, *, noise: bool = True
) -> np.ndarray:
    """A sharp float patch in [0, 1] as seen ``z_um`` out of focus, with camera noise.

    Parameters
    ----------
    patch
        Sharp gray patch, float in [0, 1].
    z_um
        Distance from focus, µm (the sign does not matter).
    optics
        The imaging parameters.
    rng
        Random generator for the noise.
    noise
        Whether to add photon and read noise, a gain and an offset.
    """
    out = cv2.filter2D(
        patch.astype(np.float32), -1, defocus_psf(z_um, optics), borderType=cv2.BORDER_REFLECT
    )
    if noise:
        photons = rng.uniform(200, 2000)
        out = rng.poisson(np.clip(out, 0, None) * photons).astype(np.float32) / photons
        out += rng.normal(0, rng.uniform(0.002, 0.01), out.shape).astype(np.float32)
        out = out * rng.uniform(0.7, 1.3) + rng.uniform(-0.1, 0.1)
    return out


__all__ = ["Optics", "defocus", "defocus_psf"]
