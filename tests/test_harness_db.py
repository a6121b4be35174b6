"""Results database on SQLite and PostgreSQL: atomic board results, run bookkeeping, bad URLs."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from test_harness_reports import outcome

from fpgaprint.core.errors import InputError
from fpgaprint.harness.db import BoardResult, ResultStore, VectorRow
from fpgaprint.harness.verdict import FAIL, PASS

ROOT = Path(__file__).resolve().parents[1]


def pg_url() -> str | None:
    """FPGAPRINT_TEST_PG_URL, else the URL .ci/postgres.sh wrote to build/pg_url."""
    url = os.environ.get("FPGAPRINT_TEST_PG_URL")
    f = ROOT / "build" / "pg_url"
    if not url and f.is_file():
        url = f.read_text().strip()
    return url or None


def _pg_reachable(url: str) -> str | None:
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    try:
        psycopg.connect(
            host=u.host, port=u.port or 5432, user=u.username, password=u.password,
            dbname=u.database, connect_timeout=2,
        ).close()
    except psycopg.Error as e:
        return f"PostgreSQL at {u.host}:{u.port} not reachable ({e.__class__.__name__})"
    return None


def require_pg() -> str:
    """The test server's URL; skips without one, except in CI (CI=true), where it fails."""
    url = pg_url()
    why = ("no PostgreSQL URL: run .ci/postgres.sh or set FPGAPRINT_TEST_PG_URL"
           if url is None else _pg_reachable(url))
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test PostgreSQL: {why}")
        pytest.skip(why)
    return url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/acc.db"
    return require_pg()


def _count(store: ResultStore, run: int, model) -> int:
    with Session(store.engine) as s:
        q = select(func.count()).select_from(BoardResult).where(BoardResult.run_id == run)
        if model is VectorRow:
            q = select(func.count()).select_from(VectorRow).join(BoardResult).where(
                BoardResult.run_id == run
            )
        return s.scalar(q)


def test_commits_results_with_vectors(db_url):
    with ResultStore(db_url) as store:
        run = store.start_run("line-1", "ab" * 32, "digits-mlp", ["a", "b"])
        store.record(run, outcome("a", "SN-A"))
        store.record(run, outcome("b", "SN-B", flip=5))
        store.finish_run(run, FAIL)
        got = store.run(run)
        with Session(store.engine) as s:
            bad = s.scalar(
                select(func.count()).select_from(VectorRow).join(BoardResult)
                .where(BoardResult.run_id == run, VectorRow.exact.is_(False))
            )
    assert got["status"] == FAIL
    assert [(r["serial"], r["status"], r["vector_rows"]) for r in got["results"]] == [
        ("SN-A", PASS, 12), ("SN-B", FAIL, 12)
    ]
    assert got["results"][1]["exact_failed"] == 5
    assert bad == 5


def test_duplicate_port_rolls_back_whole_result(db_url):
    with ResultStore(db_url) as store:
        run = store.start_run("s", "ab" * 32, "x", ["a"])
        store.record(run, outcome("a", "SN-A"))
        with pytest.raises(InputError, match="cannot commit the result of a"):
            store.record(run, outcome("a", "SN-A2"))
        assert _count(store, run, BoardResult) == 1
        assert _count(store, run, VectorRow) == 12


def test_run_ids_increase_and_last_run(db_url):
    with ResultStore(db_url) as store:
        a = store.start_run("s", "ab" * 32, "x", [])
        b = store.start_run("s", "ab" * 32, "x", [])
        assert b > a and store.last_run_id() >= b
        assert store.run(b)["status"] == "RUNNING"


@pytest.mark.parametrize(
    "url, msg",
    [("nodb://x", "not a usable database URL"), ("sqlite:////nonexistent/dir/a.db", "cannot open")],
)
def test_bad_url(url, msg):
    with pytest.raises(InputError, match=msg):
        ResultStore(url)


def test_unreachable_postgres_hides_password():
    with pytest.raises(InputError, match="cannot open") as e:
        ResultStore("postgresql+psycopg://u:secret@127.0.0.1:1/db?connect_timeout=2")
    assert "secret" not in str(e.value)


def test_one_process_claims_a_run_at_a_time(db_url):
    from fpgaprint.harness.db import RunBusy

    with ResultStore(db_url) as a, ResultStore(db_url) as b:
        run = a.start_run("s", "ab" * 32, "x", ["p"])  # the starting process holds it
        with pytest.raises(RunBusy, match=rf"run {run} is being resumed by .* pid {os.getpid()}"):
            b.claim(run)
        a.finish_run(run, PASS)  # a finished run is nobody's
        b.claim(run)
        with pytest.raises(RunBusy):
            a.claim(run)
    with ResultStore(db_url) as c:  # closing b released its claim
        c.claim(run)


