"""Reports: per-vector JSON, JUnit XML (junitparser), HTML with embedded plots, rich summaries.

Every file is written through a temp file and a rename, so a report is either whole or absent.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from junitparser import Error, Failure, JUnitXml, TestCase, TestSuite

from fpgaprint.core.atomic import write_atomic
from fpgaprint.harness.verdict import FAIL, NO_VERDICT, PASS, BoardOutcome

REPORT_SCHEMA = "fpgaprint-verify-report/1"
STYLE = {PASS: "bold green", FAIL: "bold red", NO_VERDICT: "bold yellow"}


def verify_report(outcome: BoardOutcome) -> dict[str, Any]:
    """The JSON report of one verification (schema fpgaprint-verify-report/1)."""
    return {"schema": REPORT_SCHEMA, **outcome.to_dict()}


def _write_junit(path: str | Path, suites: list[TestSuite]) -> None:
    xml = JUnitXml("fpgaprint")
    for s in suites:
        s.update_statistics()
        xml.add_testsuite(s)
    xml.update_statistics()
    buf = io.BytesIO()
    xml.write(buf, pretty=True)
    write_atomic(path, buf.getvalue())


def _result(status: str, message: str) -> list:
    if status == FAIL:
        return [Failure(message, "VerdictFail")]
    if status == NO_VERDICT:
        return [Error(message, "NoVerdict")]
    return []


def write_verify_junit(path: str | Path, outcome: BoardOutcome) -> None:
    """One testsuite per verification, one testcase per check (identity, exact, fingerprint)."""
    suite = TestSuite(f"verify {outcome.port}")
    suite.add_property("package_id", outcome.package_id)
    suite.add_property("mode", outcome.mode)
    for k in ("board", "serial", "backend"):
        if outcome.identity.get(k) is not None:
            suite.add_property(k, str(outcome.identity[k]))
    if outcome.trust:
        suite.add_property("trust", str(outcome.trust.get("trust")))
        if outcome.trust.get("warning"):
            suite.add_property("trust_warning", outcome.trust["warning"])
    checks = outcome.verdict.checks if outcome.verdict else []
    if not checks:
        case = TestCase("link", classname="fpgaprint.verify", time=outcome.duration_s)
        case.result = _result(outcome.status, outcome.reason)
        suite.add_testcase(case)
    for c in checks:
        case = TestCase(c.name, classname="fpgaprint.verify", time=outcome.duration_s)
        case.result = _result(c.status, c.detail)
        case.system_out = c.detail
        suite.add_testcase(case)
    _write_junit(path, [suite])


def write_accept_junit(path: str | Path, outcomes: Iterable[BoardOutcome], station: str) -> None:
    """One testcase per board: name = serial (or port), classname = station."""
    suite = TestSuite(f"accept {station}")
    outcomes = list(outcomes)
    warning = next((o.trust["warning"] for o in outcomes if o.trust and o.trust.get("warning")),
                   None)
    if warning:
        suite.add_property("trust_warning", warning)
    for o in outcomes:
        name = f"{o.serial or 'unknown-serial'} @ {o.port}"
        case = TestCase(name, classname=f"fpgaprint.accept.{station}", time=o.duration_s)
        case.result = _result(o.status, o.reason)
        case.system_out = json.dumps(
            {"identity": o.identity, "match_rate": o.match_rate, "exact_failed": o.exact_failed}
        )
        suite.add_testcase(case)
    _write_junit(path, [suite])


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


COLORS = {PASS: "#2e7d32", FAIL: "#c62828", NO_VERDICT: "#f9a825"}


def accept_plots(outcomes: list[BoardOutcome], threshold: float | None) -> dict[str, str]:
    """Base64 PNGs: per-board match rate, duration, failing vectors."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    names = [o.serial or o.port for o in outcomes]
    colors = [COLORS.get(o.status, "#777777") for o in outcomes]
    width = max(4.0, 0.6 * len(outcomes) + 2)
    plots = {}

    fig = Figure(figsize=(width, 3))
    ax = fig.subplots()
    ax.bar(names, [o.match_rate or 0.0 for o in outcomes], color=colors)
    if threshold is not None:
        ax.axhline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.2f}")
        ax.legend(loc="lower right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("fingerprint match rate")
    ax.tick_params(axis="x", rotation=45)
    plots["match_rate"] = _png(fig)

    fig = Figure(figsize=(width, 3))
    ax = fig.subplots()
    ax.bar(names, [o.duration_s for o in outcomes], color=colors)
    ax.set_ylabel("duration [s]")
    ax.tick_params(axis="x", rotation=45)
    plots["duration"] = _png(fig)

    fig = Figure(figsize=(width, 3))
    ax = fig.subplots()
    exact = [o.exact_failed or 0 for o in outcomes]
    fp = [
        (o.verdict.check("fingerprint").failed if o.verdict and o.verdict.check("fingerprint")
         else 0)
        for o in outcomes
    ]
    unanswered = [o.total - o.answered for o in outcomes]
    x = np.arange(len(outcomes))
    for k, (vals, label, color) in enumerate(
        [(exact, "raw != golden", "#c62828"), (fp, "label != expected", "#ef9a9a"),
         (unanswered, "unanswered", "#f9a825")]
    ):
        ax.bar(x + (k - 1) * 0.27, vals, width=0.27, label=label, color=color)
    ax.set_xticks(x, names)
    ax.set_ylabel("failing vectors")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False)
    ax.tick_params(axis="x", rotation=45)
    plots["failures"] = _png(fig)
    return plots


