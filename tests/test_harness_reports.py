"""Reports and the results database on synthetic outcomes (no board needed). JUnit files are
validated with lxml against the JUnit format Jenkins and GitLab read (tests/data/junit.xsd)."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from junitparser import JUnitXml
from lxml import etree

from fpgaprint.core.atomic import write_json
from fpgaprint.harness.reports import (
    accept_table,
    verify_report,
    verify_summary,
    write_accept_html,
    write_accept_junit,
    write_verify_junit,
)
from fpgaprint.harness.verdict import (
    FAIL,
    NO_VERDICT,
    PASS,
    Answers,
    BoardOutcome,
    CheckResult,
    Expected,
    Policy,
    decide,
    overall,
)

SCHEMA = etree.XMLSchema(etree.parse(str(Path(__file__).parent / "data" / "junit.xsd")))


def valid(path) -> JUnitXml:
    """The file parsed by junitparser after it validated against the JUnit schema."""
    doc = etree.parse(str(path))
    assert SCHEMA.validate(doc), SCHEMA.error_log
    return JUnitXml.fromfile(str(path))


def outcome(port: str, serial: str | None, flip: int = 0, missing: int = 0, n: int = 12,
            fp_flip: int = 0) -> BoardOutcome:
    rng = np.random.default_rng(1)
    raw = rng.integers(-50, 50, size=(n, 10))
    exp = Expected(raw.argmax(1), raw, raw.argmax(1))
    got = raw.copy()
    got[:flip, 0] += 1000  # changes raw and label
    a = Answers(n, 10)
    k = n - missing
    a.record(np.arange(k), got[:k], got[:k].argmax(1))
    ident = CheckResult("identity", PASS, "board reports the expected package_id", 1)
    v = decide(exp, a, Policy(("exact", "fingerprint"), 0.75), extra_checks=[ident])
    return BoardOutcome(
        port=port, status=v.status, reason=v.reason, package_id="ab" * 32,
        package_name="digits-mlp", identity={"board": "Pynq-Z1", "serial": serial},
        verdict=v, started=1.7e9, duration_s=0.5 + flip,
        phases_s={"identity": 0.05, "vectors": 0.25 + flip},
    )


def test_verify_json_and_junit(tmp_path):
    o = outcome("/dev/pts/9", "SN1", flip=2)
    assert o.status == FAIL
    write_json(tmp_path / "r.json", verify_report(o), sort_keys=False)
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["schema"] == "fpgaprint-verify-report/1"
    assert rep["status"] == FAIL and rep["phases_s"] == {"identity": 0.05, "vectors": 2.25}
    vecs = rep["verdict"]["vectors"]
    assert len(vecs) == 12 and vecs[0]["exact"] is False and vecs[5]["exact"] is True
    write_verify_junit(tmp_path / "j.xml", o)
    xml = valid(tmp_path / "j.xml")
    (suite,) = xml
    assert suite.name == "verify SN1" and suite.time == 2.5
    assert {p.name: p.value for p in suite.properties()} == {
        "serial": "SN1", "port": "/dev/pts/9", "board": "Pynq-Z1", "verdict": "FAIL",
        "mode": "selftest", "package_id": "ab" * 32, "package_name": "digits-mlp"}
    cases = {c.name: c for c in suite}
    assert list(cases) == ["identity", "exact", "fingerprint"]
    assert {c.classname for c in cases.values()} == {"fpgaprint.verify.SN1"}
    assert [cases[k].time for k in cases] == [0.05, 2.25, 2.25]  # HELLO; the vectors
    exact = cases["exact"]
    assert exact.is_failure and not cases["fingerprint"].result
    failure = exact.result[0]
    assert "2/12 vectors differ" in failure.message
    assert failure.text.startswith("exact: FAIL. 2/12 vectors differ")
    assert "vectors: 10 passed, 2 failed, 0 missing" in failure.text
    assert "vector 0: 1 raw values differ" in failure.text and "vector 2:" not in failure.text
    assert "serial SN1 on /dev/pts/9" in failure.text
    assert "match_rate" in cases["fingerprint"].system_out
    assert cases["identity"].system_out.startswith("identity: PASS. board reports")
    assert exact.system_out is None  # the failure body has the text
    assert xml.failures == 1 and xml.tests == 3 and xml.time == 2.5
    assert "skipped" not in etree.parse(str(tmp_path / "j.xml")).getroot().attrib


def test_fingerprint_failure_names_the_vectors(tmp_path):
    o = outcome("p", "SN.7/a", flip=6)
    write_verify_junit(tmp_path / "j.xml", o)
    cases = {c.name: c for s in valid(tmp_path / "j.xml") for c in s}
    assert cases["fingerprint"].classname == "fpgaprint.verify.SN_7_a"  # no dots in the class
    failure = cases["fingerprint"].result[0]
    assert failure.message.startswith(
        "match rate 0.667 < threshold 0.750 (8/12 labels match, 9 required; 95 % interval")
    assert "match_rate 0.667" in failure.text
    wrong = [v.index for v in o.verdict.vectors if v.fingerprint is False]
    assert len(wrong) == 4
    for i in wrong:
        assert f"vector {i}: label 0, expected" in failure.text


def test_no_verdict_is_a_junit_error(tmp_path):
    o = outcome("p", "SN2", missing=3)
    assert o.status == NO_VERDICT
    write_verify_junit(tmp_path / "j.xml", o)
    xml = valid(tmp_path / "j.xml")
    assert xml.errors == 2 and xml.failures == 0
    cases = {c.name: c for s in xml for c in s}
    assert "vector 11: no answer" in cases["exact"].result[0].text


def test_board_that_never_answered_is_one_link_error(tmp_path):
    o = BoardOutcome(port="/dev/pts/3", status=NO_VERDICT, reason="no answer to HELLO",
                     package_id="cd" * 32, duration_s=6.0)
    write_verify_junit(tmp_path / "j.xml", o)
    xml = valid(tmp_path / "j.xml")
    (suite,) = xml
    (case,) = suite
    assert suite.name == "verify unknown-serial" and case.name == "link"
    assert case.classname == "fpgaprint.verify.unknown-serial" and case.time == 6.0
    assert case.is_error and "no answer to HELLO" in case.result[0].text


@pytest.mark.parametrize("ports", [("/dev/pts/3", "/dev/pts/4", "/dev/pts/5"),
                                   ("/dev/pts/11", "/dev/pts/7", "socket://h:1")])
def test_accept_junit_names_stay_the_same_across_ports(tmp_path, ports):
    outs = [outcome(ports[0], "SN-A"), outcome(ports[1], "SN-B", flip=5),
            outcome(ports[2], None, missing=1)]
    assert [o.status for o in outs] == [PASS, FAIL, NO_VERDICT]
    assert overall([o.status for o in outs]) == FAIL
    write_accept_junit(tmp_path / "a.xml", outs, "line-1")
    xml = valid(tmp_path / "a.xml")
    assert [s.name for s in xml] == ["accept SN-A", "accept SN-B", "accept board-3"]
    names = [(c.classname, c.name) for s in xml for c in s]
    assert names[:3] == [("fpgaprint.accept.SN-A", "identity"), ("fpgaprint.accept.SN-A", "exact"),
                         ("fpgaprint.accept.SN-A", "fingerprint")]
    assert not any(p in f"{names}" for p in ports)
    suites = list(xml)
    props = {p.name: p.value for p in suites[1].properties()}
    assert props["station"] == "line-1" and props["port"] == ports[1]
    assert props["serial"] == "SN-B" and props["verdict"] == "FAIL"
    assert props["package_id"] == "ab" * 32
    # SN-B fails exact (its fingerprint passes); one answer missing leaves SN-C without verdicts
    assert xml.failures == 1 and xml.errors == 2 and xml.tests == 9
    assert xml.time == 5.5  # boards in parallel: the wall time


def test_accept_html(tmp_path):
    outs = [outcome("a", "SN-A"), outcome("b", "SN-B", flip=5), outcome("c", "SN-C", missing=1)]
    write_accept_html(tmp_path / "a.html", outs, {"station": "line-1"}, 0.75)
    page = (tmp_path / "a.html").read_text()
    pngs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert len(pngs) == 3
    assert all(base64.b64decode(p).startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    assert "SN-B" in page and "FAIL" in page
    # SN-B's fingerprint passes (its bar is green at 0.75): the page says which check failed
    assert ("<b>SN-B</b> on b: FAIL: exact check failed: 5/12 vectors differ from the golden "
            "model (vectors 0, 1, 2, 3, 4) (identity, fingerprint passed)") in page
    assert ("<td>FAIL</td><td>exact: 5/12 vectors differ from the golden model (vectors 0, 1, "
            "2, 3, 4)</td><td>0.75 (12/12)</td>") in page
    assert "<b>SN-C</b> on c: NO_VERDICT: exact check reached no verdict" in page
    captions = re.findall(r"<figcaption>([^<]+)</figcaption>", page)
    assert [c.split(":")[0] for c in captions] == [
        "Figure 1. Fingerprint match rate of each board", "Figure 2. Time to verify each board, "
        "split into the identity exchange (HELLO), the exchange of the vectors, and the rest (con"
        "necting, the board&#x27;s self-test report, the decision).",
        "Figure 3. Vectors of each board that failed a check"]
    assert "alt='Fingerprint match rate per board'" in page


def test_rich_renderables(tmp_path):
    from rich.console import Console

    con = Console(record=True, width=160)
    con.print(verify_summary(outcome("p", "SN1", flip=1)))
    con.print(accept_table([outcome("a", "SN-A")], pending=["b"]))
    text = con.export_text()
    assert "verdict: FAIL" in text and "running" in text and "SN-A" in text


def test_schema_rejects_what_jenkins_rejects():
    bad = [b'<testsuites skipped="0"><testsuite name="a" tests="0"/></testsuites>',
           b'<testsuites><testsuite tests="1"><testcase name="x"/></testsuite></testsuites>',
           b'<testsuites><testsuite name="a" tests="1"><testcase/></testsuite></testsuites>']
    for doc in bad:
        assert not SCHEMA.validate(etree.fromstring(doc)), doc
    assert SCHEMA.validate(etree.fromstring(
        b'<testsuites><testsuite name="a" tests="1"><testcase name="x">'
        b'<failure message="m">text</failure></testcase></testsuite></testsuites>'))


def unreachable(port: str, n: int = 12) -> BoardOutcome:
    """A port that could not be opened: no vector was sent."""
    rng = np.random.default_rng(1)
    raw = rng.integers(-50, 50, size=(n, 10))
    ident = CheckResult("identity", NO_VERDICT, f"no answer to HELLO: cannot open {port}")
    v = decide(Expected(raw.argmax(1), raw, raw.argmax(1)), Answers(n, 10),
               Policy(("exact", "fingerprint"), 0.75), extra_checks=[ident])
    return BoardOutcome(port=port, status=v.status, reason=f"cannot open {port}: no such file",
                        package_id="ab" * 32, verdict=v, unreachable=True)


def test_accept_table_names_the_cause_and_counts_only_answered_vectors():
    from rich.console import Console

    outs = [unreachable("/dev/ttyNOPE"), outcome("b", "SN-B", flip=5),
            outcome("c", "SN-C", missing=5), outcome("a", "SN-A")]
    table = accept_table(outs)
    cols = {c.header: c for c in table.columns}
    cause = [str(x) for x in cols["cause"]._cells]
    rate = list(cols["match rate (answered)"]._cells)
    # an unopenable port is a link error: no serial "None", no failing vectors, no rate
    assert [str(x) for x in cols["serial"]._cells][0] == "—"
    assert cause[0] == "link: cannot open /dev/ttyNOPE: no such file"
    assert str(rate[0]) == "— (0/12 answered)"
    assert [str(x) for x in cols["raw mism."]._cells][0] == "0"
    # a FAIL names its check, and its rate is drawn red even at 0.75 over 12 answered
    assert cause[1].startswith("exact: 5/12 vectors differ")
    assert str(rate[1]) == "0.75 (12/12)" and "green" not in str(rate[1].style)
    assert "red" in str(rate[1].style)
    # 7 of 12 answered: the rate over the 7, the cause the link, not the 5 missing vectors
    assert cause[2].startswith("link: 7/12 vectors answered")
    assert str(rate[2]) == "1.00 (7/12)" and "green" not in str(rate[2].style)
    assert cause[3] == "" and str(rate[3]) == "1.00 (12/12)" and "green" in str(rate[3].style)
    con = Console(record=True, width=200)
    con.print(table)
    assert "None" not in con.export_text()


# ---------------------------------------------------------------- board text is data


def said(port: str, reason: str, n: int = 12) -> BoardOutcome:
    """A board that answered HELLO, then only with an error message of its own (`reason`)."""
    o = unreachable(port, n)
    o.reason, o.unreachable = reason, False
    return o


def test_board_text_is_never_markup_or_emoji_in_the_tables():
    """A serial `[/]` passes the printable-text check; as markup it used to raise MarkupError
    where `accept` prints its table (the verdict was never printed), `[green]` restyled a cell
    and `:cd:` became an emoji. Serials, ports, causes and check details are printed as they
    are."""
    from rich.console import Console

    from fpgaprint.harness.verdict import identity_check

    a = outcome("/dev/pts/[b]9", "[/]", flip=2)
    b = outcome("p2", "A0:cd:42")
    c = said("p3", "board error: [green]all fine[/green] :cd:")
    con = Console(record=True, width=400)
    con.print(accept_table([a, b, c], pending=["[red]x"]))
    text = con.export_text()
    for shown in ("/dev/pts/[b]9", "│ [/] ", "A0:cd:42", "[green]all fine[/green] :cd:",
                  "[red]x"):
        assert shown in text, shown
    assert "💿" not in text
    # verify's table: a check's detail quotes what the board reported
    rng = np.random.default_rng(1)
    raw = rng.integers(-50, 50, size=(4, 10))
    ans = Answers(4, 10)
    ans.record(np.arange(4), raw, raw.argmax(1))
    bad = identity_check({"package_id": "ab" * 32}, {"package_id": "[/][bold]x"})
    v = decide(Expected(raw.argmax(1), raw, raw.argmax(1)), ans, Policy(("exact",), 0.75),
               extra_checks=[bad])
    d = BoardOutcome(port="p", status=v.status, reason=v.reason, package_id="ab" * 32,
                     identity={"board": "[/]", "serial": ":cd:"}, verdict=v)
    con = Console(record=True, width=400)
    con.print(verify_summary(d))
    text = con.export_text()
    assert "board reports '[/][bold]x'" in text and "board [/]" in text and "serial :cd:" in text


def test_board_progress_shows_the_serial_and_port_as_they_are():
    """On a terminal the boards' progress is drawn by rich: its description (the port) and
    detail (the verdict and the board's serial) are shown as text, never read as markup."""
    from rich.console import Console

    from fpgaprint.core.progress import Progress
    from fpgaprint.harness.accept import _Boards

    out = io.StringIO()
    o = outcome("/dev/[/]", "[/] :cd:", flip=1)
    progress = Progress(Console(file=out, force_terminal=True, width=200), transient=False)
    with progress:
        boards = _Boards(progress, ["/dev/[/]"], {"/dev/[/]": 12})
        boards.tasks[o.port].update(detail=boards.detail(o), line=False)
        progress._rich.refresh()
        boards.close()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    assert "board /dev/[/]" in text and "FAIL [/] :cd: (committed)" in text, text


@pytest.mark.parametrize("serial", ["$\\undefined$", "$x^{2$", "$$"])
def test_math_in_a_serial_never_costs_the_html_report(tmp_path, serial):
    """Serials are tick labels: matplotlib parsed `$...$` as math, and a malformed one raised,
    so no HTML was written for any board of the run. Nor is a label ever given to LaTeX."""
    import matplotlib

    outs = [outcome("a", serial, flip=1), outcome("b", "SN-B")]
    for usetex in (False, True):
        with matplotlib.rc_context({"text.usetex": usetex}):
            write_accept_html(tmp_path / "a.html", outs, {"station": "line-1"}, 0.75)
        page = (tmp_path / "a.html").read_text()
        assert len(re.findall(r"data:image/png;base64,", page)) == 3
        assert f"<b>{serial}</b> on a: FAIL" in page


def test_two_boards_of_one_name_are_two_junit_suites(tmp_path):
    """Serials alike but for their punctuation, or one serial reported twice, used to give two
    suites of one name (and classname): a CI page showed one board for two."""
    outs = [outcome("a", "SN.1", flip=1), outcome("b", "SN_1"), outcome("c", "SN-X"),
            outcome("d", "SN-X", flip=2)]
    why = {p: "serial SN-X reported by 2 boards in run 4 (c, d)" for p in "cd"}
    write_accept_junit(tmp_path / "a.xml", outs, "line-1", why)
    xml = valid(tmp_path / "a.xml")
    names = [s.name for s in xml]
    assert names == ["accept SN_1_board-1", "accept SN_1_board-2", "accept SN-X_board-3",
                     "accept SN-X_board-4"]
    suites = {s.name: s for s in xml}
    c, d = suites["accept SN-X_board-3"], suites["accept SN-X_board-4"]
    props = {p.name: p.value for p in c.properties()}
    assert props["serial"] == "SN-X" and props["port"] == "c"
    assert props["verdict"] == NO_VERDICT and props["board_verdict"] == PASS
    assert props["serial_conflict"] == why["c"]
    serial = [case for case in c if case.name == "serial"]
    assert len(serial) == 1 and serial[0].is_error
    assert serial[0].result[0].message == why["c"]
    assert {p.name: p.value for p in d.properties()}["verdict"] == FAIL
    assert not any(case.name == "serial" for case in suites["accept SN_1_board-1"])


def test_a_board_in_a_serial_conflict_never_shows_as_passed(tmp_path):
    from rich.console import Console

    outs = [outcome("c", "SN-X"), outcome("d", "SN-X", flip=2), outcome("e", "SN-E")]
    why = {p: "serial SN-X reported by 2 boards in run 4 (c, d)" for p in "cd"}
    table = accept_table(outs, conflicts=why)
    cols = {c.header: c for c in table.columns}
    assert [str(x) for x in cols["verdict"]._cells] == [NO_VERDICT, FAIL, PASS]
    cause = [str(x) for x in cols["cause"]._cells]
    assert cause[0] == why["c"]
    assert cause[1].startswith(why["d"] + "; exact: 2/12 vectors differ")
    assert cause[2] == ""
    con = Console(record=True, width=300)
    con.print(table)
    write_accept_html(tmp_path / "a.html", outs, {"station": "line-1"}, 0.75, why)
    page = (tmp_path / "a.html").read_text()
    assert (f"<li class='NO_VERDICT'><b>SN-X</b> on c: NO_VERDICT: {why['c']}; its own "
            "verdict PASS: every check passed</li>") in page
    assert f"<li class='FAIL'><b>SN-X</b> on d: FAIL: {why['d']}; its own verdict FAIL" in page
    assert "<tr class='NO_VERDICT'><td>c</td><td>SN-X</td>" in page


def test_serial_conflicts_are_serials_of_two_ports():
    from fpgaprint.harness.reports import serial_conflicts

    assert serial_conflicts([("a", "S1"), ("b", "S2"), ("c", "S1"), ("d", None), ("e", None),
                             ("f", ""), ("g", ""), ("a", "S2")]) == {"S1": ["a", "c"],
                                                                     "S2": ["a", "b"]}
    assert serial_conflicts([("a", "S1"), ("a", "S1")]) == {}
