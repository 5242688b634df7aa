"""Optional pretrained backends from a local checkpoint (never downloaded at run time).

The weight-free default needs no file. A user who has a micro-sam or nnInteractive checkpoint
points the segmentation at it; this module checks the file and the package that reads it and
says, in one sentence, what to install or which file to provide.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ..errors import InputError

#: backend name -> (importable package, how to install it, checkpoint files it reads)
BACKENDS = {
    "micro-sam": ("micro_sam", "conda install -c conda-forge micro_sam", ".pt/.pth SAM checkpoint"),
    "nnInteractive": ("nnInteractive", "pip install nnInteractive", "nnInteractive model folder"),
}


def check_model_backend(checkpoint: str | os.PathLike) -> str:
    """Check that a pretrained checkpoint can be used and return its backend's name.

    Parameters
    ----------
    checkpoint
        A local micro-sam checkpoint (``.pt``/``.pth``) or nnInteractive model folder.

    Raises
    ------
    InputError
        When the file is missing, or the package that reads it is not installed, or it is
        installed but this version of napari-histovol cannot drive it yet; the message names
        the package and the file.
    """
    p = Path(os.fspath(checkpoint)).expanduser()
    if not p.exists():
        raise InputError(
            f"The model checkpoint '{p}' does not exist; give a local micro-sam .pt file or "
            "nnInteractive model folder (nothing is downloaded), or leave the model out to use "
            "the weight-free default.",
            option="model",
        )
    name = "nnInteractive" if p.is_dir() else "micro-sam"
    package, install, kind = BACKENDS[name]
    if importlib.util.find_spec(package) is None:
        raise InputError(
            f"'{p.name}' looks like a {kind}, which needs the {package} package ({install}); "
            "it is not installed. Install it, or leave the model out to use the weight-free "
            "default.",
            option="model",
        )
    raise InputError(
        f"{package} is installed, but this version of napari-histovol cannot drive it yet, so "
        f"'{p.name}' is not used; leave the model out to use the weight-free default.",
        option="model",
    )
