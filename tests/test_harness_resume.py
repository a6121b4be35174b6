"""`accept --resume`: a resumed run's verdict covers the results committed before it (even if the
database cannot be read again), the ports given again must be boards still to verify, a run
is resumed in the mode it was started in, two resumes of one run are serialized, and a spooled
result is committed or kept, never dropped."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import in_process_board
from sqlalchemy.orm import Session

from fpgaprint.harness.accept import accept
from fpgaprint.harness.db import DatabaseUnavailable, Journal, ResultStore, Run
from fpgaprint.harness.verdict import FAIL, PASS, BoardOutcome
from fpgaprint.harness.verify import load_package, selftest_plan
from fpgaprint.hw_targets import protocol as P
from fpgaprint.hw_targets.agent import BoardAgent
from fpgaprint.hw_targets.served import ServedBoard

A, B = "socket://127.0.0.1:9", "socket://127.0.0.1:10"


def _run_with(store: ResultStore, pkg, status: str, mode: str = "selftest") -> int:
    """A run on ports A and B where only A has a result (`status`), as a killed run leaves it."""
    run = store.start_run("station", pkg.package_id, "digits-mlp", [A, B])
    store.record(run, BoardOutcome(port=A, status=status, reason="earlier", mode=mode,
                                   package_id=pkg.package_id, package_name="digits-mlp"))
    return run


class _Unreadable(ResultStore):
    """A database that takes writes but can no longer be read (a lock, a restart)."""

    def run(self, run_id):
        raise DatabaseUnavailable(f"database {self.url}: read run {run_id}: locked")


def test_a_resumed_run_keeps_an_earlier_fail_when_the_database_cannot_be_read(
        digits_package, keypair, tmp_path):
    pkg = load_package(digits_package, keypair[1])
    url = f"sqlite:///{tmp_path}/r.db"
    with ResultStore(url) as store:
        run = _run_with(store, pkg, FAIL)
    with _Unreadable(url) as store, ServedBoard(digits_package, "--trusted-key",
                                                keypair[1]) as board:
        res = accept([board.port], pkg, lambda _: selftest_plan(pkg), store, "station",
                     run_id=run, earlier=[FAIL])
    assert [o.status for o in res.outcomes] == [PASS]
    assert res.status == FAIL  # the new board passed; the run did not


def test_resume_refuses_ports_that_already_have_a_result(digits_package, keypair, tmp_path,
                                                        run_cli):
    pkg = load_package(digits_package, keypair[1])
    url = f"sqlite:///{tmp_path}/r.db"
    with ResultStore(url) as store:
        run = _run_with(store, pkg, PASS)
    code, out, err = run_cli("accept", "--resume", run, "--ports", A, "--package",
                             digits_package, "--trusted-key", keypair[1], "--db", url)
    assert code == 2, out + err
    assert f"--ports: {A} already has a result in run {run}" in err
    assert err.count("error:") == 1
    with ResultStore(url) as store:  # B is still to verify: the run is unchanged
        left = store.run(run)
    assert left["ports"] == [A, B] and left["status"] == "RUNNING"


def test_resume_keeps_the_mode_of_the_run(digits_package, keypair, tmp_path, run_cli):
    pkg = load_package(digits_package, keypair[1])
    url = f"sqlite:///{tmp_path}/r.db"
    with ResultStore(url) as store:
        run = _run_with(store, pkg, PASS, mode="challenge")
    code, out, err = run_cli("accept", "--resume", run, "--package", digits_package,
                             "--trusted-key", keypair[1], "--db", url)
    assert code == 2, out + err
    assert f"run {run} verified boards in challenge mode, not selftest" in err


FPGAPRINT = str(Path(sys.executable).parent / "fpgaprint")


def _claim(url: str, run: int) -> str | None:
    with ResultStore(url) as store, Session(store.engine) as s:
        return s.get(Run, run).claim


def test_two_resumes_of_one_run_at_once_keep_the_pass(digits_package, keypair, tmp_path):
    """The second resume starts while the first verifies the board (the board answers no INFER
    until the second has ended): it exits 2 without touching the board, and the PASS is
    committed."""
    pkg = load_package(digits_package, keypair[1])
    url = f"sqlite:///{tmp_path}/r.db"
    pin = ("--package", str(digits_package), "--trusted-key", str(keypair[1]), "--db", url)
    released = threading.Event()

    class Held(BoardAgent):
        def _infer(self, payload):
            released.wait(300)
            return BoardAgent._infer(self, payload)

        _handlers = {**BoardAgent._handlers, P.MsgType.INFER: _infer}

    with in_process_board(digits_package, keypair[1], Held, pty=True) as board:
        try:
            with ResultStore(url) as store:  # a killed run: A committed, the board still to do
                run = store.start_run("station", pkg.package_id, "digits-mlp", [A, board.url])
                store.record(run, BoardOutcome(port=A, status=PASS, reason="earlier",
                                               package_id=pkg.package_id))
            assert _claim(url, run) is None  # the killed process holds it no more
            # a minute of silence allowed: the held INFER is answered when the second has ended
            first = subprocess.Popen([FPGAPRINT, "accept", "--resume", str(run), *pin,
                                      "--timeout", "60"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            end = time.monotonic() + 120
            while _claim(url, run) is None and first.poll() is None and time.monotonic() < end:
                time.sleep(0.05)
            second = subprocess.run([FPGAPRINT, "accept", "--resume", str(run), *pin],
                                    capture_output=True, text=True, timeout=300)
        finally:
            released.set()
        out = first.communicate(timeout=300)[0]
    assert first.returncode == 0, out
    assert second.returncode == 2, second.stdout + second.stderr
    errors = [ln for ln in second.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and f"run {run} is being resumed by" in errors[0], second.stderr
    with ResultStore(url) as store:
        got = store.run(run)
    assert {r["port"]: r["status"] for r in got["results"]} == {A: PASS, board.url: PASS}
    assert got["status"] == PASS
    assert not Path(f"{tmp_path}/r.db.pending.jsonl").exists()


def test_a_spooled_pass_the_run_holds_another_result_of_is_kept(digits_package, keypair,
                                                                 tmp_path, run_cli):
    """What an unserialized second resume left: NO_VERDICT committed for B, the PASS of B in
    the journal. The PASS is never dropped: kept with why, and the command exits 2 once."""
    pkg = load_package(digits_package, keypair[1])
    url = f"sqlite:///{tmp_path}/r.db"
    with ResultStore(url) as store:
        run = _run_with(store, pkg, PASS)
        store.record(run, BoardOutcome(port=B, status="NO_VERDICT", reason="link error",
                                       package_id=pkg.package_id))
    journal = Journal(f"{tmp_path}/r.db.pending.jsonl")
    won = BoardOutcome(port=B, status=PASS, reason="every check passed",
                       package_id=pkg.package_id, started=time.time())
    journal.append({"kind": "result", "outcome": won.to_dict(), "db": url, "run_id": run})
    args = ("accept", "--resume", run, "--package", digits_package, "--trusted-key", keypair[1],
            "--db", url)
    code, out, err = run_cli(*args)
    assert code == 2, out + err
    assert "committed 1 spooled" not in out
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert (f"the PASS result of {B} in run {run}: run {run} already has another result for "
            f"{B} (NO_VERDICT") in line and "kept in the journal" in line
    (kept,) = journal.entries()
    assert kept["outcome"]["status"] == PASS and "already has another result" in kept["rejected"]
    code, out, err = run_cli(*args)  # kept, said, and the station goes on
    assert "keeps 1 result(s) the database refused" in err
    assert code == 3, out + err  # the run's NO_VERDICT, closed
    assert len(journal.entries()) == 1


def test_a_renamed_column_exits_2_before_any_board(digits_package, keypair, tmp_path, run_cli):
    import sqlite3

    url = f"sqlite:///{tmp_path}/r.db"
    ResultStore(url).close()
    con = sqlite3.connect(tmp_path / "r.db")
    con.execute("ALTER TABLE accept_results RENAME COLUMN status TO verdict")
    con.commit()
    con.close()
    code, out, err = run_cli("accept", "--ports", A, "--package", digits_package,
                             "--trusted-key", keypair[1], "--db", url)
    assert code == 2, out + err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert "table accept_results has no column status" in line
    assert not (tmp_path / "r.db.pending.jsonl").exists()


def _accept_into_a_run_holding_the_result(digits_package, keypair, tmp_path, journal):
    """accept of a healthy board into a run that already holds a (NO_VERDICT) result of its
    port, so the database refuses the new one: (the accept result, the port)."""
    pkg = load_package(digits_package, keypair[1])
    with ResultStore(f"sqlite:///{tmp_path}/r.db", wait=600) as store, \
            ServedBoard(digits_package, "--trusted-key", keypair[1]) as board:
        run = store.start_run("station", pkg.package_id, "digits-mlp", [board.port])
        store.record(run, BoardOutcome(port=board.port, status="NO_VERDICT", reason="lost",
                                       package_id=pkg.package_id))
        return accept([board.port], pkg, lambda _: selftest_plan(pkg), store, "station",
                      journal=journal, run_id=run), board.port


def test_a_result_the_run_already_holds_another_of_is_kept_marked(digits_package, keypair,
                                                                   tmp_path, caplog):
    """A board verified into a run that already has its result (what an unserialized second
    process would do): the PASS is not retried, not dropped, kept in the journal with why."""
    import logging

    caplog.set_level(logging.INFO, logger="fpgaprint.accept")
    journal = Journal(tmp_path / "j.jsonl")
    res, port = _accept_into_a_run_holding_the_result(digits_package, keypair, tmp_path, journal)
    assert [o.status for o in res.outcomes] == [PASS]
    assert list(res.rejected) == [port] and res.spooled == []
    assert "UNIQUE" in res.rejected[port]
    (kept,) = journal.entries()
    assert kept["outcome"]["status"] == PASS and "UNIQUE" in kept["rejected"]
    assert "retrying" not in caplog.text


def test_a_result_the_journal_cannot_take_is_reported_unsaved_not_raised(
        digits_package, keypair, tmp_path, monkeypatch):
    """The journal refuses what strict JSON cannot hold (a NaN figure): the board's verdict
    is still the run's and is reported unsaved, the run is not ended by the error."""
    def refuse(self, entry):
        raise ValueError("Out of range float values are not JSON compliant")

    monkeypatch.setattr(Journal, "append", refuse)
    res, port = _accept_into_a_run_holding_the_result(digits_package, keypair, tmp_path,
                                                      Journal(tmp_path / "j.jsonl"))
    assert [o.status for o in res.outcomes] == [PASS] and res.unsaved == [port]
    assert "not JSON compliant" in res.db_error


