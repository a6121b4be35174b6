"""The factory view: every acceptance run in a results database, across stations.

`fpgaprint report --db URL [--since WHEN] --out DIR` reads the database `accept` writes
(PostgreSQL shared by several stations, or a local SQLite file) without changing it and
writes `factory.json`, `factory.md` and `factory.html` (with plots):

- boards that have not passed: every board whose last result for a package is not PASS,
  with its cause (`reports.cause`), station, run and the package's trust;
- yield per station, per package, per day and per trust (pinned / unpinned / unsigned;
  `unknown` for results written before the database recorded it): boards tested, results,
  PASS / FAIL / NO_VERDICT, first-pass yield (a board's first result in the group is PASS) and
  final yield (its last result is PASS). A board is its reported serial, else PORT@STATION;
- serial conflicts: a serial that boards on two or more ports of one run reported. The run
  cannot say which board the serial's results belong to, so each of them is a board of its
  own (`SERIAL (PORT@STATION, run N)`) that never counts as passed on that evidence: a FAIL
  stays FAIL, anything else counts as NO_VERDICT, with the cause "serial S reported by 2 boards
  in run N (PORTS)". Such a board stays listed as not passed (a later result of the serial
  cannot be told to be either board's);
- failure causes: which check failed or reached no verdict, link errors (NO_VERDICT results
  whose reason is the link, an unopenable port included), and which answered vectors failed
  (raw output, label) per package; an unanswered vector is a link matter, never a failing one;
- boards that needed retries: boards with more than one result for a package, in order.

Every cell is read as untrusted: a malformed JSON or typed cell is one InputError naming its
table, row and column.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fpgaprint.core.errors import InputError, LinkError
from fpgaprint.harness.verdict import FAIL, NO_VERDICT, PASS

STATUSES = (PASS, FAIL, NO_VERDICT)
TOP_VECTORS = 20
GOOD_YIELD, LOW_YIELD = 0.95, 0.80  # green from GOOD_YIELD on, red below LOW_YIELD
_REL = re.compile(r"^(\d+)\s*([hdw])$")


def parse_since(value: str | None, now: dt.datetime | None = None) -> dt.datetime | None:
    """An ISO date or date-time (UTC unless it says otherwise), or `Nh`, `Nd`, `Nw` ago."""
    if value is None:
        return None
    text = value.strip()
    now = now or dt.datetime.now(dt.timezone.utc)
    m = _REL.match(text)
    if m:
        n, unit = int(m.group(1)), m.group(2)
        return now - dt.timedelta(**{{"h": "hours", "d": "days", "w": "weeks"}[unit]: n})
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"--since {value!r}: expected a date (2026-11-01), a date-time "
                         "(2026-11-01T08:00) or an age (12h, 7d, 2w)") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def _utc(t: dt.datetime | None) -> dt.datetime | None:
    if t is None:
        return None
    return t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t.astimezone(
        dt.timezone.utc)


@dataclass
class Result:
    """One board result as the report needs it."""

    run_id: int
    station: str
    package_id: str
    package_name: str
    port: str
    serial: str | None
    status: str
    reason: str
    started: dt.datetime
    checks: list[dict[str, Any]]
    match_rate: float | None
    answered: int = 0
    total: int = 0
    trust: str | None = None  # None: written before the database recorded trust
    conflict: str | None = None  # why its serial is in a conflict (`with_conflicts`)
    own_status: str | None = None  # with a conflict: the board's own verdict (status: counted)

    @property
    def board(self) -> str:
        if self.conflict is not None:
            return f"{self.serial} ({self.port}@{self.station}, run {self.run_id})"
        return self.serial or f"{self.port}@{self.station}"

    @property
    def own_cause(self) -> str:
        """The cause of the board's own verdict (`reports.cause`)."""
        from fpgaprint.harness.reports import cause

        return cause(self.own_status or self.status, self.reason, self.checks, self.answered,
                     self.total)

    @property
    def cause(self) -> str:
        """Why the result does not count as passed: its serial conflict first, if any."""
        from fpgaprint.harness.reports import conflict_cause

        return conflict_cause(self.conflict, self.own_cause)

    @property
    def day(self) -> str:
        return self.started.date().isoformat()

    @property
    def package(self) -> str:
        return f"{self.package_name or '?'} {self.package_id[:12]}"


