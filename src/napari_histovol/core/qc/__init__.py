"""Section quality control: find damaged, duplicated, missing and misaligned sections
(:mod:`.detect`), repair them from their neighbours (:mod:`.restore`), and read and write the
QC reports other stages use (:mod:`.report`)."""

from . import simulate
from .detect import (
    KINDS,
    LOCAL_KINDS,
    QCReport,
    QCSettings,
    SectionQC,
    iter_section_qc,
    section_qc,
)
from .masks import decode_mask, encode_mask
from .report import qc_document, read_flagged_z, read_qc_report, score_text
from .restore import RestoreResult, iter_restore, restore

__all__ = [
    "KINDS",
    "LOCAL_KINDS",
    "QCReport",
    "QCSettings",
    "RestoreResult",
    "SectionQC",
    "decode_mask",
    "encode_mask",
    "iter_restore",
    "iter_section_qc",
    "qc_document",
    "read_flagged_z",
    "score_text",
    "read_qc_report",
    "restore",
    "section_qc",
    "simulate",
]
