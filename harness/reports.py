"""Reports: per-vector JSON, JUnit XML (junitparser), HTML with embedded plots, rich summaries.

Every file is written through a temp file and a rename, so a report is either whole or absent.
Text a board sends (its serial, board name, error messages, the causes quoting them) is data
everywhere it is shown: a rich Text in a terminal (`plain`: never markup or an emoji code),
escaped in HTML, and never math or LaTeX in a plot (`plain_plots`).
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
from junitparser import Error, Failure, JUnitXml, TestCase, TestSuite

from fpgaprint.core.atomic import write_atomic
from fpgaprint.harness.verdict import FAIL, NO_VERDICT, PASS, BoardOutcome, CheckResult

REPORT_SCHEMA = "fpgaprint-verify-report/1"
STYLE = {PASS: "bold green", FAIL: "bold red", NO_VERDICT: "bold yellow"}


def plain(text: Any, style: str = "") -> Any:
    """`text` as a rich Text in `style`: printed as it is, never parsed as markup (`[/]`,
    `[green]`) or emoji codes (`:cd:`), whatever a board put in it."""
    from rich.text import Text

    return Text(str(text), style)


@contextlib.contextmanager
def plain_plots() -> Iterator[None]:
    """Matplotlib settings under which every label is drawn as it is: no math text (`$...$`
    would be parsed, and a malformed one raises) and no LaTeX, whatever the user's rc says.
    Labels are made and drawn (savefig) inside it."""
    import matplotlib

    with matplotlib.rc_context({"text.usetex": False, "text.parse_math": False}):
        yield


def serial_conflicts(boards: Iterable[tuple[str, Any]]) -> dict[str, list[str]]:
    """Serials reported by boards on two or more ports of one run: serial -> its ports (sorted,
    so that `accept` and `fpgaprint report` name them alike). `boards` are (port, serial)
    pairs; a board without a serial is named by its port and is in no conflict."""
    ports: dict[str, set[str]] = defaultdict(set)
    for port, serial in boards:
        if serial not in (None, ""):
            ports[str(serial)].add(port)
    return {s: sorted(ps) for s, ps in ports.items() if len(ps) > 1}


def conflict_reason(serial: str, ports: list[str], run_id: int | str) -> str:
    """Why no board of a serial conflict passes on that run's evidence, in one line."""
    return (f"serial {serial} reported by {len(ports)} boards in run {run_id} "
            f"({', '.join(ports)})")


def port_conflicts(conflicts: Mapping[str, list[str]], run_id: int | str) -> dict[str, str]:
    """Port -> why (`conflict_reason`) of one run's `serial -> ports` conflicts."""
    return {p: conflict_reason(serial, ports, run_id)
            for serial, ports in conflicts.items() for p in ports}


def conflict_cause(conflict: str | None, own: str) -> str:
    """A board's cause: its serial conflict (if any) first, then its own verdict's cause."""
    if conflict is None:
        return own
    return f"{conflict}; {own}" if own else conflict


def conflict_status(status: str) -> str:
    """The verdict a board in a serial conflict counts as: its FAIL stays a FAIL; a PASS is no
    verdict, since the run cannot say which of the boards the serial's PASS belongs to."""
    return FAIL if status == FAIL else NO_VERDICT


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
                 properties: dict[str, Any], conflict: str | None = None) -> TestSuite:
    """One board's testsuite: its properties and one testcase per check (`link` when no check
    ran). A testcase's time is that of the exchange its evidence came from: HELLO for
    `identity`, INFO (the power-on self-test's registers) for `onchip`, the vectors for `exact`,
    `fingerprint` and `binding`. A board in a serial conflict (`conflict`, why) gets a `serial`
    testcase in error, and its verdict property is the one it counts as."""
    suite = TestSuite(name)
    verdict = outcome.status if conflict is None else conflict_status(outcome.status)
    props = {"serial": outcome.serial, "port": outcome.port, "package_id": outcome.package_id,
             "package_name": outcome.package_name, "mode": outcome.mode,
             "verdict": verdict, **properties}
    if conflict is not None:
        props["serial_conflict"] = conflict
        props["board_verdict"] = outcome.status
    for k in ("board", "backend", "protocol"):
        props.setdefault(k, outcome.identity.get(k))
    if outcome.trust:
        props["trust"] = outcome.trust.get("trust")
        props["trust_warning"] = outcome.trust.get("warning")
    if outcome.fingerprint_only:
        props["fingerprint_only"] = "true (no integrity check in the policy)"
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
                   else phases.get("onchip", 0.0) if c.name == "onchip"
                   else phases.get("vectors", 0.0))
        case = TestCase(c.name, classname=classname, time=round(seconds, 3))
        text = _check_text(outcome, c)
        case.result = _result(c.status, c.detail, text)
        if not case.result:  # a failure or error carries the text in its body
            case.system_out = text
        suite.add_testcase(case)
    if conflict is not None:
        case = TestCase("serial", classname=classname, time=0.0)
        case.result = _result(NO_VERDICT, conflict, f"{conflict}\nthis board: port "
                              f"{outcome.port}, its own verdict {outcome.status}")
        suite.add_testcase(case)
    if outcome.started:
        suite.timestamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(outcome.started))
    return suite