@dataclass
class FactoryData:
    url: str
    since: dt.datetime | None
    results: list[Result]
    runs: list[dict[str, Any]]
    vectors: list[dict[str, Any]]  # failing vectors per package, most frequent first
    generated: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ"))


def load(url: str, since: dt.datetime | None = None) -> FactoryData:
    """Every run and board result (started at or after `since`) of the database at `url`."""
    from sqlalchemy import and_, case, create_engine, func, inspect, literal, or_, select
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError
    from sqlalchemy.orm import Session

    from fpgaprint.harness.db import BoardResult, Run, VectorRow

    try:
        parsed = make_url(url)
        backend = parsed.get_backend_name()
        if backend == "sqlite" and parsed.database not in (None, "", ":memory:") \
                and not Path(parsed.database).is_file():
            raise InputError(f"--db {url}: no such database file")
        engine = create_engine(parsed)
    except (ArgumentError, NoSuchModuleError, ValueError) as e:
        raise InputError(f"--db {url!r}: not a usable database URL ({e})") from None
    shown = parsed.render_as_string(hide_password=True)
    try:
        if not inspect(engine).has_table(Run.__tablename__):
            raise InputError(f"--db {shown}: no acceptance results (no table "
                             f"{Run.__tablename__}; `fpgaprint accept` creates it)")
        cutoff = None if since is None else (
            since.astimezone(dt.timezone.utc) if backend != "sqlite"
            else since.astimezone(dt.timezone.utc).replace(tzinfo=None))
        have = {c["name"] for c in inspect(engine).get_columns(BoardResult.__tablename__)}
        trust = BoardResult.trust if "trust" in have else literal(None).label("trust")
        with Session(engine) as s:
            q = (select(BoardResult.id, BoardResult.run_id, Run.station, Run.package_id,
                        Run.package_name, BoardResult.port, BoardResult.serial,
                        BoardResult.status, BoardResult.reason, BoardResult.started_at,
                        BoardResult.checks, BoardResult.match_rate, BoardResult.n_answered,
                        BoardResult.n_vectors, trust)
                 .join(Run, BoardResult.run_id == Run.id))
            if cutoff is not None:
                q = q.where(BoardResult.started_at >= cutoff)
            try:
                results = [_result(row) for row in s.execute(
                    q.order_by(BoardResult.started_at, BoardResult.id))]
                rq = select(Run.station, Run.status, func.count(Run.id)).group_by(
                    Run.station, Run.status)
                if cutoff is not None:
                    rq = rq.where(Run.started_at >= cutoff)
                runs = [{"station": _text(st, "accept_runs", "station"),
                         "status": _text(status, "accept_runs", "status"), "runs": int(n)}
                        for st, status, n in s.execute(rq)]
                bad_exact = case((VectorRow.exact.is_(False), 1), else_=0)
                bad_label = case((VectorRow.fingerprint.is_(False), 1), else_=0)
                vq = (select(Run.package_id, Run.package_name, VectorRow.index,
                             func.sum(bad_exact), func.sum(bad_label),
                             func.count(func.distinct(VectorRow.result_id)))
                      .join(BoardResult, VectorRow.result_id == BoardResult.id)
                      .join(Run, BoardResult.run_id == Run.id)
                      .where(VectorRow.answered.is_(True),
                             or_(VectorRow.exact.is_(False), VectorRow.fingerprint.is_(False)))
                      .group_by(Run.package_id, Run.package_name, VectorRow.index))
                if cutoff is not None:
                    vq = vq.where(and_(BoardResult.started_at >= cutoff))
                vectors = [{"package_id": str(pid), "package": f"{name or '?'} {str(pid)[:12]}",
                            "vector": int(i), "exact_failed": int(e), "label_failed": int(lab),
                            "boards": int(n)}
                           for pid, name, i, e, lab, n in s.execute(vq)]
            except (ValueError, TypeError, OverflowError) as e:
                where = str(e) if isinstance(e, _BadCell) else (
                    _bad_cell(s) or f"a cell it cannot read ({type(e).__name__}: {e})")
                raise InputError(f"--db {shown}: {where}"[:400]) from None
    except OperationalError as e:
        raise LinkError(f"--db {shown}: cannot read the database "
                        f"({str(e.orig).strip().splitlines()[0][:200]})") from None
    except SQLAlchemyError as e:
        raise InputError(f"--db {shown}: cannot read acceptance results ({type(e).__name__})") \
            from None
    finally:
        engine.dispose()
    vectors.sort(key=lambda v: (-(v["exact_failed"] + v["label_failed"]), v["package_id"],
                                v["vector"]))
    return FactoryData(shown, since, results, runs, vectors)


