"""Audit: leakage between splits (patients, near-duplicate images) and label confounding."""

from covid19_images.audit.report import (
    AuditError,
    AuditReport,
    FileSignatures,
    audit_dataset,
    cross_split_copies,
    write_report,
)

__all__ = [
    "AuditError",
    "AuditReport",
    "FileSignatures",
    "audit_dataset",
    "cross_split_copies",
    "write_report",
]