def write_verify_junit(path: str | Path, outcome: BoardOutcome) -> None:
    """One testsuite `verify SERIAL`, one testcase per check, classname
    `fpgaprint.verify.SERIAL` (the JUnit format Jenkins and GitLab read)."""
    serial = _name_part(outcome.serial, "unknown-serial")
    suite = _board_suite(outcome, "verify", f"verify {serial}", serial, {})
    _write_junit(path, [(suite, outcome.duration_s)], outcome.duration_s)


def write_accept_junit(path: str | Path, outcomes: Iterable[BoardOutcome], station: str,
                       conflicts: Mapping[str, str] | None = None) -> None:
    """One testsuite per board `accept SERIAL` (board N in --ports order when it reported no
    serial), one testcase per check, classname `fpgaprint.accept.SERIAL`; the station and the
    port are properties, so names stay the same from run to run. Two boards whose names would
    be the same (one serial reported twice, serials alike but for their punctuation) are
    `SERIAL_board-N`, so that no suite stands for two boards. `conflicts`: port -> why its
    board is in a serial conflict (a `serial` testcase in error)."""
    outcomes = list(outcomes)
    conflicts = conflicts or {}
    names = [_name_part(o.serial, f"board-{i + 1}") for i, o in enumerate(outcomes)]
    names = [f"{n}_board-{i + 1}" if names.count(n) > 1 else n for i, n in enumerate(names)]
    suites = []
    for o, serial in zip(outcomes, names):
        suite = _board_suite(o, "accept", f"accept {serial}", serial, {"station": station},
                             conflicts.get(o.port))
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


# Okabe & Ito's colour-blind-safe palette
COLORS = {PASS: "#009E73", FAIL: "#D55E00", NO_VERDICT: "#E69F00"}
GREY = "#999999"
TITLES = {"match_rate": "Fingerprint match rate per board",
          "duration": "Verification time per board",
          "failures": "Vectors that failed a check or went unanswered, per board"}
CAPTIONS = {
    "match_rate": "Fingerprint match rate of each board: the share of its answered vectors "
                  "whose label equals the pre-trained model's (how many answered is noted above "
                  "the bar). The dashed line is the threshold a board must reach. A bar's "
                  "colour is the board's verdict; the note above it names every other check "
                  "that did not pass.",
    "duration": "Time to verify each board, split into the identity exchange (HELLO), the "
                "exchange of the vectors, and the rest (connecting, the board's self-test "
                "report, the decision).",
    "failures": "Vectors of each board that failed a check: raw output different from the "
                "golden model's (exact check) or label different from the expected one "
                "(fingerprint check); apart from them, the vectors never answered (a link "
                "matter, not a failing vector).",
}


def _first_clause(text: str) -> str:
    """Text up to the first `; ` outside parentheses."""
    depth = 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == ";" and depth <= 0:
            return text[:i]
    return text


def cause(status: str, reason: str, checks: list[dict[str, Any]], answered: int,
          total: int) -> str:
    """Why a board did not pass, in one line ("" for a PASS): the checks that failed; else,
    when vectors went unanswered, the fixture or link (`link: ...`), never the vectors; else
    the checks that reached no verdict. Used by `accept` and `fpgaprint report`."""
    if status == PASS:
        return ""
    failed = [c for c in checks if c.get("status") == FAIL]
    if failed:
        return "; ".join(f"{c.get('name')}: {c.get('detail')}" for c in failed)
    text = re.sub(r"^(no verdict: |link error: )", "", reason or "")
    if (total and answered == 0) or not checks:
        return f"link: {_first_clause(text)}"
    if answered < total:
        return f"link: {answered}/{total} vectors answered ({_first_clause(text)})"
    open_ = [c for c in checks if c.get("status") == NO_VERDICT]
    return "; ".join(f"{c.get('name')}: {c.get('detail')}" for c in open_) or text