class _BadCell(ValueError):
    pass


def _text(v: Any, table: str, column: str, row: Any = None, null: bool = False) -> Any:
    if v is None and null:
        return None
    if isinstance(v, (str, int)) and not isinstance(v, bool):
        return str(v)
    where = f"table {table}" + (f" row {row}" if row is not None else "")
    raise _BadCell(f"{where}, column {column}: {type(v).__name__} where text is expected")


def _result(row: Any) -> Result:
    """One board result from its row, every cell checked (_BadCell naming the cell)."""
    (rid, run_id, station, package_id, package_name, port, serial, status, reason, started,
     checks, match_rate, answered, total, trust) = row

    def bad(column: str, what: str) -> _BadCell:
        return _BadCell(f"table accept_results row {rid}, column {column}: {what}")

    def t(v: Any, column: str, null: bool = False) -> Any:
        return _text(v, "accept_results", column, rid, null)

    station, package_id, port, status = (t(station, "station"), t(package_id, "package_id"),
                                         t(port, "port"), t(status, "status"))
    package_name, serial, reason, trust = (t(package_name, "package_name", True),
                                           t(serial, "serial", True), t(reason, "reason", True),
                                           t(trust, "trust", True))
    if status not in STATUSES:
        raise bad("status", f"{status[:40]!r} is not one of {', '.join(STATUSES)}")
    if not isinstance(started, dt.datetime):
        raise bad("started_at", "not a date-time")
    if not isinstance(checks, list) or not all(
            isinstance(c, dict) and isinstance(c.get("name"), str)
            and isinstance(c.get("status"), str) for c in checks):
        raise bad("checks", "not a list of checks with a name and a status")
    for col, v in (("n_answered", answered), ("n_vectors", total)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise bad(col, f"{str(v)[:40]!r} is not a count")
    if match_rate is not None and (not isinstance(match_rate, (int, float))
                                   or isinstance(match_rate, bool)):
        raise bad("match_rate", f"{str(match_rate)[:40]!r} is not a number")
    return Result(int(run_id), station, package_id, package_name or "", port, serial, status,
                  reason or "", _utc(started), list(checks), match_rate, answered, total, trust)


def _bad_cell(session: Any) -> str | None:
    """The first cell of a JSON or date-time column its type cannot read (SQLite stores
    anything in any column), as `table T row N, column C: why`."""
    from sqlalchemy import JSON, DateTime, Text, select, type_coerce

    from fpgaprint.harness.db import Base

    dialect = session.get_bind().dialect
    for table in Base.metadata.sorted_tables:
        for col in table.columns:
            if not isinstance(col.type, (JSON, DateTime)):
                continue
            convert = col.type.dialect_impl(dialect).result_processor(dialect, None)
            if convert is None:
                continue
            q = select(table.c.id, type_coerce(col, Text)).where(col.is_not(None))
            for rid, raw in session.execute(q):
                try:
                    convert(raw)
                except (ValueError, TypeError) as e:
                    what = "not valid JSON" if isinstance(col.type, JSON) else \
                        "not a date-time"
                    return (f"table {table.name} row {rid}, column {col.name}: {what} "
                            f"({str(e)[:80]})")
    return None


# ------------------------------------------------------------------------------ aggregates

def _yield(results: list[Result]) -> dict[str, Any]:
    """Counts and yields of a group of results (in time order)."""
    by_board: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        by_board[r.board].append(r)
    counts = Counter(r.status for r in results)
    boards = len(by_board)
    first = sum(rs[0].status == PASS for rs in by_board.values())
    final = sum(rs[-1].status == PASS for rs in by_board.values())
    return {"boards": boards, "results": len(results),
            **{s: counts.get(s, 0) for s in STATUSES},
            "first_pass_yield": first / boards if boards else None,
            "final_yield": final / boards if boards else None}


def _group(results: list[Result], key) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        groups[key(r)].append(r)
    return {k: _yield(v) for k, v in sorted(groups.items())}


def with_conflicts(results: list[Result]) -> list[Result]:
    """The results with every serial conflict marked (see the module's docstring): a result
    whose serial a board on another port of the same run reported too gets `conflict` (why),
    `own_status` (its verdict) and as `status` the one it counts as."""
    from fpgaprint.harness.reports import conflict_status, port_conflicts, serial_conflicts

    by_run: dict[int, list[Result]] = defaultdict(list)
    for r in results:
        by_run[r.run_id].append(r)
    why = {(run_id, port): reason for run_id, rs in by_run.items()
           for port, reason in port_conflicts(serial_conflicts((r.port, r.serial) for r in rs),
                                              run_id).items()}
    return [replace(r, conflict=why[(r.run_id, r.port)], own_status=r.status,
                    status=conflict_status(r.status))
            if (r.run_id, r.port) in why else r for r in results]


def conflict_list(results: list[Result]) -> list[dict[str, Any]]:
    """Every serial conflict of `with_conflicts(results)`: the serial, run, station, its
    ports and their boards' own verdicts."""
    groups: dict[tuple[int, str], list[Result]] = defaultdict(list)
    for r in results:
        if r.conflict is not None:
            groups[(r.run_id, str(r.serial))].append(r)
    out = []
    for (run_id, serial), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r.port)  # as the reason names them
        out.append({"serial": serial, "run": run_id, "station": rs[0].station,
                    "ports": [r.port for r in rs], "verdicts": [r.own_status for r in rs],
                    "reason": rs[0].conflict})
    return out


