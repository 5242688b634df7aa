"""3D Gaussian-mixture fitting of volumes: a compact, queryable, compressed representation.

* :mod:`.mixture`: the Gaussians (centres, scales, rotations, amplitudes, background);
* :mod:`.render`: footprint-proportional evaluation (the decoder, numpy);
  :mod:`.render_torch`: the same patches, differentiable, for the fit (torch);
* :mod:`.normalise`: value range, background, noise and occupied voxels of a volume;
* :mod:`.fit`: gradient fit of one block with densification and pruning (torch);
* :mod:`.compress`: block layout, parallel block fits, budget, encoding, cancellation;
* :mod:`.hgm`: the ``.hgm`` file format;
* :mod:`.decompress`: whole volume, region of interest or another resolution, and the size
  check made before decoding;
* :mod:`.files`: compress to ``.hgm`` with side files, decode to a volume file;
* :mod:`.config`: fit settings (YAML).

torch is an optional extra needed only to fit: importing this package, reading and decoding
``.hgm`` files and compressing constant volumes work without it.
"""

from .cancel import FitCancelled
from .compress import CompressResult, compress, fit_report, iter_compress, plan_blocks
from .config import FitConfig
from .decompress import (
    DecodeSize,
    check_decode_size,
    decompress_array,
    decompress_volume,
    parse_roi,
    plane_record,
    volume_fields,
)
from .files import fit_side_files, iter_compress_file, iter_decompress_file
from .hgm import HgmHeader, Quantisation, decode, encode, read_hgm, write_hgm
from .mixture import GaussianMixture
from .render import render_region

__all__ = [
    "CompressResult",
    "DecodeSize",
    "FitCancelled",
    "FitConfig",
    "GaussianMixture",
    "HgmHeader",
    "Quantisation",
    "check_decode_size",
    "compress",
    "decode",
    "decompress_array",
    "decompress_volume",
    "encode",
    "fit_report",
    "fit_side_files",
    "iter_compress",
    "iter_compress_file",
    "iter_decompress_file",
    "parse_roi",
    "plan_blocks",
    "plane_record",
    "read_hgm",
    "volume_fields",
    "render_region",
    "write_hgm",
]