def test_a_claim_of_an_ended_process_on_this_host_is_taken_over(tmp_path):
    import socket
    import subprocess

    from fpgaprint.harness.db import Run

    url = f"sqlite:///{tmp_path}/acc.db"
    ended = subprocess.Popen(["true"])
    ended.wait()
    with ResultStore(url) as store:
        run = store.start_run("s", "ab" * 32, "x", ["p"])
        with Session(store.engine) as s, s.begin():
            s.get(Run, run).claim = f"{socket.gethostname()}:{ended.pid}:0"
        store.claim(run)  # its heartbeat is fresh, but its process has ended
        with Session(store.engine) as s:
            assert s.get(Run, run).claim == store.token


def _spool_pass_over_no_verdict(url: str, tmp_path: Path):
    """The losing resume committed NO_VERDICT for port a; the winner's PASS was spooled."""
    from fpgaprint.harness.db import Journal

    with ResultStore(url) as store:
        run = store.start_run("s", "ab" * 32, "x", ["a"])
        lost = outcome("a", "SN-A", missing=6)
        store.record(run, lost)
    journal = Journal(tmp_path / "j.jsonl")
    journal.append({"kind": "result", "outcome": outcome("a", "SN-A").to_dict(), "db": url,
                    "run_id": run})
    return run, journal


def test_replay_keeps_a_result_the_database_holds_another_of(tmp_path):
    url = f"sqlite:///{tmp_path}/acc.db"
    run, journal = _spool_pass_over_no_verdict(url, tmp_path)
    with ResultStore(url) as store:
        got = store.replay(journal)
        assert got.committed == 0 and got.held == 0
        (why,) = got.rejected
        assert why.startswith(f"the PASS result of a in run {run}: run {run} already has "
                              "another result for a (NO_VERDICT")
        (kept,) = journal.entries()
        assert kept["outcome"]["status"] == PASS and kept["rejected"] in why
        again = store.replay(journal)  # reported once, kept for good
        assert (again.committed, again.rejected, again.held) == (0, [], 1)
        assert len(journal.entries()) == 1
        assert store.run(run)["results"][0]["status"] == "NO_VERDICT"


def test_replay_of_a_result_committed_before_the_journal_was_rewritten(tmp_path):
    from fpgaprint.harness.db import Journal

    url = f"sqlite:///{tmp_path}/acc.db"
    with ResultStore(url) as store:
        run = store.start_run("s", "ab" * 32, "x", ["a"])
        o = outcome("a", "SN-A")
        store.record(run, o)
        journal = Journal(tmp_path / "j.jsonl")
        journal.append({"kind": "result", "outcome": o.to_dict(), "db": url, "run_id": run})
        got = store.replay(journal)
    assert (got.committed, got.rejected) == (1, []) and journal.entries() == []


def test_a_renamed_column_is_refused_when_the_database_is_opened(tmp_path):
    import sqlite3

    url = f"sqlite:///{tmp_path}/acc.db"
    ResultStore(url).close()
    con = sqlite3.connect(tmp_path / "acc.db")
    con.execute("ALTER TABLE accept_results RENAME COLUMN reason TO why")
    con.commit()
    con.close()
    with pytest.raises(InputError, match="table accept_results has no column reason: not the "
                                         "schema of fpgaprint's results"):
        ResultStore(url, wait=30)


def test_trust_is_recorded_and_an_older_database_gains_the_column(tmp_path):
    import sqlite3

    url = f"sqlite:///{tmp_path}/acc.db"
    with ResultStore(url) as store:
        run = store.start_run("s", "ab" * 32, "x", ["a", "b"])
        store.record(run, outcome("a", "SN-A"))
    con = sqlite3.connect(tmp_path / "acc.db")  # as the previous version wrote it
    for table, col in (("accept_results", "trust"), ("accept_runs", "claim"),
                       ("accept_runs", "claim_seen")):
        con.execute(f"ALTER TABLE {table} DROP COLUMN {col}")
    con.commit()
    con.close()
    with ResultStore(url) as store:
        unpinned = outcome("b", "SN-B")
        unpinned.trust = {"trust": "unpinned", "warning": "signer not pinned"}
        store.record(run, unpinned)
        got = {r["port"]: r["trust"] for r in store.run(run)["results"]}
    assert got == {"a": None, "b": "unpinned"}


