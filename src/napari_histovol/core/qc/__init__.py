"""Section quality control: reading the QC reports other stages write (flagged sections)."""

from .report import read_flagged_z

__all__ = ["read_flagged_z"]
