"""A verdict people can trust, against a board and files that lie: the regressions of the
adversarial review (challenge sets the board knows, re-signed packages, board values that
would hang the host or reach parsers unchecked, reports that cannot be written, CLI edges).

Misbehaving boards are test doubles of a physical board gone bad: the real agent and link on a
real pty, with one method changed to lie, as a compromised firmware would.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SELFTEST_COUNT, in_process_board, make_challenge, resign, run_fpgaprint

from fpgaprint.core.package import verify_package
from fpgaprint.hw_targets import protocol as P
from fpgaprint.hw_targets.agent import BoardAgent
from fpgaprint.hw_targets.served import ServedBoard, served_boards


@pytest.fixture
def serve(digits_package, keypair):
    """serve(agent_cls=BoardAgent, wrap=None) -> pty URL of an in-process board of the digits
    package (its backend passed through `wrap`, if given)."""
    with contextlib.ExitStack() as boards:
        def start(agent_cls=BoardAgent, wrap=None):
            return boards.enter_context(in_process_board(
                digits_package, keypair[1], agent_cls, wrap, pty=True)).url

        yield start


def verify(run_cli, pkg, pub, port, *extra):
    return run_cli("verify", "--port", port, "--package", pkg, "--trusted-key", pub, *extra)


# ---------------------------------------------------------------- 1. challenge the board knows


class LookupBoard:
    """A cheating board: it holds its package and answers the stored answer to any stored
    input, and garbage to everything else (it runs no model)."""

    def __init__(self, backend):
        self.backend = backend
        v = backend.package.vectors()
        self.table = {r.tobytes(): (g, lab) for r, g, lab in
                      zip(v["inputs"].astype("<i8"), v["golden_raw"], v["golden_labels"])}

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def infer(self, x):
        x = np.asarray(x, dtype="<i8").reshape(len(x), -1)
        hits = [self.table.get(r.tobytes()) for r in x]
        raw = np.stack([h[0] if h else np.zeros(10, np.int64) for h in hits])
        labels = np.array([h[1] if h else 0 for h in hits], dtype=np.int64)
        return raw, (labels + np.array([0 if h else 3 for h in hits])) % 10


def test_a_challenge_sharing_inputs_with_the_package_is_refused(
        run_cli, serve, digits_build, digits_package, keypair, tmp_path):
    """With the package's own vectors as the challenge, a look-up board used to PASS."""
    port = serve(wrap=LookupBoard)
    vectors, golden = digits_build.inputs, digits_build.golden  # the package's own
    fresh = (vectors + 1) % 256
    fresh[:, 0] = 0  # no row equals a stored one
    same = make_challenge(golden, vectors, tmp_path / "same.npz")
    one = make_challenge(golden, np.concatenate([fresh[:10], vectors[7:8]]),
                         tmp_path / "one.npz")
    disjoint = make_challenge(golden, fresh, tmp_path / "fresh.npz")
    for fp, shared in ((same, len(vectors)), (one, 1)):
        code, out, err = verify(run_cli, digits_package, keypair[1], port, "--challenge", fp)
        assert code == 2 and out == "", err
        assert f"shares {shared} of its" in err and "self-test vectors" in err
    code, out, err = verify(run_cli, digits_package, keypair[1], port, "--challenge", disjoint)
    assert code == 1 and "verdict: FAIL" in out, out + err
    assert "exact:" in out and "fingerprint: match rate" in out


def test_a_healthy_board_passes_a_disjoint_challenge(run_cli, serve, digits_build,
                                                     digits_package, keypair, tmp_path):
    fresh = (digits_build.inputs + 1) % 256  # the package's own vectors, moved
    fp = make_challenge(digits_build.golden, fresh, tmp_path / "fresh.npz")
    code, out, err = verify(run_cli, digits_package, keypair[1], serve(), "--challenge", fp)
    assert code == 0 and "verdict: PASS" in out, out + err


# ---------------------------------------------------------------- 2. a re-signed package