def test_a_column_renamed_under_an_open_store_is_refused_without_retries(tmp_path, caplog):
    import logging
    import sqlite3

    from fpgaprint.harness.db import ResultRejected

    url = f"sqlite:///{tmp_path}/acc.db"
    caplog.set_level(logging.INFO, logger="fpgaprint.accept")
    with ResultStore(url, wait=600) as store:
        run = store.start_run("s", "ab" * 32, "x", ["a"])
        con = sqlite3.connect(tmp_path / "acc.db")
        con.execute("ALTER TABLE accept_results RENAME COLUMN reason TO why")
        con.commit()
        con.close()
        with pytest.raises(ResultRejected, match="cannot commit the result of a .*reason"):
            store.record(run, outcome("a", "SN-A"))
    assert "retrying" not in caplog.text


# ------------------------------------------------- what the host accepts of a board is stored


@contextlib.contextmanager
def pg_schema_url(prefix: str):
    """A PostgreSQL URL (`require_pg`) whose tables live in a new schema of their own, dropped
    afterwards: a database one test alone creates, changes and reads."""
    import uuid

    import psycopg
    from sqlalchemy.engine import make_url

    url = require_pg()
    u = make_url(url)
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    args = dict(host=u.host, port=u.port or 5432, user=u.username, password=u.password,
                dbname=u.database, autocommit=True)
    with psycopg.connect(**args) as con:
        con.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in url else "?"
    try:
        yield f"{url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(**args) as con:
            con.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def pg_fresh():
    """A PostgreSQL database this test alone creates, shrinks or widens."""
    with pg_schema_url("dbtest") as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fresh_url(request, tmp_path) -> str:
    """A new, empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/acc.db"
    return request.getfixturevalue("pg_fresh")


def _longest_identity() -> dict:
    """The longest identity the host's check lets through (checked by the check itself)."""
    from types import SimpleNamespace

    from fpgaprint.harness.commands import HASH_HEX, MAX_TEXT, BoardClient

    ident = {"package_id": "a" * HASH_HEX, "bitstream_sha256": "b" * HASH_HEX,
             "serial": "S" * MAX_TEXT, "board": "B" * MAX_TEXT, "backend": "K" * MAX_TEXT,
             "name": "N" * MAX_TEXT}
    assert BoardClient._check_identity(SimpleNamespace(url="x"), ident, "HELLO") == ident
    return {**ident, "protocol": 1}


def _shrink(url: str, cols=(("serial", 128), ("board", 128), ("backend", 64))) -> None:
    """Make the results table's text columns as short as the earlier version created them."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        for col, n in cols:
            conn.execute(text(f"ALTER TABLE accept_results ALTER COLUMN {col} "
                              f"TYPE VARCHAR({n})"))
    engine.dispose()


def _varchar(url: str, col: str) -> int:
    from sqlalchemy import create_engine, inspect

    engine = create_engine(url)
    try:
        return {c["name"]: c["type"] for c in
                inspect(engine).get_columns("accept_results")}[col].length
    finally:
        engine.dispose()


def test_each_identity_field_the_host_accepts_has_a_column_as_long():
    """One rule: the columns take their lengths from the identity check's limits."""
    from fpgaprint.harness.commands import HASH_HEX, IDENTITY_TEXT, MAX_TEXT

    cols = BoardResult.__table__.c
    for key in IDENTITY_TEXT:
        if key in cols:
            assert cols[key].type.length == MAX_TEXT, key
    assert {k for k in IDENTITY_TEXT if k in cols} == {"serial", "board", "backend"}
    assert cols["reported_package_id"].type.length == HASH_HEX
    assert cols["bitstream_sha256"].type.length == HASH_HEX


def test_the_longest_identity_the_host_accepts_is_committed(fresh_url):
    """A FAIL board whose self-reported serial, board and backend have the most characters
    the host accepts is committed, on PostgreSQL too (which refuses a longer value for good)."""
    ident = _longest_identity()
    o = outcome("p", None, flip=3)
    o.identity = ident
    with ResultStore(fresh_url) as store:
        run = store.start_run("s", "ab" * 32, "x", ["p"])
        store.record(run, o)
        store.finish_run(run, FAIL)
        with Session(store.engine) as s:
            row = s.scalar(select(BoardResult).where(BoardResult.run_id == run))
            got = (row.serial, row.board, row.backend, row.reported_package_id,
                   row.bitstream_sha256, row.status)
    assert got == (ident["serial"], ident["board"], ident["backend"], ident["package_id"],
                   ident["bitstream_sha256"], FAIL)


