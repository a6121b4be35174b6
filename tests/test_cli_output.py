"""Output when it is not a terminal (a CI log, a pipe): no line is wrapped or cut, the verdict
and its reason are printed once, results go to stdout and progress and logs to stderr. The
commands run in child processes with pipes."""

from __future__ import annotations

import json

from conftest import run_fpgaprint

from fpgaprint.hw_targets.served import ServedBoard


def test_a_long_fail_reason_is_one_whole_line_printed_once(digits_package, keypair, tmp_path):
    report = tmp_path / "r.json"
    with ServedBoard(digits_package, "--trusted-key", keypair[1], "--flip-bits", "50",
                     "--seed", "2") as board:
        r = run_fpgaprint("verify", "--port", board.port, "--package", digits_package,
                          "--trusted-key", keypair[1], "--json", report,
                          env={"COLUMNS": "", "TERM": "xterm"})
    assert r.returncode == 1, r.stdout + r.stderr
    reason = json.loads(report.read_text())["reason"]
    assert len(reason) > 80 and "exact:" in reason  # longer than rich's width off a terminal
    both = r.stdout + r.stderr
    assert both.count(reason) == 1, both
    (line,) = [x for x in r.stdout.splitlines() if reason in x]
    assert line.startswith("verdict: FAIL (") and line.endswith(f"): {reason}")
    assert r.stderr == ""
    rows = [x for x in r.stdout.splitlines() if x.startswith("│")]
    checks = json.loads(report.read_text())["verdict"]["checks"]
    assert [x.split("│")[1].strip() for x in rows] == [c["name"] for c in checks]
    for row, check in zip(rows, checks):  # every detail whole, on its check's one row
        assert row.split("│")[6].strip() == check["detail"]