def accept_html(
    outcomes: list[BoardOutcome], meta: dict[str, Any], threshold: float | None
) -> str:
    """A self-contained HTML page: summary, per-board table, plots as base64 PNG."""
    e = html.escape
    plots = accept_plots(outcomes, threshold) if outcomes else {}
    rows = []
    for o in outcomes:
        rate = "" if o.match_rate is None else f"{o.match_rate:.3f}"
        rows.append(
            f"<tr class='{e(o.status)}'><td>{e(o.port)}</td><td>{e(str(o.serial))}</td>"
            f"<td>{e(str(o.identity.get('board')))}</td><td>{e(o.status)}</td><td>{rate}</td>"
            f"<td>{'' if o.exact_failed is None else o.exact_failed}</td>"
            f"<td>{o.answered}/{o.total}</td><td>{o.duration_s:.2f}</td><td>{e(o.reason)}</td></tr>"
        )
    meta_rows = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in meta.items())
    imgs = "".join(
        f"<figure><img alt='{k}' src='data:image/png;base64,{v}'><figcaption>{e(k)}"
        "</figcaption></figure>"
        for k, v in plots.items()
    )
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>fpgaprint acceptance</title>
<style>
body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}
tr.PASS td:nth-child(4){{color:{COLORS[PASS]}}} tr.FAIL td:nth-child(4){{color:{COLORS[FAIL]}}}
tr.NO_VERDICT td:nth-child(4){{color:{COLORS[NO_VERDICT]}}} figure{{display:inline-block}}
</style></head><body>
<h1>fpgaprint acceptance</h1>
<table>{meta_rows}</table>
<h2>Boards</h2>
<table><tr><th>port</th><th>serial</th><th>board</th><th>verdict</th><th>match rate</th>
<th>raw mismatches</th><th>answered</th><th>duration [s]</th><th>reason</th></tr>
{''.join(rows)}</table>
<h2>Plots</h2>
{imgs}
<p>generated {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}</p>
</body></html>
"""


def write_accept_html(
    path: str | Path, outcomes: list[BoardOutcome], meta: dict[str, Any],
    threshold: float | None,
) -> None:
    write_atomic(path, accept_html(outcomes, meta, threshold).encode("utf-8"))


def verify_summary(outcome: BoardOutcome) -> Any:
    """A rich renderable: identity line, one row per check, the verdict."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    ident = outcome.identity
    head = Text.assemble(
        ("board ", "dim"), str(ident.get("board", "?")), ("  serial ", "dim"),
        str(ident.get("serial", "?")), ("  port ", "dim"), outcome.port,
        ("  mode ", "dim"), outcome.mode,
    )
    table = Table(show_header=True, header_style="bold")
    for col in ("check", "result", "pass", "fail", "missing", "detail"):
        table.add_column(col)
    for c in outcome.verdict.checks if outcome.verdict else []:
        table.add_row(c.name, Text(c.status, STYLE.get(c.status, "")), str(c.passed),
                      str(c.failed), str(c.missing), c.detail)
    verdict = Text.assemble(("verdict: ", "bold"), (outcome.status, STYLE[outcome.status]),
                            f"  ({outcome.duration_s:.2f} s)")
    parts: list[Any] = [head, table, verdict]
    if outcome.status != PASS:
        parts.append(Text(outcome.reason))
    return Group(*parts)


def accept_table(outcomes: list[BoardOutcome], pending: Iterable[str] = ()) -> Any:
    """A rich table of boards: finished ones with their verdict, pending ones as running."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="acceptance", header_style="bold")
    for col in ("port", "serial", "verdict", "match rate", "raw mism.", "time [s]"):
        table.add_column(col)
    for o in outcomes:
        table.add_row(
            o.port, str(o.serial), Text(o.status, STYLE[o.status]),
            "" if o.match_rate is None else f"{o.match_rate:.3f}",
            "" if o.exact_failed is None else str(o.exact_failed), f"{o.duration_s:.2f}",
        )
    for p in pending:
        table.add_row(p, "", Text("running", "cyan"), "", "", "")
    return table
