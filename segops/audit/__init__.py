"""Audit reports: which model segmented which case, trained on what, and why it replaced another.

The package exports what its callers use: the two reports, the parts a comparison is made of and
the tables the CLI prints. Layout, by job (import the rest from its module):

- :mod:`~segops.audit.tables`: the report's parts (:class:`Section`, :class:`Picture`, :class:`Side`,
  :class:`Report`), number formatting, per-case tables and their pairing;
- :mod:`~segops.audit.sections`: the tables built from what runs recorded;
- :mod:`~segops.audit.plots`: scatter and histogram PNGs;
- :mod:`~segops.audit.images`: overlays of the worst cases (drawn by :mod:`segops.outputs.overlays`);
- :mod:`~segops.audit.html`: ``index.html`` and ``summary.json``;
- :mod:`~segops.audit.reports`: :func:`write_compare_report` and :func:`write_run_report`.
"""

from segops.audit.reports import write_compare_report, write_run_report
from segops.audit.sections import versions_section
from segops.audit.tables import Picture, Report, Section, Side, load_cases, pair_cases, paired_stats, slug, to_rich
from segops.errors import AuditError

__all__ = [
    "AuditError",
    "Picture",
    "Report",
    "Section",
    "Side",
    "load_cases",
    "pair_cases",
    "paired_stats",
    "slug",
    "to_rich",
    "versions_section",
    "write_compare_report",
    "write_run_report",
]