@pytest.mark.postgres
def test_an_earlier_versions_short_columns_are_widened_when_opened(pg_fresh):
    ResultStore(pg_fresh).close()
    _shrink(pg_fresh)  # the database as the earlier version created it
    with ResultStore(pg_fresh) as store:  # this version opens it
        run = store.start_run("s", "ab" * 32, "x", ["old", "new"])
        store.record(run, outcome("old", "SN-1"))
        o = outcome("new", None, flip=2)
        o.identity = _longest_identity()
        store.record(run, o)
        got = {r["port"]: (r["serial"], r["status"]) for r in store.run(run)["results"]}
    assert got == {"old": ("SN-1", PASS), "new": ("S" * 256, FAIL)}
    assert [_varchar(pg_fresh, c) for c in ("serial", "board", "backend")] == [256] * 3


@pytest.mark.postgres
def test_a_short_column_that_cannot_be_widened_is_refused_naming_it(pg_fresh):
    """A view over the column (a reporting view of the factory) keeps PostgreSQL from widening
    it: the database is refused before any board is verified, with the statement to run."""
    from sqlalchemy import create_engine, text

    ResultStore(pg_fresh).close()
    _shrink(pg_fresh)
    engine = create_engine(pg_fresh)
    with engine.begin() as conn:
        conn.execute(text("CREATE VIEW serials AS SELECT serial, board FROM accept_results"))
    engine.dispose()
    with pytest.raises(InputError) as e:
        ResultStore(pg_fresh)
    msg = str(e.value)
    assert "accept_results.serial (128), accept_results.board (128)" in msg
    assert "used by a view" in msg and "nothing was verified" in msg
    assert "ALTER TABLE accept_results ALTER COLUMN serial TYPE VARCHAR(256)" in msg
    assert "accept_results.backend" not in msg  # not in the view: widened
    assert _varchar(pg_fresh, "serial") == 128 and _varchar(pg_fresh, "backend") == 256


class _Named:
    """A board backend that reports its own identity text (as its firmware chooses it)."""

    def __init__(self, backend, ident: dict):
        self.backend, self.ident = backend, ident

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def identity(self):
        return {**self.backend.identity(), **self.ident}


def _accept(run_cli, pkg, pub, url, tmp_path, *args):
    return run_cli("accept", "--package", pkg, "--trusted-key", pub, "--db", url,
                   "--journal", tmp_path / "j.jsonl", "--db-wait", "2", *args)


def test_a_fail_board_reporting_the_longest_serial_is_committed(fresh_url, digits_package,
                                                                keypair, run_cli, tmp_path):
    """A faulty board that reports a 256-character serial (and board, backend): its FAIL is
    committed, the command exits 1 for it, nothing waits in the journal."""
    from conftest import in_process_board

    from fpgaprint.harness.commands import MAX_TEXT
    from fpgaprint.hw_targets.faults import FaultSpec

    ident = {"serial": "F" * MAX_TEXT, "board": "B" * MAX_TEXT, "backend": "K" * MAX_TEXT}
    with in_process_board(digits_package, keypair[1], wrap=lambda b: _Named(b, ident),
                          pty=True, faults=FaultSpec(flip_bits=50, seed=2)) as board:
        code, out, err = _accept(run_cli, digits_package, keypair[1], fresh_url, tmp_path,
                                 "--ports", board.url)
    assert code == 1, out + err
    assert "error:" not in err
    with ResultStore(fresh_url) as store:
        run = store.run(store.last_run_id())
    assert run["status"] == FAIL
    assert [(r["serial"], r["status"]) for r in run["results"]] == [("F" * MAX_TEXT, FAIL)]
    assert not (tmp_path / "j.jsonl").exists()


# ------------------------------------------ a result the database refuses is never gone