def outcome_cause(o: BoardOutcome) -> str:
    """`cause` of a board outcome."""
    checks = [] if o.verdict is None else o.verdict.to_dict()["checks"]
    return cause(o.status, o.reason, checks, o.answered, o.total)


def label_matches(o: BoardOutcome) -> tuple[int, int, int]:
    """(labels that match, vectors answered, vectors) of the fingerprint tier: a match rate is
    only ever taken over answered vectors."""
    vs = [v for v in (o.verdict.vectors if o.verdict else []) if v.tier == "fingerprint"]
    answered = [v for v in vs if v.answered]
    return sum(v.fingerprint is True for v in answered), len(answered), len(vs)


def match_text(o: BoardOutcome) -> str:
    """`0.98 (100/100)`: the match rate over the answered vectors and how many answered;
    `— (0/100 answered)` when none did; "" without fingerprint-tier vectors."""
    k, answered, n = label_matches(o)
    if not n:
        return ""
    if not answered:
        return f"— (0/{n} answered)"
    return f"{k / answered:.2f} ({answered}/{n})"


def not_passed(o: BoardOutcome) -> list[CheckResult]:
    """The checks of a board that did not pass (FAIL or NO_VERDICT), in verdict order."""
    return [c for c in (o.verdict.checks if o.verdict else []) if c.status != PASS]


def _verdict_sentence(o: BoardOutcome) -> str:
    """One line saying which checks decided a board's verdict."""
    bad = not_passed(o)
    if o.status == PASS:
        return "PASS: every check passed"
    if not bad:
        return f"{o.status}: {o.reason}"
    parts = [f"{c.name} check {'failed' if c.status == FAIL else 'reached no verdict'}: "
             f"{c.detail}" for c in bad]
    good = [c.name for c in (o.verdict.checks if o.verdict else []) if c.status == PASS]
    tail = f" ({', '.join(good)} passed)" if good else ""
    return f"{o.status}: " + "; ".join(parts) + tail


def board_name(o: BoardOutcome, conflicts: Mapping[str, str] | None = None) -> str:
    """How a report names a board: its serial, else its port; `SERIAL (PORT)` when the serial
    is in a conflict (`conflicts`: port -> why), so that no name stands for two boards."""
    if o.serial in (None, ""):
        return o.port
    return f"{o.serial} ({o.port})" if o.port in (conflicts or {}) else str(o.serial)


def shown_status(o: BoardOutcome, conflicts: Mapping[str, str] | None = None) -> str:
    """A board's verdict as the run counts it: `conflict_status` when it is in a serial
    conflict, else its own."""
    return conflict_status(o.status) if o.port in (conflicts or {}) else o.status


def shown_cause(o: BoardOutcome, conflicts: Mapping[str, str] | None = None) -> str:
    """`outcome_cause`, after the serial conflict the board is in (if any)."""
    return conflict_cause((conflicts or {}).get(o.port), outcome_cause(o))