def _resign(src: Path, dst: Path, key: Path) -> Path:
    """The attacker's copy: fingerprint check only, threshold 0, signed with their key."""
    shutil.copytree(src, dst)
    policy = dst / "selftest" / "policy.json"
    doc = json.loads(policy.read_text())
    doc.update(checks=["fingerprint"], fingerprint_threshold=0.0)
    policy.write_text(json.dumps(doc))
    return resign(dst, key, edit=lambda m: m["selftest"].update(checks=["fingerprint"]))


def test_a_resigned_package_is_refused_unless_its_signer_is_pinned(
        run_cli, digits_package, keypair, tmp_path):
    from fpgaprint.core.keys import generate_keypair

    evil_key, evil_pub = generate_keypair(tmp_path / "evil")
    evil = _resign(digits_package, tmp_path / "evil-pkg", evil_key)
    with ServedBoard(evil, "--trusted-key", evil_pub, "--flip-bits", "200", "--seed", "1") as b:
        code, out, err = run_cli("verify", "--port", b.port, "--package", evil)
        assert code == 2 and out == "" and "which is not pinned" in err
        code, _, err = verify(run_cli, evil, keypair[1], b.port)
        assert code == 2 and "not by the trusted key" in err
        code, out, err = run_cli("verify", "--port", b.port, "--package", evil,
                                 "--allow-unpinned")
        assert code == 2 and "has no integrity check" in err  # its labels-only policy
        code, out, err = run_cli("verify", "--port", b.port, "--package", evil,
                                 "--allow-unpinned", "--allow-fingerprint-only",
                                 "--json", tmp_path / "r.json")
    assert code == 0  # what the attacker wanted, now said loudly and recorded
    assert err.startswith("warning: package signer ") and "NOT pinned" in err
    assert "NOT that the weights are intact" in err
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["trust"]["trust"] == "unpinned" and "NOT pinned" in rep["trust"]["warning"]
    assert rep["fingerprint_only"] is True


def test_board_serve_requires_a_pinned_signer(digits_package, tmp_path):
    from fpgaprint.core.errors import LinkError

    board = ServedBoard(digits_package, "--pty")
    with pytest.raises(LinkError, match="which is not pinned"):
        board.wait_ready()
    assert board.proc.returncode == 2
    with open(tmp_path / "err", "w") as err:
        with ServedBoard(digits_package, "--allow-unpinned", stderr=err) as b:
            assert b.port.startswith("/dev/pts/")
    assert "warning: package signer" in (tmp_path / "err").read_text()


# ---------------------------------------------------------------- 3. board values


def hello_agent(**fields):
    class Lying(BoardAgent):
        def _hello(self, payload):
            ident = P.unpack_json(BoardAgent._hello(self, payload))
            ident.update(fields)
            return json.dumps(ident).encode()  # json.dumps writes Infinity / NaN as such

        _handlers = {**BoardAgent._handlers, P.MsgType.HELLO: _hello}

    return Lying


@pytest.mark.parametrize("fields, name", [
    ({"infer_s_per_vector": math.inf}, "infer_s_per_vector"),
    ({"infer_s_per_vector": math.nan}, "infer_s_per_vector"),
    ({"infer_s_per_vector": -1}, "infer_s_per_vector"),
    ({"window": -3}, "window"),
    ({"window": "8"}, "window"),
    ({"max_payload": -1}, "max_payload"),
    ({"max_payload": 10**12}, "max_payload"),
    ({"boot": None}, "boot"),
    ({"package_id": ["x"]}, "package_id"),
    ({"serial": "SN\x1b[2J"}, "serial"),
    ({"board": "x" * 300}, "board"),
])
def test_a_board_breaking_the_rules_is_a_board_error_naming_the_field(
        run_cli, serve, digits_package, keypair, fields, name):
    code, out, err = verify(run_cli, digits_package, keypair[1], serve(hello_agent(**fields)))
    assert code == 3, out + err
    assert f"HELLO field {name!r}" in out and "broke the protocol" in out
    assert "\x1b" not in out + err


