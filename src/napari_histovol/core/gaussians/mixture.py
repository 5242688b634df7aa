"""Anisotropic 3D Gaussian mixtures: parameters, covariance algebra and footprints.

A mixture holds ``N`` Gaussians in voxel coordinates of the volume it was fitted to
(``z, y, x``; voxel centres at integer positions). Gaussian ``i`` adds

    amplitude_i * exp(-1/2 d^T Sigma_i^-1 d),   d = p - centre_i,   Sigma_i = R_i S_i^2 R_i^T

to every voxel ``p`` with Mahalanobis distance ``d^T Sigma_i^-1 d <= TRUNCATION**2``, and
nothing beyond it. The truncation makes every Gaussian's footprint finite, which is what lets
evaluation cost in proportion to the footprints instead of ``N x voxels`` (see
:mod:`.render`). ``R_i`` comes from a unit quaternion ``(w, x, y, z)`` acting on ``(z, y, x)``
axes; ``S_i`` holds the three standard deviations in voxels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Gaussians are cut off at this Mahalanobis radius (3 sigma keeps 97 % of a 3D Gaussian's
#: mass and everything above 1.1 % of its peak).
TRUNCATION = 3.0


@dataclass(frozen=True)
class GaussianMixture:
    """A set of anisotropic 3D Gaussians plus a constant background.

    Attributes
    ----------
    centres
        ``(N, 3)`` float, voxel coordinates ``z, y, x``.
    scales
        ``(N, 3)`` float, standard deviations in voxels along the rotated axes.
    rotations
        ``(N, 4)`` float, unit quaternions ``w, x, y, z``.
    amplitudes
        ``(N,)`` float, peak values in the volume's units above the background.
    background
        Constant added everywhere (the level of empty space).
    """

    centres: np.ndarray
    scales: np.ndarray
    rotations: np.ndarray
    amplitudes: np.ndarray
    background: float = 0.0

    def __post_init__(self) -> None:
        n = len(self.amplitudes)
        for name, arr, width in (
            ("centres", self.centres, 3),
            ("scales", self.scales, 3),
            ("rotations", self.rotations, 4),
        ):
            if arr.shape != (n, width):
                raise ValueError(f"{name} must have shape ({n}, {width}), not {arr.shape}")

    def __len__(self) -> int:
        return len(self.amplitudes)

    def subset(self, keep: np.ndarray) -> GaussianMixture:
        """The Gaussians selected by a boolean mask or index array, same background."""
        return GaussianMixture(
            self.centres[keep],
            self.scales[keep],
            self.rotations[keep],
            self.amplitudes[keep],
            self.background,
        )

    def shifted(self, offset) -> GaussianMixture:
        """The same Gaussians with ``offset`` (z, y, x voxels) added to every centre."""
        return GaussianMixture(
            self.centres + np.asarray(offset, dtype=self.centres.dtype),
            self.scales,
            self.rotations,
            self.amplitudes,
            self.background,
        )

    @staticmethod
    def concatenate(parts: list[GaussianMixture], background: float) -> GaussianMixture:
        """Join several mixtures (for example the blocks of a block-wise fit)."""
        if not parts:
            return GaussianMixture.empty(background)
        return GaussianMixture(
            np.concatenate([p.centres for p in parts]),
            np.concatenate([p.scales for p in parts]),
            np.concatenate([p.rotations for p in parts]),
            np.concatenate([p.amplitudes for p in parts]),
            background,
        )

    @staticmethod
    def empty(background: float = 0.0) -> GaussianMixture:
        """A mixture with no Gaussians."""
        return GaussianMixture(
            np.zeros((0, 3)), np.ones((0, 3)), np.zeros((0, 4)), np.zeros(0), background
        )

    def covariances(self) -> np.ndarray:
        """``(N, 3, 3)`` covariance matrices in voxel units."""
        r = quaternion_to_matrix(self.rotations)
        return np.einsum("nij,nj,nkj->nik", r, self.scales**2, r)

    def extents(self) -> np.ndarray:
        """``(N, 3)`` half-widths of each footprint's axis-aligned box (voxels)."""
        return footprint_half_widths(self.scales, self.rotations)


def quaternion_entries(w, x, y, z):
    """The rotation matrix of unit quaternions ``(w, x, y, z)`` as three rows of three entries.

    Pure arithmetic on the four components, so numpy arrays and torch tensors (differentiable)
    share this one formula; :func:`quaternion_to_matrix` stacks it for numpy and the fit's
    renderer for torch.
    """
    return (
        (1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)),
        (2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)),
        (2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)),
    )


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(N, 3, 3)`` from quaternions ``(N, 4)`` (normalised here), numpy."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    rows = quaternion_entries(*q.T)
    return np.stack([np.stack(row, -1) for row in rows], 1)


def footprint_half_widths(scales: np.ndarray, rotations: np.ndarray) -> np.ndarray:
    """Half-widths (voxels) of the axis-aligned box around each truncated Gaussian, numpy.

    The ellipsoid ``d^T Sigma^-1 d <= T^2`` reaches ``T * sqrt(Sigma_ii)`` along axis ``i``.
    """
    rot = quaternion_to_matrix(rotations)
    s = np.asarray(scales, dtype=np.float64)
    return TRUNCATION * np.sqrt(np.einsum("nij,nj->ni", rot**2, s**2))