@plain_plots()
def accept_plots(outcomes: list[BoardOutcome], threshold: float | None,
                 conflicts: Mapping[str, str] | None = None) -> dict[str, str]:
    """Base64 PNGs: per-board match rate, time, failing vectors (keys of CAPTIONS). Board text
    in them (serials, ports) is drawn as it is (`plain_plots`)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    conflicts = conflicts or {}
    names = [board_name(o, conflicts) for o in outcomes]
    status = [shown_status(o, conflicts) for o in outcomes]
    x = np.arange(len(outcomes))
    width = max(5.0, 0.7 * len(outcomes) + 3.5)
    legend = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "frameon": False,
              "fontsize": 8}
    plots = {}

    fig = Figure(figsize=(width, 3.4), layout="constrained")
    ax = fig.subplots()
    fp = [o.verdict.check("fingerprint") if o.verdict else None for o in outcomes]
    counts = [label_matches(o) for o in outcomes]
    ax.bar(x, [k / a if a else 0.0 for k, a, _ in counts],
           color=[COLORS.get(s, GREY) for s in status])
    for i, o in enumerate(outcomes):  # the answered count; every other check not passed
        k, a, n = counts[i]
        notes = [f"{c.name}: {'FAIL' if c.status == FAIL else 'no verdict'}"
                 for c in not_passed(o) if c.name != "fingerprint"]
        if fp[i] is None and not notes:
            notes = ["no check ran", o.status.replace("_", " ").lower()]
        if o.port in conflicts:
            notes.insert(0, "serial conflict")
        if n:
            notes.append(f"{a}/{n} answered")
        if notes:
            ax.text(i, 1.04, "\n".join(notes), ha="center", va="bottom", fontsize=7,
                    color=COLORS.get(status[i], "black"))
    handles = [Patch(color=COLORS[s], label=f"board {s}") for s in COLORS]
    if threshold is not None:
        ax.axhline(threshold, color="black", linestyle="--", lw=1)
        handles.append(Line2D([], [], color="black", ls="--", label=f"threshold {threshold:.2f}"))
    ax.set_xticks(x, names, rotation=45 if len(outcomes) > 4 else 0, ha="right"
                  if len(outcomes) > 4 else "center")
    ax.set_ylim(0, 1.3)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_xlabel("board (serial, else port)")
    ax.set_ylabel("match rate (answered vectors)")
    ax.set_title(TITLES["match_rate"])
    ax.legend(handles=handles, **legend)
    plots["match_rate"] = _png(fig)

    fig = Figure(figsize=(width, 3.4), layout="constrained")
    ax = fig.subplots()
    hello = np.array([o.phases_s.get("identity", 0.0) for o in outcomes])
    vectors = np.array([o.phases_s.get("vectors", 0.0) for o in outcomes])
    rest = np.maximum(np.array([o.duration_s for o in outcomes]) - hello - vectors, 0.0)
    bottom = np.zeros(len(outcomes))
    for vals, label, color in ((hello, "identity (HELLO)", "#56B4E9"),
                               (vectors, "vectors", "#0072B2"), (rest, "rest", GREY)):
        ax.bar(x, vals, bottom=bottom, color=color, label=label)
        bottom += vals
    ax.set_xticks(x, names, rotation=45 if len(outcomes) > 4 else 0, ha="right"
                  if len(outcomes) > 4 else "center")
    ax.set_xlabel("board (serial, else port)")
    ax.set_ylabel("seconds")
    ax.set_title(TITLES["duration"])
    ax.legend(**legend)
    plots["duration"] = _png(fig)

    fig = Figure(figsize=(width, 3.4), layout="constrained")
    ax = fig.subplots()
    exact = [o.exact_failed or 0 for o in outcomes]
    wrong = [c.failed if c else 0 for c in fp]
    unanswered = [o.total - o.answered for o in outcomes]
    for k, (vals, label, color) in enumerate(
        [(exact, "raw output ≠ golden (exact)", "#D55E00"),
         (wrong, "label ≠ expected (fingerprint)", "#CC79A7"),
         (unanswered, "no answer", "#E69F00")]
    ):
        ax.bar(x + (k - 1) * 0.27, vals, width=0.27, label=label, color=color)
    ax.set_xticks(x, names, rotation=45 if len(outcomes) > 4 else 0, ha="right"
                  if len(outcomes) > 4 else "center")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("board (serial, else port)")
    ax.set_ylabel("vectors")
    ax.set_title(TITLES["failures"])
    ax.legend(**legend)
    plots["failures"] = _png(fig)
    return plots


def accept_html(
    outcomes: list[BoardOutcome], meta: dict[str, Any], threshold: float | None,
    conflicts: Mapping[str, str] | None = None,
) -> str:
    """A self-contained HTML page: summary, which checks failed, per-board table, plots.
    `conflicts`: port -> why its board is in a serial conflict (shown before its verdict)."""
    e = html.escape
    conflicts = conflicts or {}
    plots = accept_plots(outcomes, threshold, conflicts) if outcomes else {}
    rows = []
    for o in outcomes:
        s = shown_status(o, conflicts)
        rows.append(
            f"<tr class='{e(s)}'><td>{e(o.port)}</td><td>{e(str(o.serial or ''))}</td>"
            f"<td>{e(str(o.identity.get('board') or ''))}</td><td>{e(s)}</td>"
            f"<td>{e(shown_cause(o, conflicts))}</td><td>{e(match_text(o))}</td>"
            f"<td>{'' if o.exact_failed is None else o.exact_failed}</td>"
            f"<td>{o.answered}/{o.total}</td><td>{o.duration_s:.2f}</td><td>{e(o.reason)}</td></tr>"
        )
    verdicts = "".join(
        f"<li class='{e(shown_status(o, conflicts))}'><b>{e(str(o.serial or o.port))}</b> on "
        f"{e(o.port)}: "
        + (f"{e(shown_status(o, conflicts))}: {e(conflicts[o.port])}; its own verdict "
           if o.port in conflicts else "")
        + f"{e(_verdict_sentence(o))}</li>" for o in outcomes
    )
    meta_rows = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in meta.items())
    verdict_css = "\n".join(  # the verdict and match-rate cells in the board's verdict colour
        f"tr.{s} td:nth-child(4),tr.{s} td:nth-child(6),li.{s} b{{color:{c}}}"
        for s, c in COLORS.items())
    imgs = "".join(
        f"<figure><img alt='{e(TITLES[k])}' src='data:image/png;base64,{v}'>"
        f"<figcaption>Figure {i}. {e(CAPTIONS[k])}</figcaption></figure>"
        for i, (k, v) in enumerate(plots.items(), 1)
    )
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>fpgaprint acceptance</title>
<style>
body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}
{verdict_css}
figure{{display:inline-block;vertical-align:top;max-width:44em;margin:1em}}
figcaption{{font-size:90%;color:#333}}
</style></head><body>
<h1>fpgaprint acceptance</h1>
<table>{meta_rows}</table>
<h2>Verdicts</h2>
<ul>{verdicts}</ul>
<h2>Boards</h2>
<table><tr><th>port</th><th>serial</th><th>board</th><th>verdict</th><th>cause</th>
<th>match rate (answered)</th><th>raw mismatches</th><th>answered</th><th>duration [s]</th>
<th>reason</th></tr>
{''.join(rows)}</table>
<h2>Plots</h2>
{imgs}
<p>generated {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}</p>
</body></html>
"""