def test_a_huge_compute_time_cannot_hang_the_host(run_cli, serve, digits_package, keypair):
    """infer_s_per_vector = 1e6 and no answer to INFER: the deadline still holds."""
    released, asked = threading.Event(), threading.Event()

    class Slow(hello_agent(infer_s_per_vector=1e6)):
        def _infer(self, payload):
            asked.set()
            released.wait(3600)

        _handlers = {**hello_agent(infer_s_per_vector=1e6)._handlers, P.MsgType.INFER: _infer}

    t0 = time.monotonic()
    try:
        code, out, err = verify(run_cli, digits_package, keypair[1], serve(Slow),
                                "--deadline", "1.5")
        elapsed = time.monotonic() - t0
    finally:
        released.set()  # the board's thread ends with the test
    assert asked.is_set(), out + err  # the deadline ran out while the host waited for INFER
    assert code == 3 and "overall deadline reached" in out, out + err
    assert elapsed < 1.5 + 2.0


def test_the_default_deadline_follows_vectors_and_line_rate():
    from fpgaprint.harness.verify import default_deadline

    assert default_deadline(100, 64, 115200) == pytest.approx(20 + 10 * 100 * 576 * 10 / 115200
                                                              + 10)
    assert default_deadline(100, 64, 9600) > default_deadline(100, 64, 115200)


def test_the_board_refuses_a_zero_dimension_array_as_bad_payload(digits_package, keypair):
    with in_process_board(digits_package, keypair[1]) as agent:
        for dims in ((0xFFFFFFFF, 0), (1, 0), (0xFFFFFFFF,) * 7 + (0,)):
            payload = bytes((0x11, len(dims))) + b"".join(d.to_bytes(4, "little") for d in dims)
            answer = agent.handle(P.Frame(P.MsgType.INFER, 1, payload))
            code, msg = P.unpack_error(answer.payload)
            assert (answer.type, code) == (P.MsgType.ERROR, P.ErrorCode.BAD_PAYLOAD), msg
            assert "zero dimension" in msg


# ---------------------------------------------------------------- 7. verdicts never lost


def test_an_unwritable_report_never_hides_a_fail(run_cli, digits_package, keypair, tmp_path,
                                                 monkeypatch):
    """The report path passes the early check, then the disk is full when it is written (the
    write is the test double): the FAIL is printed and is the exit code."""
    import fpgaprint.core.atomic as atomic

    def full_disk(*a, **kw):
        raise OSError(28, "No space left on device")

    with ServedBoard(digits_package, "--trusted-key", keypair[1], "--flip-bits", "50",
                     "--seed", "2") as b:
        monkeypatch.setattr(atomic, "write_json", full_disk)
        code, out, err = verify(run_cli, digits_package, keypair[1], b.port,
                                "--json", tmp_path / "r.json", "--junit", tmp_path / "j.xml")
    assert code == 1 and "verdict: FAIL" in out
    assert err.strip().splitlines() == [
        f"error: --json {tmp_path / 'r.json'}: the report could not be written (No space "
        "left on device)"]  # the verdict and its reason are on stdout, once
    assert "): exact:" in out
    assert (tmp_path / "j.xml").is_file()  # the other report was written


@pytest.mark.parametrize("flag", ["--json", "--junit"])
def test_output_paths_are_checked_before_any_board_is_touched(run_cli, digits_package, keypair,
                                                              tmp_path, flag):
    (tmp_path / "file").write_text("x")
    for path, message in ((tmp_path / "file" / "r.json", "is a file, not a folder"),
                          (tmp_path, "is a folder, expected a file path")):
        code, out, err = verify(run_cli, digits_package, keypair[1], "/dev/null", flag, path)
        assert code == 2 and out == "" and f"{flag} {path}: " in err and message in err


# ---------------------------------------------------------------- 9. CLI edges


