"""Reports: per-vector JSON, JUnit XML (junitparser), HTML with embedded plots, rich summaries.

Every file is written through a temp file and a rename, so a report is either whole or absent.
"""

from __future__ import annotations

import base64
import html
import io
import re
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from junitparser import Error, Failure, JUnitXml, TestCase, TestSuite

from fpgaprint.core.atomic import write_atomic
from fpgaprint.harness.verdict import FAIL, NO_VERDICT, PASS, BoardOutcome, CheckResult

REPORT_SCHEMA = "fpgaprint-verify-report/1"
STYLE = {PASS: "bold green", FAIL: "bold red", NO_VERDICT: "bold yellow"}


def verify_report(outcome: BoardOutcome) -> dict[str, Any]:
    """The JSON report of one verification (schema fpgaprint-verify-report/1)."""
    return {"schema": REPORT_SCHEMA, **outcome.to_dict()}


def _write_junit(path: str | Path, suites: list[tuple[TestSuite, float]],
                 seconds: float) -> None:
    """One <testsuites> with the totals Jenkins' JUnit schema allows (no `skipped` there);
    each suite's time is its board's whole verification, the root's the run's wall time."""
    xml = JUnitXml("fpgaprint")
    for suite, _ in suites:
        xml.add_testsuite(suite)
    xml.update_statistics()
    for suite, suite_s in suites:
        suite.time = round(suite_s, 3)
    xml.time = round(seconds, 3)
    xml._elem.attrib.pop("skipped", None)
    buf = io.BytesIO()
    xml.write(buf, pretty=True)
    write_atomic(path, buf.getvalue())


def _name_part(text: str | None, fallback: str) -> str:
    """A dot-free classname part (Jenkins splits package.class at dots)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text or "").strip("_") or fallback


def _vector_lines(outcome: BoardOutcome, check: str, limit: int = 20) -> list[str]:
    """The vectors a check failed or could not judge, one line each (at most `limit`)."""
    rows = []
    for v in outcome.verdict.vectors if outcome.verdict else []:
        if not v.answered:
            rows.append(f"  vector {v.index}: no answer")
        elif check == "exact" and v.exact is False:
            diff = "" if v.raw_diff is None else f"{v.raw_diff} raw values differ, "
            rows.append(f"  vector {v.index}: {diff}label {v.label} (golden {v.golden_label})")
        elif check == "fingerprint" and v.fingerprint is False:
            rows.append(f"  vector {v.index}: label {v.label}, expected {v.expected_label}")
    more = len(rows) - limit
    return rows[:limit] + ([f"  … and {more} more"] if more > 0 else [])


def _check_text(outcome: BoardOutcome, c: CheckResult) -> str:
    """What a CI page shows for one check: result, counts, the board, the vectors."""
    ident = outcome.identity
    unit = "identity fields" if c.name == "identity" else "vectors"
    lines = [f"{c.name}: {c.status}. {c.detail}",
             f"{unit}: {c.passed} passed, {c.failed} failed, {c.missing} missing",
             f"board {ident.get('board', '?')} serial {outcome.serial or '?'} on {outcome.port}; "
             f"package {outcome.package_name or '?'} {outcome.package_id[:16]}; "
             f"mode {outcome.mode}"]
    if c.extra:
        lines.append(", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                               for k, v in c.extra.items() if not isinstance(v, (list, dict))))
    if c.status != PASS and c.name in ("exact", "fingerprint"):
        lines += _vector_lines(outcome, c.name)
    return "\n".join(lines)


def _result(status: str, message: str, text: str) -> list:
    if status == FAIL:
        r = Failure(message, "VerdictFail")
    elif status == NO_VERDICT:
        r = Error(message, "NoVerdict")
    else:
        return []
    r.text = text
    return [r]


def _board_suite(outcome: BoardOutcome, kind: str, name: str, serial: str,
                 properties: dict[str, Any]) -> TestSuite:
    """One board's testsuite: its properties and one testcase per check (`link` when no check
    ran). A testcase's time is that of the exchange its evidence came from: HELLO for
    `identity`, the vectors for `exact`, `fingerprint` and `binding`."""
    suite = TestSuite(name)
    props = {"serial": outcome.serial, "port": outcome.port, "package_id": outcome.package_id,
             "package_name": outcome.package_name, "mode": outcome.mode,
             "verdict": outcome.status, **properties}
    for k in ("board", "backend", "protocol"):
        props.setdefault(k, outcome.identity.get(k))
    for k, v in props.items():
        if v not in (None, ""):
            suite.add_property(k, str(v))
    classname = f"fpgaprint.{kind}.{serial}"
    checks = outcome.verdict.checks if outcome.verdict else []
    if not checks:
        case = TestCase("link", classname=classname, time=round(outcome.duration_s, 3))
        text = f"{outcome.status}: {outcome.reason}\nport {outcome.port}"
        case.result = _result(outcome.status, outcome.reason, text)
        suite.add_testcase(case)
    phases = outcome.phases_s
    for c in checks:
        seconds = (phases.get("identity", outcome.duration_s) if c.name == "identity"
                   else phases.get("vectors", 0.0))
        case = TestCase(c.name, classname=classname, time=round(seconds, 3))
        text = _check_text(outcome, c)
        case.result = _result(c.status, c.detail, text)
        if not case.result:  # a failure or error carries the text in its body
            case.system_out = text
        suite.add_testcase(case)
    if outcome.started:
        suite.timestamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(outcome.started))
    return suite


def write_verify_junit(path: str | Path, outcome: BoardOutcome) -> None:
    """One testsuite `verify SERIAL`, one testcase per check, classname
    `fpgaprint.verify.SERIAL` (valid against Jenkins' JUnit schema)."""
    serial = _name_part(outcome.serial, "unknown-serial")
    suite = _board_suite(outcome, "verify", f"verify {serial}", serial, {})
    _write_junit(path, [(suite, outcome.duration_s)], outcome.duration_s)


def write_accept_junit(path: str | Path, outcomes: Iterable[BoardOutcome], station: str) -> None:
    """One testsuite per board `accept SERIAL` (board N in --ports order when it reported no
    serial), one testcase per check, classname `fpgaprint.accept.SERIAL`; the station and the
    port are properties, so names stay the same from run to run."""
    outcomes = list(outcomes)
    suites = []
    for i, o in enumerate(outcomes):
        serial = _name_part(o.serial, f"board-{i + 1}")
        suite = _board_suite(o, "accept", f"accept {serial}", serial, {"station": station})
        suite.hostname = station
        suites.append((suite, o.duration_s))
    spans = [(o.started, o.started + o.duration_s) for o in outcomes if o.started]
    wall = (max(e for _, e in spans) - min(b for b, _ in spans)) if spans else \
        sum(o.duration_s for o in outcomes)
    _write_junit(path, suites, wall)


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
