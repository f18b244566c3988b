"""Markdown artifacts a flow run leaves in the Prefect UI, built from the stage reports."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pipelines.extract import ExtractReport
from pipelines.validate import ValidateReport


def validation(report: ValidateReport) -> str:
    """The ``validation-summary`` artifact: counts, expectations, quarantine by reason."""
    lines = [
        "# Validation of new events", "",
        f"- partition files: {len(report.units)}",
        f"- rows: {report.rows_in:,} in, {report.rows_clean:,} clean, "
        f"{report.rows_quarantined:,} quarantined",
        f"- expectations: {report.expectations_passed} passed, {report.expectations_failed} failed",
        "", "| reason | rows |", "|---|--:|",
        *(f"| {r} | {n:,} |" for r, n in report.quarantined_by_reason.items()),
    ]  # fmt: skip
    if report.data_docs:
        lines += ["", f"[Data Docs](file://{report.data_docs}) (`{report.data_docs}`)"]
    return "\n".join(lines)


def nightly(reports: dict[str, Any]) -> str:
    """The ``nightly-summary`` artifact: one table of fields per stage."""
    lines = ["# Nightly recommendations", ""]
    for stage, report in reports.items():
        fields = asdict(report)
        if isinstance(report, ExtractReport):
            # Totals first; the per-source detail stays in the `extractions` table.
            fields = {
                "rows_read": report.rows_read, "rows_written": report.rows_written,
                "rows_rejected": report.rows_rejected,
                "rejected_by_reason": report.rejected_by_reason,
                "files_skipped": report.files_skipped, "partition_files": len(report.units),
                "n_users": report.n_users, "n_items": report.n_items,
            }  # fmt: skip
        elif isinstance(report, ValidateReport):
            fields["units"] = len(report.units)
        lines += [f"## {stage}", "", "| field | value |", "|---|---|"]
        for key, value in fields.items():
            if isinstance(value, float):
                value = f"{value:.4f}"
            lines.append(f"| {key} | {value} |")
        lines.append("")
    return "\n".join(lines)


def failed(stage: str, exc: BaseException, done: dict[str, Any]) -> str:
    """The ``nightly-summary`` of a run that failed: the stage, the reason, what had finished."""
    reason = str(exc).strip() or type(exc).__name__
    lines = [
        f"# Nightly recommendations: FAILED at stage `{stage}`", "",
        f"**{type(exc).__name__}**: " + reason.splitlines()[0][:500], "",
        *(f"    {line}" for line in reason.splitlines()[1:21]), "",
        "The serving store still holds the last published version.", "",
    ]  # fmt: skip
    return "\n".join(lines) + (nightly(done) if done else "")