def link_cause(r: Result) -> str | None:
    """The link error of a NO_VERDICT result, as a short category; None for other results.
    A result whose vectors went unanswered (an unopenable port, a hung board) is one."""
    if (r.own_status or r.status) != NO_VERDICT or not r.own_cause.startswith("link: "):
        return None
    text = r.own_cause[len("link: "):]
    text = re.sub(r"((?:socket|pty|rfc2217|loop)://\S*?|/dev/\S*?)(?=:?(?:\s|$|[;,)]))",
                  "PORT", text)
    text = re.sub(r"\d+(\.\d+)?", "N", text)
    return text.strip()[:120]


def not_passed(results: list[Result]) -> list[dict[str, Any]]:
    """Every board whose last result for a package is not PASS: the board (serial, else
    PORT@STATION), that result's cause, station, run and time, and the package's trust."""
    last: dict[tuple[str, str], Result] = {}
    tries: Counter = Counter()
    for r in results:  # in time order: the last one wins
        last[(r.board, r.package_id)] = r
        tries[(r.board, r.package_id)] += 1
    return [{"board": board, "package": r.package, "status": r.status, "cause": r.cause,
             "station": r.station, "run": r.run_id, "when": r.started.isoformat(),
             "answered": f"{r.answered}/{r.total}", "trust": r.trust or "unknown",
             "attempts": tries[(board, pid)], "serial_conflict": r.conflict,
             "own_status": r.own_status or r.status}
            for (board, pid), r in sorted(last.items()) if r.status != PASS]


def causes(results: list[Result]) -> dict[str, Any]:
    """Which checks failed or reached no verdict, and the link errors."""
    checks: dict[str, Counter] = defaultdict(Counter)
    for r in results:
        for c in r.checks:
            if c.get("status") in (FAIL, NO_VERDICT):
                checks[str(c.get("name"))][c["status"]] += 1
    link = Counter(c for c in (link_cause(r) for r in results) if c)
    return {"checks": {k: {FAIL: v.get(FAIL, 0), NO_VERDICT: v.get(NO_VERDICT, 0)}
                       for k, v in sorted(checks.items())},
            "link_errors": dict(link.most_common())}


