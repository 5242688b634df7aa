"""Objects with a known truth for the segmentation: cells stained on their membranes.

Used by the tests and the benchmark (``benchmarks/segment_bench.py``), as
:mod:`..qc.simulate` and :mod:`..stitch.simulate` are for theirs.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def membrane_cells(
    seed: int = 0,
    shape=(64, 128, 128),
    n: int = 40,
    aniso: float = 1.0,
    photons: float = 30.0,
    wall: float = 1.5,
    blur: float = 1.0,
):
    """Cells tiling space (a Voronoi tessellation of ``n`` random centres), stained on their
    membranes as in a confocal membrane-marker stack: bright walls ``wall`` px thick (each
    cell's own brightness) around dim, textured interiors, blurred (``blur`` px) with shot
    noise (``photons`` at unit brightness).

    Parameters
    ----------
    seed
        Seed of the random draws (centres, texture, brightness, noise).
    shape
        (Z, Y, X) voxels.
    n
        Number of cells.
    aniso
        z is sampled this many times coarser than y and x.
    photons, wall, blur
        Shot noise at unit brightness, wall thickness and blur (px).

    Returns
    -------
    image, labels, sampling
        The uint16 image, the cells' interiors as labels (membrane voxels 0) and the voxel
        size in µm (0.3 µm pixels).
    """
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    centres = rng.uniform(0, 1, (n, 3)) * (nz * aniso, ny, nx)
    grid = np.stack(np.meshgrid(np.arange(nz) * aniso, np.arange(ny), np.arange(nx), indexing="ij"))
    d, i = cKDTree(centres).query(grid.reshape(3, -1).T, k=2)
    lab = (i[:, 0] + 1).reshape(shape).astype(np.int32)
    walls = (d[:, 1] - d[:, 0]).reshape(shape) < wall
    lab[walls] = 0
    tex = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 2)
    img = 0.25 * (1 + 0.3 * tex / tex.std())
    img[walls] = rng.uniform(0.6, 1.0, n)[i[:, 0].reshape(shape)[walls]]
    img = ndi.gaussian_filter(img, (blur / aniso, blur, blur))
    img = rng.poisson(np.clip(img, 0, None) * photons).astype(np.float32)
    img = np.clip(img * 40 + 100, 0, 65535).astype(np.uint16)
    return img, lab, (0.3 * aniso, 0.3, 0.3)


__all__ = ["membrane_cells"]
