"""`accept --resume`: a resumed run's verdict covers the results committed before it (even if the
database cannot be read again), the ports given again must be boards still to verify, and a run
is resumed in the mode it was started in."""

from __future__ import annotations

from fpgaprint.harness.accept import accept
from fpgaprint.harness.db import DatabaseUnavailable, ResultStore
from fpgaprint.harness.verdict import FAIL, PASS, BoardOutcome
from fpgaprint.harness.verify import load_package, selftest_plan
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