@pytest.mark.postgres
def test_a_fail_an_earlier_version_refused_is_committed_after_the_upgrade(pg_fresh, tmp_path):
    """The earlier version refused a FAIL with a 129-character serial for good ("value too
    long") and kept it in the journal marked rejected: this version widens the column and
    commits it, so the run's FAIL is in the database."""
    from fpgaprint.harness.db import Journal

    with ResultStore(pg_fresh) as store:
        run_id = store.start_run("s", "ab" * 32, "x", ["good", "bad"])
        url = store.url
    _shrink(pg_fresh)  # the database as the earlier version created it
    bad = outcome("bad", "F" * 129, flip=4)
    journal = Journal(tmp_path / "j.jsonl")
    journal.append({"kind": "result", "outcome": bad.to_dict(), "db": url, "run_id": run_id,
                    "rejected": f"database {url}: cannot commit the result of bad (value too "
                                "long for type character varying(128))"})
    with ResultStore(pg_fresh) as store:
        store.record(run_id, outcome("good", "SN-G"))
        got = store.replay(journal)
        assert (got.committed, got.rejected, got.held) == (1, [], 0)
        results = {r["port"]: (r["serial"], r["status"]) for r in store.run(run_id)["results"]}
        assert store.run_status(run_id) == FAIL
    assert results == {"good": ("SN-G", PASS), "bad": ("F" * 129, FAIL)}
    assert journal.entries() == [] and not journal.path.exists()


def _refuse_fails(db: Path, on: bool) -> None:
    """A database that refuses every FAIL result (a trigger: a constraint of the site)."""
    import sqlite3

    con = sqlite3.connect(db)
    if on:
        con.execute("CREATE TRIGGER no_fail BEFORE INSERT ON accept_results WHEN "
                    "NEW.status = 'FAIL' BEGIN SELECT RAISE(ABORT, 'FAIL refused here'); END")
    else:
        con.execute("DROP TRIGGER no_fail")
    con.commit()
    con.close()


def test_a_refused_result_is_kept_and_committed_once_the_database_takes_it(tmp_path):
    from fpgaprint.harness.db import Journal, ResultRejected

    url = f"sqlite:///{tmp_path}/acc.db"
    journal = Journal(tmp_path / "j.jsonl")
    with ResultStore(url) as store:
        run = store.start_run("s", "ab" * 32, "x", ["a"])
        _refuse_fails(tmp_path / "acc.db", True)
        bad = outcome("a", "SN-A", flip=3)
        with pytest.raises(ResultRejected, match="FAIL refused here") as e:
            store.record(run, bad)
        journal.append({"kind": "result", "outcome": bad.to_dict(), "db": url, "run_id": run,
                        "rejected": str(e.value)})
        again = store.replay(journal)  # still refused: kept, counted, not reported again
        assert (again.committed, again.rejected, again.held) == (0, [], 1)
        (kept,) = journal.entries()
        assert kept["outcome"]["status"] == FAIL and "FAIL refused here" in kept["rejected"]
        _refuse_fails(tmp_path / "acc.db", False)  # the site fixes its database
        fixed = store.replay(journal)
        assert (fixed.committed, fixed.rejected, fixed.held) == (1, [], 0)
        assert [r["status"] for r in store.run(run)["results"]] == [FAIL]
    assert not journal.path.exists()


def test_any_error_that_keeps_a_result_out_is_a_refusal_the_journal_keeps(tmp_path,
                                                                          monkeypatch):
    """Not only the database's errors: whatever keeps a result from being committed is
    ResultRejected, which `accept` keeps in the journal and exits 2 on; never an exception
    that ends the run with the FAIL written nowhere."""
    from fpgaprint.harness import db
    from fpgaprint.harness.db import ResultRejected

    def broken(run_id, o):
        raise RuntimeError("cannot build the row")

    with ResultStore(f"sqlite:///{tmp_path}/acc.db") as store:
        run = store.start_run("s", "ab" * 32, "x", ["a"])
        monkeypatch.setattr(db, "_result_row", broken)
        with pytest.raises(ResultRejected, match=r"result of a \(RuntimeError: cannot build"):
            store.record(run, outcome("a", "SN-A", flip=3))


def test_a_fail_the_database_refuses_exits_2_and_is_committed_when_it_takes_it(
        digits_package, keypair, run_cli, tmp_path):
    """A database that refuses the FAIL (a site's trigger): the command says so and exits 2,
    the FAIL stays in the journal; once the database takes it, the next start commits it and
    `--resume` closes the run as FAIL without verifying the board again."""
    import json

    from conftest import in_process_board

    from fpgaprint.hw_targets.faults import FaultSpec

    url = f"sqlite:///{tmp_path}/acc.db"
    ResultStore(url).close()
    _refuse_fails(tmp_path / "acc.db", True)
    with in_process_board(digits_package, keypair[1], pty=True,
                          faults=FaultSpec(flip_bits=50, seed=2)) as board:
        code, out, err = _accept(run_cli, digits_package, keypair[1], url, tmp_path,
                                 "--ports", board.url)
    assert code == 2, out + err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert "FAIL refused here" in line and "kept in" in line
    (kept,) = [json.loads(x) for x in (tmp_path / "j.jsonl").read_text().splitlines()]
    assert kept["outcome"]["status"] == FAIL and "FAIL refused here" in kept["rejected"]

    _refuse_fails(tmp_path / "acc.db", False)
    code, out, err = _accept(run_cli, digits_package, keypair[1], url, tmp_path,
                             "--resume", "1")  # the board is gone: it is not needed
    assert code == 1, out + err
    assert "committed 1 spooled result(s)" in out and "is finished: FAIL" in out
    assert not (tmp_path / "j.jsonl").exists()
    with ResultStore(url) as store:
        assert [r["status"] for r in store.run(1)["results"]] == [FAIL]


