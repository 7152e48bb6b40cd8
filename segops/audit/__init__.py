"""Audit reports: which model segmented which case, trained on what, and why it replaced another.

Layout, by job:

- :mod:`~segops.audit.tables`: the report's parts (:class:`Section`, :class:`Picture`, :class:`Side`,
  :class:`Report`), number formatting, per-case tables and their pairing;
- :mod:`~segops.audit.sections`: the tables built from what runs recorded;
- :mod:`~segops.audit.plots`: scatter and histogram PNGs;
- :mod:`~segops.audit.images`: overlays of the worst cases (drawn by :mod:`segops.outputs.overlays`);
- :mod:`~segops.audit.html`: ``index.html`` and ``summary.json``;
- :mod:`~segops.audit.reports`: :func:`write_compare_report` and :func:`write_run_report`.
"""

from segops.audit.html import render_html, write_page
from segops.audit.images import plot_overlay, write_overlays
from segops.audit.plots import plot_histograms, plot_scatter
from segops.audit.reports import write_compare_report, write_run_report
from segops.audit.sections import (
    compared_section,
    data_section,
    datasets_section,
    decision_sections,
    metrics_section,
    models_section,
    outputs_section,
    paired_section,
    run_section,
    source_text,
    steps_section,
    versions_section,
    worst_section,
)
from segops.audit.tables import (
    COLOUR_A,
    COLOUR_B,
    HEADLINE,
    Picture,
    Report,
    Section,
    Side,
    fmt,
    load_cases,
    pair_cases,
    paired_stats,
    slug,
    to_rich,
    when,
)
from segops.errors import AuditError

__all__ = [
    "COLOUR_A",
    "COLOUR_B",
    "HEADLINE",
    "AuditError",
    "Picture",
    "Report",
    "Section",
    "Side",
    "compared_section",
    "data_section",
    "datasets_section",
    "decision_sections",
    "fmt",
    "load_cases",
    "metrics_section",
    "models_section",
    "outputs_section",
    "pair_cases",
    "paired_section",
    "paired_stats",
    "plot_histograms",
    "plot_overlay",
    "plot_scatter",
    "render_html",
    "run_section",
    "slug",
    "source_text",
    "steps_section",
    "to_rich",
    "versions_section",
    "when",
    "worst_section",
    "write_compare_report",
    "write_overlays",
    "write_page",
    "write_run_report",
]
