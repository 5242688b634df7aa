"""QC reports: which sections a report flags.

Two kinds are read: a QC.json with ``sections`` (``histovol align --qc``, ``build``'s
``OUT.qc.json``: a section is flagged when its ``flags`` list is not empty; a top-level
``flagged_z`` list wins when present), and a focus report (``flagged_z``: sections out of focus).
"""

from __future__ import annotations

import json
import os

from ..errors import InputError


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