def retries(results: list[Result]) -> list[dict[str, Any]]:
    """Boards with more than one result for the same package, their attempts in order."""
    by: dict[tuple[str, str], list[Result]] = defaultdict(list)
    for r in results:
        by[(r.board, r.package_id)].append(r)
    out = []
    for (board, _), rs in sorted(by.items()):
        if len(rs) < 2:
            continue
        out.append({"board": board, "package": rs[0].package, "attempts": len(rs),
                    "statuses": [r.status for r in rs],
                    "stations": sorted({r.station for r in rs}),
                    "runs": [r.run_id for r in rs], "final": rs[-1].status,
                    "first": rs[0].started.isoformat(), "last": rs[-1].started.isoformat(),
                    "reasons": [r.reason for r in rs if r.status != PASS]})
    return out


def aggregate(data: FactoryData) -> dict[str, Any]:
    res = with_conflicts(data.results)
    return {
        "schema": "fpgaprint-factory/1",
        "database": data.url,
        "since": data.since.isoformat() if data.since else None,
        "generated": data.generated,
        "total": _yield(res),
        "not_passed": not_passed(res),
        "serial_conflicts": conflict_list(res),
        "stations": _group(res, lambda r: r.station),
        "packages": _group(res, lambda r: r.package),
        "days": _group(res, lambda r: r.day),
        "trust": _group(res, lambda r: r.trust or "unknown"),
        "station_day": _group(res, lambda r: f"{r.station} {r.day}"),
        "runs": data.runs,
        "causes": causes(res),
        "vectors": data.vectors[:TOP_VECTORS],
        "vectors_total": len(data.vectors),
        "retries": retries(res),
    }


# ------------------------------------------------------------------------------ outputs

def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f} %"


def yield_status(y: float | None) -> str | None:
    """The verdict colour of a yield: PASS's from GOOD_YIELD on, NO_VERDICT's from LOW_YIELD,
    FAIL's below (never green below GOOD_YIELD)."""
    if y is None:
        return None
    return PASS if y >= GOOD_YIELD else NO_VERDICT if y >= LOW_YIELD else FAIL


NOT_PASSED_COLS = ["board", "package", "last result", "cause", "station", "run", "answered",
                   "trust", "results"]


def _not_passed_rows(doc: dict[str, Any]) -> list[list[str]]:
    return [[b["board"], b["package"], b["status"], b["cause"], b["station"], str(b["run"]),
             b["answered"], b["trust"], str(b["attempts"])] for b in doc["not_passed"]]


def _yield_rows(groups: dict[str, dict[str, Any]]) -> list[list[str]]:
    return [[k, str(g["boards"]), str(g["results"]), str(g[PASS]), str(g[FAIL]),
             str(g[NO_VERDICT]), _pct(g["first_pass_yield"]), _pct(g["final_yield"])]
            for k, g in groups.items()]


CONFLICT_COLS = ["serial", "run", "station", "ports", "their own verdicts"]


def _conflict_rows(doc: dict[str, Any]) -> list[list[str]]:
    return [[c["serial"], str(c["run"]), c["station"], ", ".join(c["ports"]),
             ", ".join(c["verdicts"])] for c in doc["serial_conflicts"]]


YIELD_COLS = ["boards", "results", "PASS", "FAIL", "NO_VERDICT", "first-pass yield",
              "final yield"]
VECTOR_COLS = ["package", "vector", "raw ≠ golden", "label ≠ expected", "boards"]


def _vector_rows(doc: dict[str, Any]) -> list[list[str]]:
    return [[v["package"], str(v["vector"]), str(v["exact_failed"]), str(v["label_failed"]),
             str(v["boards"])] for v in doc["vectors"]]


