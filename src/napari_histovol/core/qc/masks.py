"""QC masks in JSON: run-length encoded label images (compact for the few regions damage has)."""

from __future__ import annotations

from typing import Any

import numpy as np


def encode_mask(labels: np.ndarray) -> dict[str, Any]:
    """Run-length code of a 2D uint8 label image: ``{"shape": [H, W], "runs": [[start, length,
    label], ...]}`` over the row-major flattened pixels (label 0 is not stored).

    Parameters
    ----------
    labels
        2D integer labels.
    """
    flat = np.asarray(labels).ravel()
    change = np.flatnonzero(np.diff(flat)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [flat.size]])
    runs = [
        [int(s), int(e - s), int(flat[s])] for s, e in zip(starts, ends, strict=True) if flat[s]
    ]
    return {"shape": [int(labels.shape[0]), int(labels.shape[1])], "runs": runs}


def decode_mask(doc: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`encode_mask`.

    Raises
    ------
    ValueError
        When the code is not a valid mask (runs outside the shape, bad fields).
    """
    h, w = (int(v) for v in doc["shape"])
    if h <= 0 or w <= 0:
        raise ValueError("a mask needs a positive shape")
    flat = np.zeros(h * w, np.uint8)
    for start, length, label in doc["runs"]:
        start, length = int(start), int(length)
        if start < 0 or length < 0 or start + length > flat.size:
            raise ValueError("a run lies outside the mask")
        flat[start : start + length] = int(label)
    return flat.reshape(h, w)


__all__ = ["decode_mask", "encode_mask"]
