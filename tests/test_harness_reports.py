"""Reports and the results database on synthetic outcomes (no board needed)."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
from junitparser import JUnitXml

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
    Expected,
    Policy,
    decide,
    overall,
)


def outcome(port: str, serial: str, flip: int = 0, missing: int = 0, n: int = 12) -> BoardOutcome:
    rng = np.random.default_rng(1)
    raw = rng.integers(-50, 50, size=(n, 10))
    exp = Expected(raw.argmax(1), raw, raw.argmax(1))
    got = raw.copy()
    got[:flip, 0] += 1000  # changes raw and label
    a = Answers(n, 10)
    k = n - missing
    a.record(np.arange(k), got[:k], got[:k].argmax(1))
    v = decide(exp, a, Policy(("exact", "fingerprint"), 0.75))
    return BoardOutcome(
        port=port, status=v.status, reason=v.reason, package_id="ab" * 32,
        package_name="digits-mlp", identity={"board": "Pynq-Z1", "serial": serial},
        verdict=v, started=1.7e9, duration_s=0.5 + flip,
    )


def test_verify_json_and_junit(tmp_path):
    o = outcome("/dev/pts/9", "SN1", flip=2)
    assert o.status == FAIL
    write_json(tmp_path / "r.json", verify_report(o), sort_keys=False)
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["schema"] == "fpgaprint-verify-report/1"
    assert rep["status"] == FAIL
    vecs = rep["verdict"]["vectors"]
    assert len(vecs) == 12 and vecs[0]["exact"] is False and vecs[5]["exact"] is True
    write_verify_junit(tmp_path / "j.xml", o)
    xml = JUnitXml.fromfile(str(tmp_path / "j.xml"))
    cases = {c.name: c for s in xml for c in s}
    assert set(cases) == {"exact", "fingerprint"}
    assert cases["exact"].is_failure and not cases["fingerprint"].result
    assert "2/12 vectors differ" in cases["exact"].result[0].message
    assert xml.failures == 1 and xml.tests == 2


def test_no_verdict_is_a_junit_error(tmp_path):
    o = outcome("p", "SN2", missing=3)
    assert o.status == NO_VERDICT
    write_verify_junit(tmp_path / "j.xml", o)
    xml = JUnitXml.fromfile(str(tmp_path / "j.xml"))
    assert xml.errors == 2 and xml.failures == 0


def test_accept_junit_and_html(tmp_path):
    outs = [outcome("a", "SN-A"), outcome("b", "SN-B", flip=5), outcome("c", "SN-C", missing=1)]
    assert [o.status for o in outs] == [PASS, FAIL, NO_VERDICT]
    assert overall([o.status for o in outs]) == FAIL
    write_accept_junit(tmp_path / "a.xml", outs, "line-1")
    xml = JUnitXml.fromfile(str(tmp_path / "a.xml"))
    cases = [c for s in xml for c in s]
    assert [c.name for c in cases] == ["SN-A @ a", "SN-B @ b", "SN-C @ c"]
    assert cases[0].is_passed and cases[1].is_failure and cases[2].is_error
    write_accept_html(tmp_path / "a.html", outs, {"station": "line-1"}, 0.75)
    page = (tmp_path / "a.html").read_text()
    pngs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert len(pngs) == 3
    assert all(base64.b64decode(p).startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    assert "SN-B" in page and "FAIL" in page


def test_rich_renderables(tmp_path):
    from rich.console import Console

    con = Console(record=True, width=160)
    con.print(verify_summary(outcome("p", "SN1", flip=1)))
    con.print(accept_table([outcome("a", "SN-A")], pending=["b"]))
    text = con.export_text()
    assert "verdict: FAIL" in text and "running" in text and "SN-A" in text