def markdown(doc: dict[str, Any]) -> str:
    def table(head: list[str], rows: list[list[str]]) -> list[str]:
        if not rows:
            return ["(none)", ""]
        return (["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                + ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
                + [""])

    t = doc["total"]
    lines = ["# Factory acceptance report", "",
             f"Database {doc['database']}" + (f", results since {doc['since']}"
                                              if doc["since"] else "") + f"; generated "
             f"{doc['generated']}.", "",
             f"{t['boards']} boards, {t['results']} results: first-pass yield "
             f"{_pct(t['first_pass_yield']) or 'n/a'}, final yield "
             f"{_pct(t['final_yield']) or 'n/a'}.", ""]
    lines += [f"## Boards that have not passed ({len(doc['not_passed'])})", ""]
    lines += table(NOT_PASSED_COLS, _not_passed_rows(doc))
    if doc["serial_conflicts"]:
        lines += [f"## Serials reported by two or more boards in one run "
                  f"({len(doc['serial_conflicts'])})", ""]
        lines += table(CONFLICT_COLS, _conflict_rows(doc))
    for title, key, first in (("Yield per station", "stations", "station"),
                              ("Yield per package", "packages", "package"),
                              ("Yield per day (UTC)", "days", "day"),
                              ("Yield per trust", "trust", "trust")):
        lines += [f"## {title}", ""] + table([first] + YIELD_COLS, _yield_rows(doc[key]))
    c = doc["causes"]
    lines += ["## Failure causes", "", "### Checks that did not pass", ""]
    lines += table(["check", "FAIL", "NO_VERDICT"],
                   [[k, str(v[FAIL]), str(v[NO_VERDICT])] for k, v in c["checks"].items()])
    lines += ["### Link errors (NO_VERDICT)", ""]
    lines += table(["error", "results"], [[k, str(v)] for k, v in c["link_errors"].items()])
    lines += [f"### Failing vectors (top {TOP_VECTORS} of {doc['vectors_total']}, answered "
              "vectors only)", ""]
    lines += table(VECTOR_COLS, _vector_rows(doc))
    lines += ["## Boards that needed retries", ""]
    lines += table(["board", "package", "attempts", "results in order", "stations", "final"],
                   [[r["board"], r["package"], str(r["attempts"]), " → ".join(r["statuses"]),
                     ", ".join(r["stations"]), r["final"]] for r in doc["retries"]])
    return "\n".join(lines)


def plots(doc: dict[str, Any]) -> dict[str, str]:
    """Base64 PNGs (keys of CAPTIONS) in the acceptance report's palette. Their labels quote
    stations, packages and link errors (board text) as they are (`reports.plain_plots`)."""
    from fpgaprint.harness.reports import plain_plots

    with plain_plots():
        return _plots(doc)


def _plots(doc: dict[str, Any]) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import numpy as np
    from matplotlib.figure import Figure

    from fpgaprint.harness.reports import COLORS, _png

    out: dict[str, str] = {}
    legend = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "frameon": False,
              "fontsize": 8}

    def yield_bars(groups: dict[str, dict], title: str, xlabel: str) -> str:
        names = list(groups)
        x = np.arange(len(names))
        fig = Figure(figsize=(max(5.0, 0.9 * len(names) + 3.5), 3.6), layout="constrained")
        ax = fig.subplots()
        first = [100 * (g["first_pass_yield"] or 0) for g in groups.values()]
        final = [100 * (g["final_yield"] or 0) for g in groups.values()]
        ax.bar(x - 0.2, first, width=0.4, color="#56B4E9", label="first-pass yield")
        ax.bar(x + 0.2, final, width=0.4, label="final yield",
               color=[COLORS[yield_status(g["final_yield"]) or PASS] for g in groups.values()])
        ax.axhline(100 * GOOD_YIELD, color="black", ls="--", lw=0.8)
        for i, g in enumerate(groups.values()):
            ax.text(i, 103, f"{g['boards']} boards", ha="center", fontsize=7)
        ax.set_xticks(x, names, rotation=30 if len(names) > 3 else 0,
                      ha="right" if len(names) > 3 else "center", fontsize=8)
        ax.set_ylim(0, 112)
        ax.set_ylabel("yield (% of boards)")
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        ax.legend(**legend)
        return _png(fig)

    if doc["stations"]:
        out["stations"] = yield_bars(doc["stations"], TITLES["stations"], "station")
    if doc["days"]:
        out["days"] = yield_bars(doc["days"], TITLES["days"], "day (UTC)")
    c = doc["causes"]
    labels = [f"{k}: FAIL" for k, v in c["checks"].items() if v[FAIL]] + \
             [f"{k}: no verdict" for k, v in c["checks"].items() if v[NO_VERDICT]] + \
             [f"link: {k}" for k in c["link_errors"]]
    counts = [v[FAIL] for v in c["checks"].values() if v[FAIL]] + \
             [v[NO_VERDICT] for v in c["checks"].values() if v[NO_VERDICT]] + \
             list(c["link_errors"].values())
    colors = [COLORS[FAIL]] * sum(1 for v in c["checks"].values() if v[FAIL]) + \
             [COLORS[NO_VERDICT]] * (len(labels) - sum(1 for v in c["checks"].values()
                                                       if v[FAIL]))
    if labels:
        fig = Figure(figsize=(8, 1.4 + 0.35 * len(labels)), layout="constrained")
        ax = fig.subplots()
        y = np.arange(len(labels))
        ax.barh(y, counts, color=colors)
        ax.set_yticks(y, [lab[:60] for lab in labels], fontsize=8)
        ax.invert_yaxis()
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("board results")
        ax.set_title(TITLES["causes"])
        out["causes"] = _png(fig)
    if doc["vectors"]:
        vs = doc["vectors"]
        names = [f"{v['package'].split()[0]} #{v['vector']}" for v in vs]
        x = np.arange(len(vs))
        fig = Figure(figsize=(max(5.0, 0.45 * len(vs) + 3.5), 3.6), layout="constrained")
        ax = fig.subplots()
        bottom = np.zeros(len(vs))
        for key, label, color in (("exact_failed", "raw output ≠ golden", "#D55E00"),
                                  ("label_failed", "label ≠ expected", "#CC79A7")):
            vals = np.array([v[key] for v in vs], dtype=float)
            ax.bar(x, vals, bottom=bottom, color=color, label=label)
            bottom += vals
        ax.set_xticks(x, names, rotation=60, ha="right", fontsize=7)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("package and vector index")
        ax.set_ylabel("board results")
        ax.set_title(TITLES["vectors"])
        ax.legend(**legend)
        out["vectors"] = _png(fig)
    return out