def test_resume_refuses_another_name_of_a_port_with_a_result(digits_package, keypair,
                                                             tmp_path, run_cli):
    """Ports were compared as strings: a symlink to a board that has its result was taken for
    a board still to verify."""
    pkg = load_package(digits_package, keypair[1])
    url = f"sqlite:///{tmp_path}/r.db"
    real, alias = tmp_path / "ttyS7", tmp_path / "board-7"
    real.write_text("")
    alias.symlink_to(real)
    with ResultStore(url) as store:
        run = store.start_run("station", pkg.package_id, "digits-mlp", [str(real), B])
        store.record(run, BoardOutcome(port=str(real), status=FAIL, reason="earlier",
                                       package_id=pkg.package_id, package_name="digits-mlp"))
    code, out, err = run_cli("accept", "--resume", run, "--ports", alias, "--package",
                             digits_package, "--trusted-key", keypair[1], "--db", url)
    assert code == 2, out + err
    assert err == (f"error: --ports: {alias} already has a result in run {run} (as {real}: "
                   "the same device); give the ports of the boards still to verify\n")


def test_a_serial_of_an_earlier_board_of_the_run_is_a_conflict(digits_package, keypair,
                                                                tmp_path, run_cli):
    """The board verified by the resumed run reports the serial of a board the run verified
    before: neither passes on this run."""
    pkg = load_package(digits_package, keypair[1])
    url = f"sqlite:///{tmp_path}/r.db"
    with ResultStore(url) as store:
        run = store.start_run("station", pkg.package_id, "digits-mlp", [A, B])
        store.record(run, BoardOutcome(port=A, status=PASS, reason="earlier", mode="selftest",
                                       package_id=pkg.package_id, package_name="digits-mlp",
                                       identity={"serial": "TWIN"}))
    with ServedBoard(digits_package, "--trusted-key", keypair[1], "--serial", "TWIN") as board:
        code, out, err = run_cli("accept", "--resume", run, "--ports", board.port, "--package",
                                 digits_package, "--trusted-key", keypair[1], "--db", url)
    assert code == 3, out + err
    ports = ", ".join(sorted((A, board.port)))
    assert (f"serial TWIN reported by 2 boards in run {run} ({ports}): none of these boards "
            "passes on this run; give each board its own serial") in out.splitlines(), out
    with ResultStore(url) as store:
        assert store.run(run)["status"] == "NO_VERDICT"
