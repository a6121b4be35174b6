"""`fpgaprint report`: the factory view over acceptance runs of several stations.

Two `fpgaprint accept` stations write into one PostgreSQL database at the same time (each
board a real `fpgaprint board serve` on a pty: good boards, a board with weight-bit flips, a
board whose link hangs, then that board tested again); the report must aggregate exactly
what the database holds.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from fpgaprint.core.errors import InputError
from fpgaprint.harness.factory import parse_since
from fpgaprint.hw_targets.served import served_boards

FPGAPRINT = str(Path(sys.executable).parent / "fpgaprint")


@pytest.fixture
def pg_schema():
    """A PostgreSQL URL whose tables live in a schema of their own (dropped afterwards), so
    the report sees this test's stations only."""
    from test_harness_db import pg_schema_url

    with pg_schema_url("factory") as url:
        yield url


def _accept(pkg: Path, pub: Path, url: str, station: str, ports: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [FPGAPRINT, "accept", "--ports", ",".join(ports), "--package", str(pkg),
         "--trusted-key", str(pub), "--db", url, "--station", station, "--timeout", "0.3",
         "--retries", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _expected_vectors(url: str) -> dict[tuple[str, int], tuple[int, int]]:
    """Failing answered vectors counted straight from the rows (package, index) -> counts."""
    from sqlalchemy import create_engine, select
    from sqlalchemy.orm import Session

    from fpgaprint.harness.db import BoardResult, Run, VectorRow

    engine = create_engine(url)
    got: dict = {}
    with Session(engine) as s:
        q = select(Run.package_id, VectorRow).join(BoardResult, VectorRow.result_id ==
                                                    BoardResult.id).join(Run)
        for pid, v in s.execute(q):
            bad = (v.exact is False, v.fingerprint is False)
            if v.answered and any(bad):
                c = got.setdefault((pid, v.index), [0, 0])
                for k, b in enumerate(bad):
                    c[k] += int(b)
    engine.dispose()
    return {k: tuple(v) for k, v in got.items()}


@pytest.mark.postgres
def test_two_concurrent_stations_into_postgresql_are_aggregated(digits_package, keypair,
                                                               pg_schema, run_cli, tmp_path):
    pkg, pub = digits_package, keypair[1]
    pin = ("--trusted-key", pub)
    with served_boards((pkg, *pin, "--serial", "A1"),
                       (pkg, *pin, "--serial", "A2", "--flip-bits", "20", "--seed", "3"),
                       (pkg, *pin, "--serial", "B1"),
                       (pkg, *pin, "--serial", "B2", "--hang-after", "1")
                       ) as (a1, a2, b1, b2):
        procs = [_accept(pkg, pub, pg_schema, "station-a", [a1.port, a2.port]),
                 _accept(pkg, pub, pg_schema, "station-b", [b1.port, b2.port])]
        outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [1, 3], outs  # a FAIL at a, no verdict at b
    with served_boards((pkg, *pin, "--serial", "B2")) as (b2_again,):  # B2 on a good link
        retry = _accept(pkg, pub, pg_schema, "station-b", [b2_again.port])
        out = retry.communicate(timeout=300)[0]
    assert retry.returncode == 0, out

    code, stdout, err = run_cli("report", "--db", pg_schema, "--out", tmp_path / "r")
    assert code == 0, err
    doc = json.loads((tmp_path / "r" / "factory.json").read_text())
    a, b = doc["stations"]["station-a"], doc["stations"]["station-b"]
    assert (a["boards"], a["results"], a["PASS"], a["FAIL"], a["NO_VERDICT"]) == (2, 2, 1, 1, 0)
    assert (a["first_pass_yield"], a["final_yield"]) == (0.5, 0.5)
    assert (b["boards"], b["results"], b["PASS"], b["FAIL"], b["NO_VERDICT"]) == (2, 3, 2, 0, 1)
    assert (b["first_pass_yield"], b["final_yield"]) == (0.5, 1.0)
    assert (doc["total"]["boards"], doc["total"]["results"]) == (4, 5)
    (pkg_group,) = doc["packages"].values()
    assert pkg_group["results"] == 5
    assert sum(g["results"] for g in doc["days"].values()) == 5
    assert Counter(r["station"] for r in doc["runs"] for _ in range(r["runs"])) == \
        {"station-a": 1, "station-b": 2}
    assert all(r["status"] != "RUNNING" for r in doc["runs"])
    # causes: the flipped board fails the exact check, the hung one is a link error
    assert doc["causes"]["checks"]["exact"]["FAIL"] == 1
    assert sum(doc["causes"]["link_errors"].values()) == 1
    (retried,) = doc["retries"]
    assert retried["board"] == "B2" and retried["statuses"] == ["NO_VERDICT", "PASS"]
    assert retried["stations"] == ["station-b"] and retried["final"] == "PASS"
    # failing vectors: exactly what the vector rows say
    want = _expected_vectors(pg_schema)
    assert doc["vectors_total"] == len(want) > 0
    for v in doc["vectors"]:
        assert want[(v["package_id"], v["vector"])] == (v["exact_failed"], v["label_failed"])
    page = (tmp_path / "r" / "factory.html").read_text()
    assert page.count("data:image/png;base64,") == 4
    assert "Yield per station" in page and "B2" in page
    md = (tmp_path / "r" / "factory.md").read_text()
    assert "| station-b | 2 | 3 | 2 | 0 | 1 | 50.0 % | 100.0 % |" in md
    # the one board whose last result is not PASS is named, with its cause and station
    (bad,) = doc["not_passed"]
    assert (bad["board"], bad["status"], bad["station"]) == ("A2", "FAIL", "station-a")
    assert bad["cause"].startswith("exact: ") and bad["trust"] == "pinned"
    assert "not passed: A2: FAIL at station-a" in stdout
    assert "station-a" in stdout and "5 results" in stdout.replace("\n", " ")
    # --since after every result: nothing, and still a report
    code, _, err = run_cli("report", "--db", pg_schema, "--since", "2999-01-01",
                           "--out", tmp_path / "none")
    assert code == 0, err
    empty = json.loads((tmp_path / "none" / "factory.json").read_text())
    assert empty["total"]["results"] == 0 and empty["stations"] == {}


def test_report_reads_sqlite_and_refuses_bad_databases(tmp_path, run_cli):
    from fpgaprint.harness.db import ResultStore

    db = tmp_path / "acc.db"
    with ResultStore(f"sqlite:///{db}") as store:
        store.finish_run(store.start_run("s1", "ab" * 32, "digits", []), "PASS")
    code, _, err = run_cli("report", "--db", f"sqlite:///{db}", "--since", "7d",
                           "--out", tmp_path / "r")
    assert code == 0, err
    doc = json.loads((tmp_path / "r" / "factory.json").read_text())
    assert doc["runs"] == [{"station": "s1", "status": "PASS", "runs": 1}]
    assert doc["total"]["results"] == 0
    for url, message in ((f"sqlite:///{tmp_path}/missing.db", "no such database file"),
                         ("nope://x", "not a usable database URL")):
        code, _, err = run_cli("report", "--db", url, "--out", tmp_path / "x")
        assert code == 2 and message in err, err
    other = tmp_path / "other.db"
    import sqlite3

    sqlite3.connect(other).execute("create table t (x int)").connection.commit()
    code, _, err = run_cli("report", "--db", f"sqlite:///{other}", "--out", tmp_path / "x")
    assert code == 2 and "no acceptance results" in err, err
    code, _, err = run_cli("report", "--db", f"sqlite:///{db}", "--since", "yesterday",
                           "--out", tmp_path / "x")
    assert code == 2 and "--since 'yesterday': expected" in err


def test_since_accepts_dates_and_ages():
    now = dt.datetime(2026, 11, 25, 12, tzinfo=dt.timezone.utc)
    assert parse_since("2026-11-01", now) == dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
    assert parse_since("12h", now) == now - dt.timedelta(hours=12)
    assert parse_since("2w", now) == now - dt.timedelta(weeks=2)
    assert parse_since("2026-11-01T08:00+01:00", now).utcoffset() == dt.timedelta(hours=1)
    with pytest.raises(InputError):
        parse_since("soon", now)


@pytest.mark.postgres
def test_stations_opening_a_new_postgresql_database_at_once_all_start(pg_schema):
    """Eight stations create the tables of an empty database at the same moment: every one
    opens it (the catalog would otherwise reject all but one CREATE TABLE)."""
    import threading

    from fpgaprint.harness.db import ResultStore

    gate, errors, stores = threading.Barrier(8), [], []

    def station() -> None:
        gate.wait()
        try:
            stores.append(ResultStore(pg_schema))
        except Exception as e:  # noqa: BLE001 - every failure is the finding
            errors.append(e)

    threads = [threading.Thread(target=station) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for s in stores:
        s.close()
    assert not errors and len(stores) == 8, errors


def _synthetic_db(tmp_path: Path) -> str:
    """One station's results: a PASS, a FAIL, an unopenable port, a board that passed on its
    second try; the FAIL's package unpinned."""
    from test_harness_reports import outcome, unreachable

    from fpgaprint.harness.db import ResultStore

    url = f"sqlite:///{tmp_path}/acc.db"
    with ResultStore(url) as store:
        run = store.start_run("line-1", "ab" * 32, "digits-mlp", [])
        fail = outcome("b", "SN-B", flip=5)
        fail.trust = {"trust": "unpinned"}
        for o in (outcome("a", "SN-A"), fail, unreachable("/dev/ttyNOPE"),
                  outcome("c", "SN-C", missing=5)):
            store.record(run, o)
        store.finish_run(run, "FAIL")
        again = store.start_run("line-1", "ab" * 32, "digits-mlp", [])
        store.record(again, outcome("c2", "SN-C"))
        store.finish_run(again, "PASS")
    return url


def test_report_names_every_board_that_has_not_passed(tmp_path, run_cli):
    url = _synthetic_db(tmp_path)
    code, out, err = run_cli("report", "--db", url, "--out", tmp_path / "r")
    assert code == 0, err
    doc = json.loads((tmp_path / "r" / "factory.json").read_text())
    named = {b["board"]: b for b in doc["not_passed"]}
    assert set(named) == {"SN-B", "/dev/ttyNOPE@line-1"}  # SN-C passed on its second try
    assert named["SN-B"]["cause"].startswith("exact: 5/12 vectors differ")
    assert named["SN-B"]["trust"] == "unpinned" and named["SN-B"]["station"] == "line-1"
    port = named["/dev/ttyNOPE@line-1"]
    assert port["cause"] == "link: cannot open /dev/ttyNOPE: no such file"
    assert port["answered"] == "0/12" and port["trust"] == "unknown"
    # the unopenable port is a link error, and none of its 12 vectors is a failing one
    assert doc["causes"]["link_errors"] == {"cannot open PORT: no such file": 1,
                                            "N/N vectors answered (exact: N/N vectors "
                                            "unanswered)": 1}
    assert {v["vector"] for v in doc["vectors"]} == {0, 1, 2, 3, 4}
    assert all(v["boards"] == 1 and v["exact_failed"] == 1 for v in doc["vectors"])
    assert doc["trust"]["unpinned"]["FAIL"] == 1 and doc["trust"]["unknown"]["results"] == 4
    assert ("not passed: /dev/ttyNOPE@line-1: NO_VERDICT at line-1 (run 1, 0/12 answered, "
            "trust unknown): link: cannot open /dev/ttyNOPE: no such file") in out.splitlines()
    assert "not passed: SN-B: FAIL at line-1 (run 1, 12/12 answered, trust unpinned): exact: " \
        "5/12 vectors differ" in out
    md = (tmp_path / "r" / "factory.md").read_text()
    assert "## Boards that have not passed (2)" in md and "| SN-B | digits-mlp" in md
    page = (tmp_path / "r" / "factory.html").read_text()
    assert "final yield <b class='FAIL'>" in page.replace("\n", " ")  # 2 of 4: never green


def test_an_older_database_reads_as_unknown_trust(tmp_path, run_cli):
    import sqlite3

    url = _synthetic_db(tmp_path)
    con = sqlite3.connect(tmp_path / "acc.db")  # as the previous version wrote it
    con.execute("ALTER TABLE accept_results DROP COLUMN trust")
    con.commit()
    con.close()
    code, _, err = run_cli("report", "--db", url, "--out", tmp_path / "r")
    assert code == 0, err
    doc = json.loads((tmp_path / "r" / "factory.json").read_text())
    assert list(doc["trust"]) == ["unknown"] and doc["trust"]["unknown"]["results"] == 5


@pytest.mark.parametrize("sql, message", [
    ("UPDATE accept_results SET checks = '[{\"name\": ' WHERE port = 'b'",
     "table accept_results row 2, column checks: not valid JSON"),
    ("UPDATE accept_results SET checks = '{\"a\": 1}' WHERE port = 'b'",
     "table accept_results row 2, column checks: not a list of checks"),
    ("UPDATE accept_results SET started_at = 'yesterday' WHERE port = 'b'",
     "table accept_results row 2, column started_at: not a date-time"),
    ("UPDATE accept_results SET n_answered = 'many' WHERE port = 'b'",
     "table accept_results row 2, column n_answered: 'many' is not a count"),
    ("UPDATE accept_results SET status = 'GREAT' WHERE port = 'b'",
     "table accept_results row 2, column status: 'GREAT' is not one of PASS"),
])
def test_report_on_a_malformed_cell_is_one_line_naming_it(tmp_path, run_cli, sql, message):
    import sqlite3

    url = _synthetic_db(tmp_path)
    con = sqlite3.connect(tmp_path / "acc.db")
    con.execute(sql)
    con.commit()
    con.close()
    code, out, err = run_cli("report", "--db", url, "--since", "2000-01-01",
                             "--out", tmp_path / "r")
    assert code == 2, out + err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"error: --db {url}: {message}"), err
    assert "unexpected" not in err


def test_report_out_under_a_file_is_one_line(tmp_path, run_cli):
    url = _synthetic_db(tmp_path)
    (tmp_path / "f").write_text("")
    code, out, err = run_cli("report", "--db", url, "--out", tmp_path / "f" / "r")
    assert code == 2, out + err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"error: --out {tmp_path / 'f' / 'r'}:") and "not a folder" in line


def test_a_serial_two_boards_reported_in_one_run_hides_neither(tmp_path, run_cli):
    """Run 1: a faulty board and a good one both report SN-D (a copied EEPROM); run 2: SN-D
    passes alone. The last result per serial used to win: SN-D was a reworked board [FAIL,
    PASS, PASS], final PASS, and the FAIL was in no list of boards that had not passed."""
    from test_harness_reports import outcome

    from fpgaprint.harness.db import ResultStore

    url = f"sqlite:///{tmp_path}/acc.db"
    with ResultStore(url) as store:
        run = store.start_run("line-1", "ab" * 32, "digits-mlp", [])
        for o in (outcome("d2", "SN-D", flip=5), outcome("d1", "SN-D"), outcome("e", "SN-E")):
            store.record(run, o)
        store.finish_run(run, "FAIL")
        again = store.start_run("line-1", "ab" * 32, "digits-mlp", [])
        store.record(again, outcome("d1", "SN-D"))
        store.finish_run(again, "PASS")
    code, out, err = run_cli("report", "--db", url, "--out", tmp_path / "r")
    assert code == 0, err
    doc = json.loads((tmp_path / "r" / "factory.json").read_text())
    why = "serial SN-D reported by 2 boards in run 1 (d1, d2)"
    named = {b["board"]: b for b in doc["not_passed"]}
    assert set(named) == {"SN-D (d2@line-1, run 1)", "SN-D (d1@line-1, run 1)"}
    bad, good = named["SN-D (d2@line-1, run 1)"], named["SN-D (d1@line-1, run 1)"]
    assert bad["status"] == "FAIL" and bad["serial_conflict"] == why
    assert bad["cause"].startswith(why + "; exact: 5/12 vectors differ")
    assert good["status"] == "NO_VERDICT" and good["own_status"] == "PASS"
    assert good["cause"] == why
    assert doc["serial_conflicts"] == [{"serial": "SN-D", "run": 1, "station": "line-1",
                                        "ports": ["d1", "d2"], "verdicts": ["PASS", "FAIL"],
                                        "reason": why}]
    assert doc["retries"] == []  # no board is taken for a retest of another
    # SN-E and SN-D of run 2 passed; neither board of the conflict counts as passed
    assert doc["total"]["boards"] == 4 and doc["total"]["final_yield"] == 0.5
    assert doc["total"]["PASS"] == 2 and doc["total"]["FAIL"] == 1
    assert doc["causes"]["link_errors"] == {}  # a conflict is not a link error
    assert (f"not passed: SN-D (d2@line-1, run 1): FAIL at line-1 (run 1, 12/12 answered, "
            f"trust unknown): {why}; exact:") in out
    md = (tmp_path / "r" / "factory.md").read_text()
    assert "## Serials reported by two or more boards in one run (1)" in md
    assert "| SN-D | 1 | line-1 | d1, d2 | PASS, FAIL |" in md
    assert "<td>SN-D (d1@line-1, run 1)</td>" in (tmp_path / "r" / "factory.html").read_text()


def test_board_text_in_the_factory_report_is_data(tmp_path, run_cli):
    """A link error quoting the board (`$...$`) is a plot label: matplotlib parsed it as math
    and the report died; a station `[/]` was markup in the console's table; a serial `:cd:`
    became an emoji in the not-passed line."""
    from test_harness_reports import outcome, said

    from fpgaprint.harness.db import ResultStore

    url = f"sqlite:///{tmp_path}/acc.db"
    with ResultStore(url) as store:
        run = store.start_run("[/]line", "ab" * 32, "$\\pkg$", [])
        store.record(run, outcome("a", "[/]", flip=3))
        bad = said("b", "board error: $\\undefined$ [red]x")
        bad.identity = {"serial": "AB:cd:01"}
        store.record(run, bad)
        store.finish_run(run, "FAIL")
    code, out, err = run_cli("report", "--db", url, "--out", tmp_path / "r")
    assert code == 0, out + err
    assert "[/]line" in out and "💿" not in out
    assert ("not passed: AB:cd:01: NO_VERDICT at [/]line (run 1, 0/12 answered, trust "
            "unknown): link: board error: $\\undefined$ [red]x") in out
    page = (tmp_path / "r" / "factory.html").read_text()
    assert page.count("data:image/png;base64,") == 4  # stations, days, causes, vectors
    doc = json.loads((tmp_path / "r" / "factory.json").read_text())
    assert doc["causes"]["link_errors"] == {"board error: $\\undefined$ [red]x": 1}
