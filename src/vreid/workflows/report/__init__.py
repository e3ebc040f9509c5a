"""The run report: results table, CMC and training curves, rank lists, attribute confusion matrices.

``build_report(run_dir)`` writes a self-contained ``run_dir/report/index.html``.
"""

from __future__ import annotations

from vreid.workflows.report.html import build_report

__all__ = ["build_report"]
