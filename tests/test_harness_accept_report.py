"""`accept` then `fpgaprint report` on real boards: trust is recorded per result, an
unopenable port is a link error named in the report (never failing vectors)."""

from __future__ import annotations

import json

from fpgaprint.harness.db import ResultStore
from fpgaprint.hw_targets.served import ServedBoard

REFUSED = "socket://127.0.0.1:9"  # nothing listens on the discard port here


def test_accept_unpinned_with_an_unopenable_port_then_report(digits_package, keypair, tmp_path,
                                                             run_cli):
    url = f"sqlite:///{tmp_path}/acc.db"
    with ServedBoard(digits_package, "--trusted-key", keypair[1], "--serial", "SN-1") as board:
        code, out, err = run_cli("accept", "--ports", f"{board.port},{REFUSED}", "--package",
                                 digits_package, "--allow-unpinned", "--db", url, "--station",
                                 "line-1", "--retries", "1", "--timeout", "0.3")
    assert code == 3, out + err  # one PASS, one port that could not be opened
    assert "None" not in out and "(0/" in out  # no "serial None", no match rate of 0
    with ResultStore(url) as store:
        (run,) = [store.last_run_id()]
        got = {r["port"]: (r["status"], r["trust"]) for r in store.run(run)["results"]}
    assert got == {board.port: ("PASS", "unpinned"), REFUSED: ("NO_VERDICT", "unpinned")}
    code, out, err = run_cli("report", "--db", url, "--out", tmp_path / "r")
    assert code == 0, err
    doc = json.loads((tmp_path / "r" / "factory.json").read_text())
    (bad,) = doc["not_passed"]
    assert bad["board"] == f"{REFUSED}@line-1" and bad["trust"] == "unpinned"
    assert bad["cause"].startswith(f"link: cannot open board port {REFUSED}")
    # failing vectors: only the passing board's answered ones, none of the port's unanswered
    assert doc["vectors_total"] == len(_failing_answered(url)) < bad_total(url)
    assert all(v["boards"] == 1 for v in doc["vectors"])
    assert sum(doc["causes"]["link_errors"].values()) == 1
    assert doc["trust"]["unpinned"]["results"] == 2


def _failing_answered(url: str) -> list[int]:
    from sqlalchemy import or_, select
    from sqlalchemy.orm import Session

    from fpgaprint.harness.db import VectorRow

    with ResultStore(url) as store, Session(store.engine) as s:
        return list(s.scalars(select(VectorRow.index).where(
            VectorRow.answered.is_(True),
            or_(VectorRow.exact.is_(False), VectorRow.fingerprint.is_(False)))))


def bad_total(url: str) -> int:
    """The vectors of the port that could not be opened (all unanswered)."""
    with ResultStore(url) as store:
        (r,) = [r for r in store.run(store.last_run_id())["results"] if r["port"] == REFUSED]
    assert r["n_answered"] == 0
    return r["n_vectors"]