@pytest.mark.parametrize("argv, message", [
    (["--port", ""], "--port '': empty"),
    (["--port", "foo://bar"], "--port 'foo://bar': unknown URL scheme 'foo'"),
    (["--port", "socket://127.0.0.1"], "--port 'socket://127.0.0.1': expected socket://HOST:PORT"),
    (["--port", "rfc2217://h:99999"], "--port 'rfc2217://h:99999': Port out of range"),
    (["--timeout", "nan"], "--timeout: expected a number above 0 and at most 86400, got 'nan'"),
    (["--timeout", "inf"], "--timeout: expected a number above 0 and at most 86400, got 'inf'"),
    (["--timeout", "0"], "--timeout: expected a number above 0"),
    (["--timeout", "-1"], "--timeout: expected a number above 0"),
    (["--deadline", "1e9"], "--deadline: expected a number above 0 and at most 86400, got '1e9'"),
    (["--retries", "1000"], "--retries: expected an integer from 0 to 100, got '1000'"),
    (["--retries", "1.5"], "--retries: expected an integer from 0 to 100, got '1.5'"),
    (["--batch", "0"], "--batch: expected an integer from 1 to 4096, got '0'"),
    (["--baud", "0"], "--baud: expected an integer from 50 to"),
    (["--json", "{tmp}/r.json", "--junit", "{tmp}/r.json"], "--junit {tmp}/r.json: same file as"),
    (["--trusted-key", "{tmp}"], "--trusted-key"),
    (["--challenge", ""], "--challenge '': empty path"),
])
def test_verify_usage_errors_exit_2_naming_the_flag(run_cli, digits_package, keypair, tmp_path,
                                                    argv, message):
    args = {"--port": "/dev/null", "--package": str(digits_package),
            "--trusted-key": str(keypair[1])}
    extra = [a.format(tmp=tmp_path) for a in argv]
    for flag in ("--port", "--trusted-key"):
        if flag in extra:
            args.pop(flag)
    argv = [x for kv in args.items() for x in kv] + extra
    code, out, err = run_cli("verify", *argv)
    assert code == 2 and out == "", out + err
    assert message.format(tmp=tmp_path) in err and err.count("\n") == 1, err


@pytest.mark.parametrize("argv, message", [
    (["--ports", "a,,b"], "--ports 'a,,b': expected a comma-separated list"),
    (["--ports", "foo://x"], "--ports 'foo://x': unknown URL scheme"),
    (["--ports", "/dev/null", "--db", "{tmp}/garbage.db"], "not a usable database URL"),
    (["--ports", "/dev/null", "--db", "sqlite:///{tmp}/garbage.db"], "not a database"),
    (["--ports", "/dev/null", "--db", "sqlite:///{tmp}/no/such/dir/a.db"], "cannot open"),
    (["--ports", "/dev/null", "--db-wait", "nan"], "--db-wait: expected a number above 0"),
    (["--resume", "0"], "--resume: expected an integer at least 1, got '0'"),
    (["--resume", "7", "--db", "sqlite:///{tmp}/a.db"], "no run 7"),
    (["--ports", "/dev/null", "--html", "{tmp}/garbage.db/h.html"], "is a file, not a folder"),
    (["--ports", "/dev/null", "--station", ""], "--station '': expected 1 to 128 characters"),
])
def test_accept_usage_errors_exit_2_naming_the_flag(run_cli, digits_package, keypair, tmp_path,
                                                    argv, message):
    (tmp_path / "garbage.db").write_bytes(b"this is not a database file at all" * 40)
    code, out, err = run_cli("accept", "--package", digits_package, "--trusted-key", keypair[1],
                             *(a.format(tmp=tmp_path) for a in argv))
    assert code == 2, out + err
    assert message.format(tmp=tmp_path) in err and err.count("\n") == 1, err


# ---------------------------------------------------------------- 7. the acceptance database


