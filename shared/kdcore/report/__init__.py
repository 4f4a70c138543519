"""Report building blocks shared by the verticals: run-folder reading, multi-metric patient bootstrap,
matplotlib plots as PNG bytes and a self-contained HTML document.

The verticals (``medkd.report``, ``facekd.report``) decide what to compute and show; nothing here knows
about OCT or faces.
"""

from .bootstrap import (bootstrap_samples, difference_samples, paired_bootstrap_samples, percentile_ci,
                        summarize_samples)
from .html import HtmlDocument, fmt, fmt_ci, fmt_mean_std
from .plots import bar_plot, curve_keys, figure_png, heatmap, line_plot, new_figure, training_curves
from .run_inputs import (PROFILE_HEADER, RunInputs, audit_lines, audit_section, audit_summary, csv_text, json_safe, safe_name,
                      profile_rows, read_json, read_log_records, read_run, write_report)

__all__ = [
    "bootstrap_samples", "paired_bootstrap_samples", "difference_samples", "percentile_ci", "summarize_samples",
    "HtmlDocument", "fmt", "fmt_ci", "fmt_mean_std",
    "new_figure", "figure_png", "line_plot", "bar_plot", "heatmap", "training_curves", "curve_keys",
    "RunInputs", "read_run", "read_json", "read_log_records", "audit_summary", "audit_lines", "audit_section", "profile_rows",
    "csv_text", "safe_name",
    "PROFILE_HEADER",
    "json_safe", "write_report",
]