TITLES = {"stations": "Yield per station", "days": "Yield per day",
          "causes": "Why boards did not pass", "vectors": "Vectors that failed most often"}
CAPTIONS = {
    "stations": "Share of boards whose first result at the station was PASS (first-pass "
                "yield) and whose last result was PASS (final yield); the number of boards "
                "tested is above each pair. A final-yield bar is green from 95 %, orange from "
                "80 %, red below (dashed line: 95 %).",
    "days": "The same yields per day (UTC) over every station.",
    "causes": "Board results per cause: a check that failed (red), a check that reached no "
              "verdict or a link error (orange).",
    "vectors": "The self-test vectors that failed most often, per package: raw output "
               "different from the golden model's or label different from the expected one, "
               "counted over board results; unanswered vectors are a link matter, not counted.",
}


def html_page(doc: dict[str, Any]) -> str:
    from fpgaprint.harness.reports import COLORS

    e = html.escape
    imgs = "".join(
        f"<figure><img alt='{e(TITLES[k])}' src='data:image/png;base64,{v}'>"
        f"<figcaption>Figure {i}. {e(CAPTIONS[k])}</figcaption></figure>"
        for i, (k, v) in enumerate(plots(doc).items(), 1))

    def table(head: list[str], rows: list[list[str]]) -> str:
        if not rows:
            return "<p>(none)</p>"
        return ("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>"
                          for r in rows) + "</table>")

    t = doc["total"]
    c = doc["causes"]
    sections = [f"<h2>Boards that have not passed ({len(doc['not_passed'])})</h2>"
                + table(NOT_PASSED_COLS, _not_passed_rows(doc))]
    if doc["serial_conflicts"]:
        sections.append(f"<h2>Serials reported by two or more boards in one run "
                        f"({len(doc['serial_conflicts'])})</h2>"
                        + table(CONFLICT_COLS, _conflict_rows(doc)))
    for title, key, first in (("Yield per station", "stations", "station"),
                              ("Yield per package", "packages", "package"),
                              ("Yield per day (UTC)", "days", "day"),
                              ("Yield per station and day", "station_day", "station, day"),
                              ("Yield per trust", "trust", "trust")):
        sections.append(f"<h2>{e(title)}</h2>" + table([first] + YIELD_COLS,
                                                        _yield_rows(doc[key])))
    sections.append("<h2>Failure causes</h2><h3>Checks that did not pass</h3>" + table(
        ["check", "FAIL", "NO_VERDICT"],
        [[k, str(v[FAIL]), str(v[NO_VERDICT])] for k, v in c["checks"].items()]))
    sections.append("<h3>Link errors (NO_VERDICT)</h3>" + table(
        ["error", "results"], [[k, str(v)] for k, v in c["link_errors"].items()]))
    sections.append(f"<h3>Failing vectors (top {TOP_VECTORS} of {doc['vectors_total']}, "
                    "answered vectors only)</h3>" + table(VECTOR_COLS, _vector_rows(doc)))
    sections.append("<h2>Boards that needed retries</h2>" + table(
        ["board", "package", "attempts", "results in order", "stations", "final"],
        [[r["board"], r["package"], str(r["attempts"]), " → ".join(r["statuses"]),
          ", ".join(r["stations"]), r["final"]] for r in doc["retries"]]))
    since = f", results since {e(doc['since'])}" if doc["since"] else ""

    def coloured(key: str) -> str:
        return (f"<b class='{yield_status(t[key]) or ''}'>{e(_pct(t[key]) or 'n/a')}</b>")

    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>fpgaprint factory report</title>