def test_a_locked_database_loses_no_result_and_resume_finishes_the_run(
        digits_package, keypair, tmp_path):
    """The database is locked by another writer after the run started: both results (the FAIL
    included) and the run's end go to the journal, the verdict is the exit code, and the next
    start commits them. The boards' 38400-baud lines give the test two seconds to lock the
    database between the run's start and its first result."""
    import sqlite3
    import subprocess
    import sys

    db = tmp_path / "acc.db"
    common = ["--package", digits_package, "--trusted-key", keypair[1], "--db",
              f"sqlite:///{db}", "--baud", "38400"]
    with served_boards((digits_package, "--trusted-key", keypair[1], "--baud", "38400",
                        "--serial", "OK-1"),
                       (digits_package, "--trusted-key", keypair[1], "--baud", "38400",
                        "--serial", "BAD-2", "--flip-bits", "50", "--seed", "2")
                       ) as (good, bad):
        proc = subprocess.Popen(
            [sys.executable, "-m", "fpgaprint", "accept", "--ports", f"{good.port},{bad.port}",
             "--db-wait", "0.3", *map(str, common)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                con = sqlite3.connect(db, timeout=0.1, isolation_level=None)
                if con.execute("select count(*) from accept_runs").fetchone()[0]:
                    break
                con.close()
            except sqlite3.OperationalError:
                pass
            time.sleep(0.02)
        con.execute("begin immediate")  # another writer holds the database
        try:
            out, err = proc.communicate(timeout=120)
        finally:
            con.execute("rollback")
            con.close()
    assert proc.returncode == 1, out + err
    assert "verdict: FAIL" not in out and "FAIL" in out  # the table shows the FAIL board
    errors = [line for line in err.splitlines() if line.startswith("error: --db")]
    assert len(errors) == 1 and "database is locked" in errors[0]
    assert "spooled to" in errors[0] and "--resume 1" in errors[0]
    journal = Path(f"{db}.pending.jsonl")
    assert [json.loads(x)["kind"] for x in journal.read_text().splitlines()] == \
        ["result", "result", "finish"]
    con = sqlite3.connect(db)
    assert con.execute("select status from accept_runs").fetchall() == [("RUNNING",)]
    assert con.execute("select count(*) from accept_results").fetchone() == (0,)
    con.close()

    r = run_fpgaprint("accept", "--resume", "1", *common, timeout=180)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "committed 3 spooled result(s)" in r.stdout and "is finished: FAIL" in r.stdout
    assert not journal.exists()
    con = sqlite3.connect(db)
    assert con.execute("select status, finished_at is not null from accept_runs").fetchall() \
        == [("FAIL", 1)]
    assert sorted(con.execute("select serial, status, n_answered from accept_results")) == [
        ("BAD-2", "FAIL", SELFTEST_COUNT), ("OK-1", "PASS", SELFTEST_COUNT)]


def test_resume_finishes_a_run_left_running(digits_package, keypair, tmp_path):
    """A run killed before any board finished is finished by --resume, on the run's ports or
    on new ones."""
    from fpgaprint.harness.db import ResultStore

    db = f"sqlite:///{tmp_path}/acc.db"
    pid = verify_package(digits_package, trusted_key=keypair[1]).package_id
    with served_boards((digits_package, "--trusted-key", keypair[1], "--serial", "R1"),
                       (digits_package, "--trusted-key", keypair[1], "--serial", "R2")
                       ) as (b1, b2):
        with ResultStore(db) as store:
            first = store.start_run("line", pid, "digits-mlp", [b1.port, "/dev/gone"])
            other = store.start_run("line", "0" * 64, "x", [b1.port])
        common = ["--package", digits_package, "--trusted-key", keypair[1], "--db", db]
        wrong = run_fpgaprint("accept", "--resume", other, *common, timeout=180)
        r = run_fpgaprint("accept", "--resume", first, "--ports", f"{b1.port},{b2.port}",
                          *common, timeout=180)
    assert wrong.returncode == 2 and f"run {other} verified package 0000" in wrong.stderr
    assert r.returncode == 0, r.stdout + r.stderr
    with ResultStore(db) as store:
        run = store.run(first)
    assert run["status"] == "PASS" and sorted(x["serial"] for x in run["results"]) == ["R1", "R2"]
    again = run_fpgaprint("accept", "--resume", first, *common, timeout=180)
    assert again.returncode == 0 and f"run {first} in" in again.stdout


# ---------------------------------------------------------------- 10. boards told apart; board text


def test_accept_prints_and_reports_board_text_as_it_is(run_cli, digits_package, keypair,
                                                       tmp_path, monkeypatch):
    """A serial `[/]` made rich raise where the table is printed: exit 2 ("bad input"), no
    verdict table, no run line. A serial `$...$` made matplotlib raise: no HTML for any board.
    Any other failure of the HTML report is one line naming it; the verdict stays the exit
    code."""
    import fpgaprint.harness.reports as reports

    key = keypair[1]
    odd = "$\\undefined$ :cd:"
    with served_boards((digits_package, "--trusted-key", key, "--serial", "[/]",
                        "--flip-bits", "50", "--seed", "2"),
                       (digits_package, "--trusted-key", key, "--serial", odd)) as (bad, ok):
        common = ["--ports", f"{bad.port},{ok.port}", "--package", digits_package,
                  "--trusted-key", key, "--db", f"sqlite:///{tmp_path}/acc.db"]
        code, out, err = run_cli("accept", *common, "--html", tmp_path / "a.html",
                                 "--junit", tmp_path / "a.xml")

        def broken(*a, **kw):
            raise ValueError("a plotting error\n    ^\nover three lines")

        monkeypatch.setattr(reports, "accept_plots", broken)
        code2, out2, err2 = run_cli("accept", *common, "--html", tmp_path / "b.html")
    assert code == 1, out + err
    assert "error:" not in err, err
    assert re.search(rf"│ {re.escape(bad.port)} +│ \[/\] +│ FAIL +│ exact:", out), out
    assert re.search(rf"│ {re.escape(ok.port)} +│ {re.escape(odd)} +│ PASS ", out), out
    assert "💿" not in out and re.search(r"^run 1 in .*: FAIL$", out, re.M), out
    page = (tmp_path / "a.html").read_text()
    assert page.count("data:image/png;base64,") == 3
    assert f"<b>[/]</b> on {bad.port}: FAIL" in page and f"<b>{odd}</b> on {ok.port}" in page
    assert code2 == 1 and re.search(r"^run 2 in .*: FAIL$", out2, re.M), out2 + err2
    assert [line for line in err2.splitlines() if "error" in line or "three" in line] == [
        f"error: --html {tmp_path / 'b.html'}: the report could not be written (ValueError: "
        "a plotting error ^ over three lines)"], err2
    assert not (tmp_path / "b.html").exists()


def test_accept_refuses_two_ports_that_name_one_device(run_cli, digits_package, keypair,
                                                       tmp_path):
    """A board reached through a symlink and its target was accepted as two boards."""
    from fpgaprint.core.errors import InputError
    from fpgaprint.harness.accept import parse_ports

    alias = tmp_path / "ttyAlias"
    alias.symlink_to("/dev/null")
    db = tmp_path / "acc.db"
    code, out, err = run_cli("accept", "--ports", f"/dev/null,{alias}", "--package",
                             digits_package, "--trusted-key", keypair[1], "--db",
                             f"sqlite:///{db}")
    assert code == 2 and out == "", out + err
    assert err == (f"error: --ports: /dev/null and {alias} are the same device (/dev/null): "
                   "give each board once\n")
    assert not db.exists()  # refused before the database or any board
    with pytest.raises(InputError, match="/dev/null and /dev//null are the same device"):
        parse_ports("/dev/null,/dev//null")
    with pytest.raises(InputError, match="port /dev/null given more than once"):
        parse_ports("/dev/null,/dev/null")
    # URLs are compared as given: another name of a host may be another server
    assert parse_ports("socket://localhost:5000,socket://127.0.0.1:5000") == [
        "socket://localhost:5000", "socket://127.0.0.1:5000"]


def test_two_boards_reporting_one_serial_never_pass_on_that_run(run_cli, digits_package,
                                                                 keypair, tmp_path):
    """A faulty board reporting a good board's serial (or two boards with one default serial):
    both results are kept, none of them passes on that run, and the factory report lists
    both. It used to merge them: the FAIL vanished from the report's boards that had not
    passed, and the serial counted as a reworked board that passed."""
    import sqlite3

    from junitparser import JUnitXml

    key = keypair[1]
    db = tmp_path / "acc.db"
    serve = (digits_package, "--trusted-key", key, "--serial")
    with served_boards((*serve, "TWIN", "--flip-bits", "50", "--seed", "2"), (*serve, "TWIN"),
                       (*serve, "TWIN"), (*serve, "SOLO")) as (bad, good, good2, solo):
        common = ["--package", digits_package, "--trusted-key", key, "--db", f"sqlite:///{db}",
                  "--station", "line-1"]
        code, out, err = run_cli("accept", "--ports", f"{bad.port},{good.port},{solo.port}",
                                 *common, "--junit", tmp_path / "a.xml",
                                 "--html", tmp_path / "a.html")
        code2, out2, err2 = run_cli("accept", "--ports", f"{good.port},{good2.port}", *common)
    assert code == 1, out + err
    why = "serial TWIN reported by 2 boards in run 1 ({}, {})".format(
        *sorted((bad.port, good.port)))
    why2 = "serial TWIN reported by 2 boards in run 2 ({}, {})".format(
        *sorted((good.port, good2.port)))
    assert (f"{why}: none of these boards passes on this run; give each board its own "
            "serial") in out.splitlines(), out
    assert re.search(rf"│ {re.escape(good.port)} +│ TWIN +│ NO_VERDICT +│ {re.escape(why)}",
                     out), out
    assert re.search(rf"│ {re.escape(solo.port)} +│ SOLO +│ PASS ", out), out
    assert code2 == 3, out2 + err2  # two good boards of one serial: no verdict for it
    assert re.search(r"^run 2 in .*: NO_VERDICT$", out2, re.M), out2
    con = sqlite3.connect(db)
    assert sorted(con.execute("select run_id, port, serial, status from accept_results")) == \
        sorted([(1, bad.port, "TWIN", "FAIL"), (1, good.port, "TWIN", "PASS"),
                (1, solo.port, "SOLO", "PASS"), (2, good.port, "TWIN", "PASS"),
                (2, good2.port, "TWIN", "PASS")])
    assert con.execute("select id, status from accept_runs order by id").fetchall() == [
        (1, "FAIL"), (2, "NO_VERDICT")]
    con.close()
    xml = JUnitXml.fromfile(str(tmp_path / "a.xml"))
    assert [s.name for s in xml] == ["accept TWIN_board-1", "accept TWIN_board-2",
                                     "accept SOLO"]
    assert [c.result[0].message for s in xml for c in s if c.name == "serial"] == [why, why]
    assert why in (tmp_path / "a.html").read_text()

    code, out, err = run_cli("report", "--db", f"sqlite:///{db}", "--out", tmp_path / "r")
    assert code == 0, out + err
    doc = json.loads((tmp_path / "r" / "factory.json").read_text())
    named = {b["board"]: (b["status"], b["cause"].split("; ")[0]) for b in doc["not_passed"]}
    assert named == {f"TWIN ({bad.port}@line-1, run 1)": ("FAIL", why),
                     f"TWIN ({good.port}@line-1, run 1)": ("NO_VERDICT", why),
                     f"TWIN ({good.port}@line-1, run 2)": ("NO_VERDICT", why2),
                     f"TWIN ({good2.port}@line-1, run 2)": ("NO_VERDICT", why2)}
    assert doc["total"]["boards"] == 5 and doc["total"]["final_yield"] == 0.2  # SOLO only