def write_accept_html(
    path: str | Path, outcomes: list[BoardOutcome], meta: dict[str, Any],
    threshold: float | None, conflicts: Mapping[str, str] | None = None,
) -> None:
    write_atomic(path, accept_html(outcomes, meta, threshold, conflicts).encode("utf-8"))


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
    for c in outcome.verdict.checks if outcome.verdict else []:  # a detail quotes the board
        table.add_row(plain(c.name), Text(c.status, STYLE.get(c.status, "")), str(c.passed),
                      str(c.failed), str(c.missing), plain(c.detail))
    verdict = Text.assemble(("verdict: ", "bold"), (outcome.status, STYLE[outcome.status]),
                            f" ({outcome.duration_s:.2f} s)")
    if outcome.status != PASS:  # the reason, once: the CLI adds no error line after it
        verdict.append(f": {outcome.reason}")
    return Group(head, table, verdict)


def accept_table(outcomes: list[BoardOutcome], pending: Iterable[str] = (),
                 conflicts: Mapping[str, str] | None = None) -> Any:
    """A rich table of boards: finished ones with their verdict, pending ones as running. A
    board in a serial conflict (`conflicts`: port -> why) shows the verdict it counts as, and
    the conflict first in its cause. Every cell a board or an operator wrote is plain text."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title="acceptance", header_style="bold")
    for col in ("port", "serial", "verdict", "cause", "match rate (answered)", "raw mism.",
                "time [s]"):
        table.add_column(col)
    for o in outcomes:
        status = shown_status(o, conflicts)
        style = STYLE[status].replace("bold ", "")
        table.add_row(
            plain(o.port), plain(o.serial or "—"), Text(status, STYLE[status]),
            plain(shown_cause(o, conflicts)), Text(match_text(o), style),
            "" if o.exact_failed is None else str(o.exact_failed), f"{o.duration_s:.2f}",
        )
    for p in pending:
        table.add_row(plain(p), "", Text("running", "cyan"), "", "", "", "")
    return table