<style>
body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse;margin-bottom:1em}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}
figure{{display:inline-block;vertical-align:top;max-width:48em;margin:1em}}
figcaption{{font-size:90%;color:#333}} .PASS{{color:{COLORS[PASS]}}}
.FAIL{{color:{COLORS[FAIL]}}} .NO_VERDICT{{color:{COLORS[NO_VERDICT]}}}
</style></head><body>
<h1>Factory acceptance report</h1>
<p>Database {e(doc['database'])}{since}; generated {e(doc['generated'])}.</p>
<p>{t['boards']} boards, {t['results']} results: first-pass yield {coloured('first_pass_yield')},
final yield {coloured('final_yield')}.</p>
{imgs}
{''.join(sections)}
</body></html>
"""


def write_report(doc: dict[str, Any], out: str | Path) -> list[Path]:
    from fpgaprint.core.atomic import write_atomic, write_json

    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "factory.json", doc, sort_keys=False)
        write_atomic(out / "factory.md", markdown(doc) + "\n")
        write_atomic(out / "factory.html", html_page(doc).encode("utf-8"))
    except OSError as e:
        raise InputError(f"--out {out}: cannot write the report ({e.strerror or e})") from None
    return [out / "factory.json", out / "factory.md", out / "factory.html"]


def summary_table(doc: dict[str, Any]):
    """A rich table: yield per station, each yield in its verdict colour."""
    from rich.table import Table
    from rich.text import Text

    from fpgaprint.harness.reports import STYLE

    t = Table(title="yield per station", header_style="bold")
    for col in ["station"] + YIELD_COLS:
        t.add_column(col)
    for row, g in zip(_yield_rows(doc["stations"]), doc["stations"].values()):
        ys = [Text(cell, STYLE.get(yield_status(g[k]) or "", "")) for cell, k in
              zip(row[-2:], ("first_pass_yield", "final_yield"))]
        t.add_row(*(Text(cell) for cell in row[:-2]), *ys)  # a station name is plain text
    return t


def not_passed_lines(doc: dict[str, Any]) -> list[Any]:
    """One line per board that has not passed (printed whole, never cut to the terminal), as
    rich Text: a serial or cause is printed as it is, never as markup or an emoji code."""
    from fpgaprint.harness.reports import plain

    return [plain(f"not passed: {b['board']}: {b['status']} at {b['station']} (run {b['run']}, "
                  f"{b['answered']} answered, trust {b['trust']}): {b['cause']}")
            for b in doc["not_passed"]]
