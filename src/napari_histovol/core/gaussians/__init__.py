"""3D Gaussian-mixture fitting of volumes: a compact, queryable, compressed representation.

* :mod:`.mixture`: the Gaussians (centres, scales, rotations, amplitudes, background);
* :mod:`.render`: footprint-proportional evaluation, differentiable (fit) and exact (decode);
* :mod:`.fit`: gradient fit of one block with densification and pruning;
* :mod:`.compress`: block layout, parallel block fits, budget, encoding;
* :mod:`.hgm`: the ``.hgm`` file format;
* :mod:`.decompress`: whole volume, region of interest or another resolution;
* :mod:`.config`: fit settings (YAML).
"""

from .compress import CompressResult, compress, fit_report, iter_compress, plan_blocks
from .config import FitConfig
from .decompress import decompress_array, decompress_volume, parse_roi
from .hgm import HgmHeader, Quantisation, decode, encode, read_hgm, write_hgm
from .mixture import GaussianMixture
from .render import render_region

__all__ = [
    "CompressResult",
    "FitConfig",
    "GaussianMixture",
    "HgmHeader",
    "Quantisation",
    "compress",
    "decode",
    "decompress_array",
    "decompress_volume",
    "encode",
    "fit_report",
    "iter_compress",
    "parse_roi",
    "plan_blocks",
    "read_hgm",
    "render_region",
    "write_hgm",
]