# ------------------------------------------------ processes that share one journal


def _append_in_child(path: Path, entry: dict):
    """Another process appending `entry` to the journal at `path`; it prints "ready" right
    before it appends."""
    import json
    import subprocess
    import sys

    code = ("import json, sys\nfrom fpgaprint.harness.db import Journal\n"
            "print('ready', flush=True)\n"
            "Journal(sys.argv[1]).append(json.loads(sys.argv[2]))\n")
    return subprocess.Popen([sys.executable, "-c", code, str(path), json.dumps(entry)],
                            stdout=subprocess.PIPE, text=True)


def test_an_entry_appended_while_a_replay_waits_is_kept(tmp_path):
    """Station A replays the journal and waits on the database (here: held between its read
    and its write-back); station B spools a FAIL to the same journal meanwhile. A's write-back
    keeps B's FAIL."""
    import threading

    from fpgaprint.harness.db import Journal

    url = f"sqlite:///{tmp_path}/acc.db"
    journal = Journal(f"{tmp_path}/acc.db.pending.jsonl")
    with ResultStore(url) as store:
        run = store.start_run("s", "ab" * 32, "x", ["a", "b"])
        journal.append({"kind": "result", "outcome": outcome("a", "SN-A").to_dict(), "db": url,
                        "run_id": run})
        waiting, go = threading.Event(), threading.Event()
        real = store._replay_one

        def slow(entry):
            waiting.set()
            assert go.wait(60)
            return real(entry)

        store._replay_one = slow
        got = []
        replay = threading.Thread(target=lambda: got.append(store.replay(journal)))
        replay.start()
        try:
            assert waiting.wait(60)
            b = outcome("b", "SN-B", flip=5).to_dict()
            child = _append_in_child(journal.path, {"kind": "result", "outcome": b, "db": url,
                                                    "run_id": run})
            child.communicate(timeout=60)
            assert child.returncode == 0
        finally:
            go.set()
            replay.join(60)
        assert got[0].committed == 1
        (left,) = journal.entries()
        assert left["outcome"]["port"] == "b" and left["outcome"]["status"] == FAIL
        assert store.replay(journal).committed == 1
        assert {r["port"]: r["status"] for r in store.run(run)["results"]} == \
            {"a": PASS, "b": FAIL}
    assert not journal.path.exists()


def test_an_append_waits_for_the_journal_lock(tmp_path):
    import time

    from fpgaprint.harness.db import Journal

    journal = Journal(tmp_path / "j.jsonl")
    journal.append({"kind": "finish", "run_id": 1, "status": PASS})
    with journal.locked():  # a replay writing the journal back
        child = _append_in_child(journal.path, {"kind": "finish", "run_id": 2, "status": FAIL})
        assert child.stdout.readline() == "ready\n"
        time.sleep(0.5)
        assert child.poll() is None
        assert journal.path.read_text().count("\n") == 1
    child.communicate(timeout=60)
    assert child.returncode == 0
    assert [e["run_id"] for e in journal.entries()] == [1, 2]


def test_an_entry_appended_after_a_line_a_crash_cut_short_is_read(tmp_path, caplog):
    from fpgaprint.harness.db import Journal

    caplog.set_level(logging.WARNING, logger="fpgaprint.accept")  # whatever an earlier run set
    journal = Journal(tmp_path / "j.jsonl")
    journal.path.write_text('{"kind": "finish", "run_id": 1, "stat')  # killed mid-append
    journal.append({"kind": "finish", "run_id": 2, "status": FAIL})
    assert journal.entries() == [{"kind": "finish", "run_id": 2, "status": FAIL}]
    assert "unreadable journal line skipped" in caplog.text
