"""An index of the Data Docs that opens offline.

GX's own ``index.html`` builds its list of validations with JavaScript and stylesheets from
CDNs, so on a machine without internet access it shows a blank page. This writes
``offline.html`` beside it: plain HTML with inline styles, one row per stored validation result
(newest first: suite, time, verdict, expectations passed, what failed) linking GX's result page,
and the suites' pages. The result pages themselves are server-rendered and stay readable
without their stylesheets.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

MAX_ROWS = 500
"""Validation results listed (the newest)."""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { border-bottom: 1px solid #ddd; padding: 6px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
.ok { color: #17702b; font-weight: 600; } .failed { color: #b00020; font-weight: 600; }
code { font-size: 13px; }
"""


def offline_index_path(site: Path) -> Path:
    """The offline index of the Data Docs site at ``site`` (``.../data_docs/local_site``)."""
    return site / "offline.html"


def write_offline_index(gx_dir: Path, site: Path) -> Path:
    """Write the offline index of ``site`` from the results stored under ``gx_dir``."""
    results = []
    for path in (gx_dir / "uncommitted" / "validations").glob("*/*/*/*.json"):
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        page = site / "validations" / path.relative_to(gx_dir / "uncommitted" / "validations")
        results.append((str(doc.get("meta", {}).get("run_id", {}).get("run_time", "")), doc, page))
    results.sort(key=lambda r: r[0], reverse=True)
    rows = [_row(run_time, doc, page.with_suffix(".html"), site) for run_time, doc, page in results]
    suites = sorted((site / "expectations").glob("*.html"))
    body = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Data Docs (offline)</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Data Docs</h1>",
        "<p>Readable without internet access. GX's own index (needs internet): "
        "<a href='index.html'>index.html</a>.</p>",
        "<h2>Expectation suites</h2><ul>",
        *[
            f"<li><a href='expectations/{html.escape(p.name)}'>{html.escape(p.stem)}</a></li>"
            for p in suites
        ],
        "</ul>",
        f"<h2>Validation results (newest {min(len(rows), MAX_ROWS)} of {len(rows)})</h2>",
        "<table><tr><th>validated at (UTC)</th><th>suite</th><th>verdict</th>"
        "<th>expectations passed</th><th>failed</th></tr>",
        *rows[:MAX_ROWS],
        "</table></body></html>",
    ]
    target = offline_index_path(site)
    site.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".html.tmp")
    tmp.write_text("\n".join(body))
    tmp.replace(target)
    return target


def _row(run_time: str, doc: dict[str, object], page: Path, site: Path) -> str:
    stats = doc.get("statistics") or {}
    assert isinstance(stats, dict)
    ok = bool(doc.get("success"))
    failed = []
    for result in doc.get("results") or []:  # type: ignore[attr-defined]
        if not result.get("success"):
            config = result.get("expectation_config") or {}
            column = (config.get("kwargs") or {}).get("column")
            failed.append(str(config.get("type", "?")) + (f" on {column}" if column else ""))
    link = page.relative_to(site).as_posix() if page.exists() else None
    suite = html.escape(str(doc.get("suite_name", "?")))
    when = html.escape(run_time.replace("T", " ")[:19])
    return (
        f"<tr><td>{f'<a href={chr(39)}{html.escape(link)}{chr(39)}>{when}</a>' if link else when}"
        f"</td><td>{suite}</td><td class='{'ok' if ok else 'failed'}'>"
        f"{'passed' if ok else 'FAILED'}</td><td>{stats.get('successful_expectations', '?')} / "
        f"{stats.get('evaluated_expectations', '?')}</td><td>"
        + "<br>".join(f"<code>{html.escape(f)}</code>" for f in failed)
        + "</td></tr>"
    )
