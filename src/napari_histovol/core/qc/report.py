"""QC reports: which sections a report flags.

Two kinds are read: a QC.json with ``sections`` (``histovol align --qc``, ``build``'s
``OUT.qc.json``: a section is flagged when its ``flags`` list is not empty; a top-level
``flagged_z`` list wins when present), and a focus report (``flagged_z``: sections out of focus).
"""

from __future__ import annotations

import json
import os

import numpy as np

from ..errors import InputError


def score_text(score: float) -> str:
    """A QC score to two decimals, cut rather than rounded, so a near miss (0.996, not flagged)
    never reads as the flag level '1.00'."""
    return f"{np.floor(round(float(score) * 100, 6)) / 100:.2f}"


def read_flagged_z(path: str | os.PathLike) -> list[int]:
    """The z numbers a QC or focus report flags, sorted.

    Raises
    ------
    InputError
        When the file is missing, not text, not JSON, or not a napari-histovol report.
    """
    from ..io.text import read_text

    text = read_text(path, what="the QC file")
    try:
        doc = json.loads(text)
        if isinstance(doc, dict) and "flagged_z" in doc:
            return sorted({int(z) for z in doc["flagged_z"]})
        return sorted({int(s["z"]) for s in doc["sections"] if s.get("flags")})
    except ValueError as e:
        raise InputError(f"'{path}' is not valid JSON ({e}).") from None
    except (KeyError, TypeError, AttributeError):
        raise InputError(
            f"'{path}' is not a napari-histovol QC or focus report (it needs 'sections' with "
            "'z' and 'flags', or 'flagged_z')."
        ) from None


# ----------------------------------------------------------------- section QC reports (QC.json)


def qc_document(report, *, masks_dir: str | None = None) -> dict:
    """The QC.json document of a :class:`core.qc.detect.QCReport`.

    ``{"sections": [{"z", "file", "flags", "scores", "mask"?}], "flagged_z": [...],
    "kinds": [...], "shape": [H, W], "masks_dir"?}``; ``mask`` is the run-length code of the
    section's label image (:func:`core.qc.masks.encode_mask`, label k+1 is ``kinds[k]``).

    Parameters
    ----------
    report
        The QC report.
    masks_dir
        Where the mask images were written, recorded when given.
    """
    from .detect import KINDS
    from .masks import encode_mask

    sections = []
    for s in report.sections:
        d = s.to_dict()
        if s.mask is not None:
            d["mask"] = encode_mask(s.mask)
        sections.append(d)
    doc = {
        "sections": sections,
        "flagged_z": report.flagged_z,
        "kinds": list(KINDS),
        "shape": [int(v) for v in report.shape],
    }
    if masks_dir is not None:
        doc["masks_dir"] = str(masks_dir)
    return doc


def read_qc_report(path: str | os.PathLike) -> list[dict]:
    """The sections of a QC.json with their masks decoded: dicts with ``z``, ``file``,
    ``flags``, ``scores`` and ``mask`` (uint8 labels, or None).

    Reports of ``histovol align --qc`` and ``build`` (flags without masks) are read too.

    Raises
    ------
    InputError
        When the file is not a QC report, or a mask in it is damaged.
    """
    from ..io.text import read_text
    from .masks import decode_mask

    text = read_text(path, what="the QC file")
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise InputError(f"'{path}' is not valid JSON ({e}).") from None
    try:
        out = []
        for s in doc["sections"]:
            m = s.get("mask")
            out.append(
                {
                    "z": int(s["z"]),
                    "file": str(s.get("file", "")),
                    "flags": [str(f) for f in s.get("flags", [])],
                    "scores": dict(s.get("scores", {})),
                    "mask": decode_mask(m) if m else None,
                }
            )
        return out
    except (KeyError, TypeError, AttributeError, ValueError):
        raise InputError(
            f"'{path}' is not a napari-histovol QC report (it needs 'sections' with 'z' and "
            "'flags'; masks as written by the section QC)."
        ) from None
