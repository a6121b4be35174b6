"""Acceptance results database (SQLAlchemy 2 ORM): runs, one row per board, one per vector.

Any SQLAlchemy URL works; tested with SQLite (`sqlite:///accept.db`, the default) and
PostgreSQL through psycopg 3 (`postgresql+psycopg://user:pw@host/db`). Each board's result
and its vector rows are written in one transaction, so a result is either fully committed or
absent, and a killed run loses nothing that was committed.

A locked or unreachable database is retried with backoff for `wait` seconds; a result that
still cannot be committed goes to a local `Journal` (JSON lines, fsynced), which `replay`
commits at the next start. A result the database refuses (its schema, a value, another result
for the same board of the run), or that cannot be written for any other reason, is not
retried in that run and never dropped: it stays in the journal marked with why, and each later
start tries it again (a database fixed since then takes it). Processes that share a journal
lock it (`Journal.locked`), so none loses an entry another one appends.

A run is claimed by the one process that works on it (`claim`, a conditional UPDATE that works
the same on SQLite and PostgreSQL), so two `accept --resume` of one run cannot both verify it.

Schema: tables are created when missing; the nullable columns added since the first version
(`ADDED_COLUMNS`) are added to an older database on open, and its older rows read as unknown
(NULL). A database missing any other column is refused before any board is verified. Text
columns take their lengths from what the host accepts of a board (`harness.commands`), so any
identity that passes the check fits; a column an earlier version made shorter is widened on
open (PostgreSQL), or the database is refused before any board is verified, naming the column.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    func,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DatabaseError,
    DBAPIError,
    IntegrityError,
    NoSuchModuleError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from fpgaprint.core.atomic import write_atomic
from fpgaprint.core.cliopts import MAX_PORT
from fpgaprint.core.errors import InputError
from fpgaprint.core.package import MAX_NAME
from fpgaprint.harness.commands import HASH_HEX, MAX_TEXT
from fpgaprint.harness.verdict import NO_VERDICT, BoardOutcome, overall

MAX_STATION = 128  # characters of a station name (--station)

log = logging.getLogger("fpgaprint.accept")

DEFAULT_URL = "sqlite:///accept.db"
RUNNING = "RUNNING"
LOCK_WAIT = 30.0  # seconds a locked or unreachable database is retried
CLAIM_LEASE = 120.0  # seconds without a heartbeat after which another host may take a run
HEARTBEAT = 15.0  # seconds between the heartbeats of a process working on a run
_PG_TRANSIENT = {"55P03", "40001", "40P01", "57014"}  # lock, serialization, deadlock, timeout
_PG_PERMANENT = ("22", "23", "42")  # SQLSTATE classes: data, integrity, syntax/undefined names
_SQLITE_PERMANENT = ("no such column", "no such table", "has no column named",
                     "constraint failed", "datatype mismatch")
T = TypeVar("T")


class DatabaseUnavailable(InputError):
    """The database stayed locked or unreachable for the whole wait."""


class ResultRejected(InputError):
    """The database refuses a result for good: retrying cannot commit it."""


class RunBusy(InputError):
    """Another live process works on the run."""


def _reason(e: BaseException) -> str:
    """One line of the driver's message (never the SQL statement)."""
    orig = getattr(e, "orig", None) or e
    text = str(orig).strip().splitlines()
    return (text[0] if text else type(orig).__name__)[:200]


def _permanent(e: BaseException) -> bool:
    """An error no retry can cure: the schema, a constraint, a value the column refuses."""
    if isinstance(e, IntegrityError):
        return True
    orig = getattr(e, "orig", None)
    code = str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "")
    text = _reason(e).lower()
    return code[:2] in _PG_PERMANENT or any(m in text for m in _SQLITE_PERMANENT)


def _locked(e: BaseException) -> bool:
    orig = getattr(e, "orig", None)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    text = _reason(e).lower()
    return code in _PG_TRANSIENT or "locked" in text or "busy" in text


SCHEMA_LOCK = 0x6670_6770  # the advisory lock under which a station creates the tables


# Nullable columns added after the first version of the schema, per table: added to an
# older database when it is opened; its older rows hold NULL (read as unknown).
ADDED_COLUMNS = {"accept_runs": ("claim", "claim_seen"),
                 "accept_results": ("trust", "fingerprint_only")}


def _create_tables(engine: Engine, lock_wait: float = LOCK_WAIT
                   ) -> list[tuple[str, str, int, int, str | None]]:
    """Create missing tables, add the columns of `ADDED_COLUMNS` an older database lacks and,
    on PostgreSQL, widen the text columns it holds shorter than this version writes (see
    `short_columns`). On PostgreSQL under an advisory lock: stations that start at once into a
    new database would otherwise collide in the catalog (CREATE TABLE IF NOT EXISTS is not
    atomic there). Returns the columns still shorter than this version writes (`short_columns`,
    each with the server's reason when widening it failed, None where it was not tried), for
    the refusal; a lock held on a table is an OperationalError, and the caller retries."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCHEMA_LOCK})
        Base.metadata.create_all(conn)
        for table, names in ADDED_COLUMNS.items():
            have = {c["name"] for c in inspect(conn).get_columns(table)}
            for name in names:
                if name not in have:
                    col = Base.metadata.tables[table].c[name]
                    kind = col.type.compile(dialect=conn.dialect)
                    try:
                        conn.execute(text(f"ALTER TABLE {table} ADD COLUMN {name} {kind}"))
                    except OperationalError as e:  # SQLite: another station added it first
                        if "duplicate column" not in _reason(e):
                            raise
        short = short_columns(conn)
        if conn.dialect.name != "postgresql":
            return [(*c, None) for c in short]
        failed = []
        if short:  # wait this long for the table lock, then give it back and retry
            ms = max(100, int(min(lock_wait, 5.0) * 1000))
            conn.execute(text(f"SET LOCAL lock_timeout = {ms}"))
        for table, name, have, want in short:
            try:
                with conn.begin_nested():  # a failure leaves the rest of the transaction
                    conn.execute(text(f"ALTER TABLE {table} ALTER COLUMN {name} "
                                      f"TYPE VARCHAR({want})"))
                log.info("database: %s.%s widened to %d characters", table, name, want)
            except DBAPIError as e:
                if _locked(e):
                    raise
                failed.append((table, name, have, want, _reason(e)))
    return failed


def short_columns(conn: Any) -> list[tuple[str, str, int, int]]:
    """(table, column, length the database holds, length this version writes) of each text
    column the database keeps shorter than this version's schema: one an earlier version
    created. None on SQLite, which does not enforce a declared length."""
    if conn.dialect.name == "sqlite":
        return []
    insp = inspect(conn)
    out = []
    for table in Base.metadata.sorted_tables:
        if not insp.has_table(table.name):
            continue
        stored = {c["name"]: c["type"] for c in insp.get_columns(table.name)}
        for col in table.columns:
            want = col.type.length if isinstance(col.type, String) else None
            have = getattr(stored.get(col.name), "length", None)
            if want and have and have < want:
                out.append((table.name, col.name, have, want))
    return out


def schema_mismatch(engine: Engine) -> str | None:
    """What the database lacks that this version reads and writes (a renamed or removed
    column), or None."""
    insp = inspect(engine)
    for table in Base.metadata.sorted_tables:
        if not insp.has_table(table.name):
            return f"no table {table.name}"
        have = {c["name"] for c in insp.get_columns(table.name)}
        missing = [c.name for c in table.columns if c.name not in have]
        if missing:
            return f"table {table.name} has no column {', '.join(missing)}"
    return None


def _token() -> str:
    """Who claims a run: host, process id and a random part (pids are reused)."""
    return f"{socket.gethostname()[:120]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _claimer(claim: str) -> tuple[str, int | None]:
    """(host, pid) of a claim token."""
    parts = claim.rsplit(":", 2)
    try:
        return parts[0], int(parts[1])
    except (IndexError, ValueError):
        return parts[0], None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_is_stale(claim: str | None, seen: dt.datetime | None, now: dt.datetime) -> bool:
    """A claim nobody holds any more: none, no heartbeat for CLAIM_LEASE seconds, or a process
    of this host that has ended."""
    if claim is None:
        return True
    seen = None if seen is None else (seen if seen.tzinfo else seen.replace(
        tzinfo=dt.timezone.utc))
    if seen is None or (now - seen).total_seconds() > CLAIM_LEASE:
        return True
    host, pid = _claimer(claim)
    return host == socket.gethostname()[:120] and pid is not None and not _alive(pid)


def _utc(ts: float | None = None) -> dt.datetime:
    utc = dt.timezone.utc
    return dt.datetime.fromtimestamp(ts, utc) if ts else dt.datetime.now(utc)


class Base(DeclarativeBase):
    pass


class Run(Base):
    """One acceptance run of a station over several boards."""

    __tablename__ = "accept_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    station: Mapped[str] = mapped_column(String(MAX_STATION))
    package_id: Mapped[str] = mapped_column(String(HASH_HEX), index=True)
    package_name: Mapped[str] = mapped_column(String(MAX_NAME), default="")
    ports: Mapped[list] = mapped_column(JSON)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), default=RUNNING)
    claim: Mapped[str | None] = mapped_column(String(200))  # who works on it (host:pid:nonce)
    claim_seen: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    results: Mapped[list["BoardResult"]] = relationship(
        back_populates="run", order_by="BoardResult.id"
    )


class BoardResult(Base):
    """The verdict of one board in a run, with the identity the board reported."""

    __tablename__ = "accept_results"
    __table_args__ = (UniqueConstraint("run_id", "port"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("accept_runs.id"), index=True)
    port: Mapped[str] = mapped_column(String(MAX_PORT))
    # what the board reported, as the host's identity check accepts it (harness.commands)
    serial: Mapped[str | None] = mapped_column(String(MAX_TEXT), index=True)
    board: Mapped[str | None] = mapped_column(String(MAX_TEXT))
    reported_package_id: Mapped[str | None] = mapped_column(String(HASH_HEX))
    bitstream_sha256: Mapped[str | None] = mapped_column(String(HASH_HEX))
    backend: Mapped[str | None] = mapped_column(String(MAX_TEXT))
    protocol: Mapped[str | None] = mapped_column(String(32))
    mode: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    n_vectors: Mapped[int] = mapped_column(Integer)
    n_answered: Mapped[int] = mapped_column(Integer)
    exact_failed: Mapped[int | None] = mapped_column(Integer)
    match_rate: Mapped[float | None] = mapped_column(Float)
    duration_s: Mapped[float] = mapped_column(Float)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    committed_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    checks: Mapped[list] = mapped_column(JSON)
    identity: Mapped[dict] = mapped_column(JSON)
    board_selftest: Mapped[dict | None] = mapped_column(JSON)
    trust: Mapped[str | None] = mapped_column(String(16))  # pinned/unpinned/unsigned; NULL unknown
    # verified under a policy without integrity check (--allow-fingerprint-only); NULL unknown
    fingerprint_only: Mapped[bool | None] = mapped_column(Boolean)

    run: Mapped[Run] = relationship(back_populates="results")
    vectors: Mapped[list["VectorRow"]] = relationship(
        back_populates="result", order_by="VectorRow.index", cascade="all, delete-orphan"
    )


class VectorRow(Base):
    """One vector's answer and per-check result for a board."""

    __tablename__ = "accept_vectors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("accept_results.id"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    answered: Mapped[bool] = mapped_column(Boolean)
    label: Mapped[int | None] = mapped_column(Integer)
    expected_label: Mapped[int] = mapped_column(Integer)
    golden_label: Mapped[int | None] = mapped_column(Integer)
    exact: Mapped[bool | None] = mapped_column(Boolean)
    raw_diff: Mapped[int | None] = mapped_column(Integer)
    fingerprint: Mapped[bool | None] = mapped_column(Boolean)

    result: Mapped[BoardResult] = relationship(back_populates="vectors")


def _str(v: Any) -> str | None:
    return None if v is None else str(v)


class ResultStore:
    """Opens (and creates) the results database; commits runs and board results, retrying a
    locked database with backoff for `wait` seconds."""

    def __init__(self, url: str = DEFAULT_URL, wait: float = LOCK_WAIT) -> None:
        self.wait = wait
        self.token = _token()
        self._lock = threading.Lock()
        try:
            parsed = make_url(url)
            # SQLite's own wait for a lock, each try: never longer than the whole wait
            args = {"timeout": min(1.0, wait)} if parsed.get_backend_name() == "sqlite" else {}
            self.engine: Engine = create_engine(parsed, pool_pre_ping=True, connect_args=args)
        except (ArgumentError, NoSuchModuleError, ValueError) as e:
            raise InputError(f"--db {url!r}: not a usable database URL ({e})") from None
        self.url = parsed.render_as_string(hide_password=True)
        try:
            short = self._retry("open", lambda: _create_tables(self.engine, wait), _locked)
        except OperationalError as e:
            raise InputError(f"--db {self.url}: cannot open the database ({_reason(e)})") \
                from None
        except DatabaseError as e:
            raise InputError(f"--db {self.url}: not a database ({_reason(e)})") from None
        wrong = self._retry("read the schema", lambda: schema_mismatch(self.engine), _locked)
        if wrong:
            self.engine.dispose()
            raise InputError(f"--db {self.url}: {wrong}: not the schema of fpgaprint's results "
                             "(a column renamed or removed?); nothing was verified")
        if short:
            self.engine.dispose()
            cols = ", ".join(f"{t}.{c} ({have})" for t, c, have, _, _ in short)
            whys = sorted({why for *_, why in short if why})
            fix = "; ".join(f"ALTER TABLE {t} ALTER COLUMN {c} TYPE VARCHAR({want})"
                            for t, c, _, want, _ in short)
            raise InputError(
                f"--db {self.url}: columns an earlier version made shorter than this version "
                f"records: {cols}" + (f"; widening them failed: {'; '.join(whys)}" if whys
                                      else "")
                + f"; nothing was verified: widen them as the tables' owner: {fix}")

    def close(self) -> None:
        """Release the runs this store claimed and did not finish; close the connections."""
        try:
            with self._lock, Session(self.engine) as s, s.begin():
                s.execute(update(Run).where(Run.claim == self.token).values(claim=None))
        except SQLAlchemyError as e:  # the lease lets another host take the run later
            log.info("database %s: claims not released: %s", self.url, _reason(e))
        self.engine.dispose()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _retry(self, what: str, fn: Callable[[], T],
               transient: Callable[[BaseException], bool] = lambda e: True) -> T:
        """`fn()`, retried with exponential backoff while it fails with a transient
        OperationalError, for at most `wait` seconds; then DatabaseUnavailable."""
        end = time.monotonic() + self.wait
        delay = 0.05
        while True:
            try:
                with self._lock:
                    return fn()
            except OperationalError as e:
                if not transient(e):
                    raise
                if time.monotonic() + delay > end:
                    raise DatabaseUnavailable(
                        f"database {self.url}: cannot {what}: {_reason(e)} (retried for "
                        f"{self.wait:g} s)") from None
                log.info("database %s: %s, retrying in %.2f s", self.url, _reason(e), delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def start_run(self, station: str, package_id: str, package_name: str, ports: list[str]) -> int:
        def start() -> int:
            with Session(self.engine) as s, s.begin():
                now = _utc()
                run = Run(
                    station=station, package_id=package_id, package_name=package_name,
                    ports=list(ports), started_at=now, status=RUNNING, claim=self.token,
                    claim_seen=now,
                )
                s.add(run)
                s.flush()
                return run.id

        return self._retry("start a run", start)

    def record(self, run_id: int, o: BoardOutcome) -> int:
        """Commit one board's result with all its vector rows in a single transaction."""
        def commit() -> int:
            with Session(self.engine) as s, s.begin():
                row = _result_row(run_id, o)
                s.add(row)
                s.flush()
                return row.id

        try:
            return self._retry(f"commit the result of {o.port}", commit,
                               lambda e: not _permanent(e))
        except DatabaseUnavailable:
            raise
        except SQLAlchemyError as e:
            raise ResultRejected(f"database {self.url}: cannot commit the result of {o.port} "
                                 f"({_reason(e)})") from None
        except Exception as e:  # whatever else keeps it out: never a result gone unsaid
            raise ResultRejected(f"database {self.url}: cannot commit the result of {o.port} "
                                 f"({type(e).__name__}: {str(e)[:200]})") from None

    def claim(self, run_id: int) -> None:
        """Make this process the one that works on `run_id` (RunBusy if a live one does).
        A compare-and-set on the claim column: of two processes, one UPDATE matches."""
        def take() -> None:
            with Session(self.engine) as s, s.begin():
                run = s.get(Run, run_id)
                if run is None:
                    raise InputError(f"database {self.url}: no run {run_id}")
                now = _utc()
                held, seen = run.claim, run.claim_seen
                if held != self.token and not claim_is_stale(held, seen, now):
                    raise RunBusy(self._busy(run_id, held, seen, now))
                same = Run.claim.is_(None) if held is None else Run.claim == held
                won = s.execute(update(Run).where(Run.id == run_id, same)
                                .values(claim=self.token, claim_seen=now)).rowcount
                if won != 1:
                    raise RunBusy(self._busy(run_id, None, None, now))

        self._retry(f"claim run {run_id}", take, _locked)

    def _busy(self, run_id: int, claim: str | None, seen: dt.datetime | None,
              now: dt.datetime) -> str:
        who = "another process"
        if claim:
            host, pid = _claimer(claim)
            who = f"{host} pid {pid}" if pid is not None else host
        ago = ""
        if seen is not None:
            seen = seen if seen.tzinfo else seen.replace(tzinfo=dt.timezone.utc)
            ago = f", last seen {max(0.0, (now - seen).total_seconds()):.0f} s ago"
        return (f"--resume {run_id}: run {run_id} is being resumed by {who}{ago}; try again "
                f"when it has finished (or {CLAIM_LEASE:g} s after its last sign of life)")

    def heartbeat(self, run_id: int) -> None:
        """Say this process still works on `run_id` (one try: a missed beat is harmless)."""
        try:
            with self._lock, Session(self.engine) as s, s.begin():
                s.execute(update(Run).where(Run.id == run_id, Run.claim == self.token)
                          .values(claim_seen=_utc()))
        except SQLAlchemyError as e:
            log.info("database %s: heartbeat of run %d missed: %s", self.url, run_id,
                     _reason(e))

    def finish_run(self, run_id: int, status: str) -> None:
        def finish() -> None:
            with Session(self.engine) as s, s.begin():
                run = s.get(Run, run_id)
                if run is None:
                    raise InputError(f"database {self.url}: no run {run_id}")
                run.status = status
                run.finished_at = _utc()
                run.claim = None

        self._retry(f"finish run {run_id}", finish)

    def set_ports(self, run_id: int, ports: list[str]) -> None:
        def update() -> None:
            with Session(self.engine) as s, s.begin():
                s.get(Run, run_id).ports = list(ports)

        self._retry(f"update run {run_id}", update)

    def run(self, run_id: int) -> dict[str, Any]:
        """A run with its results (as dicts) for reports and checks."""
        def read() -> dict[str, Any]:
            with Session(self.engine) as s:
                run = s.get(Run, run_id)
                if run is None:
                    raise InputError(f"database {self.url}: no run {run_id}")
                counts = dict(s.execute(
                    select(VectorRow.result_id, func.count())
                    .join(BoardResult, VectorRow.result_id == BoardResult.id)
                    .where(BoardResult.run_id == run_id)
                    .group_by(VectorRow.result_id)).all())
                return {
                    "id": run.id, "station": run.station, "package_id": run.package_id,
                    "status": run.status, "ports": run.ports,
                    "results": [
                        {
                            "port": r.port, "serial": r.serial, "status": r.status,
                            "mode": r.mode,
                            "n_vectors": r.n_vectors, "n_answered": r.n_answered,
                            "vector_rows": counts.get(r.id, 0), "match_rate": r.match_rate,
                            "exact_failed": r.exact_failed, "reason": r.reason,
                            "trust": r.trust, "fingerprint_only": r.fingerprint_only,
                        }
                        for r in run.results
                    ],
                }

        return self._retry(f"read run {run_id}", read)

    def committed_ports(self, run_id: int) -> set[str]:
        """The ports of `run_id` that have a committed result."""
        def read() -> set[str]:
            with Session(self.engine) as s:
                if s.get(Run, run_id) is None:
                    raise InputError(f"database {self.url}: no run {run_id}")
                return set(s.scalars(select(BoardResult.port)
                                     .where(BoardResult.run_id == run_id)))

        return self._retry(f"read run {run_id}", read)

    def run_status(self, run_id: int) -> str:
        """The overall status of a run from the results committed for its ports (a port
        without a result counts as NO_VERDICT)."""
        run = self.run(run_id)
        got = {r["port"]: r["status"] for r in run["results"]}
        return overall([got.get(p, NO_VERDICT) for p in run["ports"]])

    def last_run_id(self) -> int | None:
        with Session(self.engine) as s:
            return s.scalar(select(func.max(Run.id)))

    def replay(self, journal: "Journal") -> "Replay":
        """Commit what `journal` spooled for this database. An entry the database is still
        unavailable for stays; one it refuses stays too, marked `rejected` with why (reported
        once, then kept, counted and tried again at each replay: a database fixed since, e.g.
        a column widened, takes it); a result already committed for the same board counts as
        committed only when it is the same result.

        The journal is read, the entries are committed without holding its lock (that can
        take `wait` seconds per entry), and then, under the lock, only the entries handled
        are removed or marked (`Journal.settle`): what another process appended meanwhile is
        kept."""
        out = Replay()
        done: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
        for entry in journal.entries():
            if entry.get("db") != self.url:
                continue
            before = entry.get("rejected")
            try:
                why = self._replay_one(entry)
            except DatabaseUnavailable as e:
                out.waiting.append(str(e))
                continue
            except (InputError, SQLAlchemyError, KeyError, TypeError, ValueError,
                    AttributeError) as e:
                why = _reason(e) if isinstance(e, SQLAlchemyError) else str(e)
            if why is None:
                out.committed += 1
                done.append((entry, None))
            elif before:
                out.held += 1
                if why != before:
                    done.append((entry, {**entry, "rejected": why}))
            else:
                out.rejected.append(f"{_what(entry)}: {why}")
                done.append((entry, {**entry, "rejected": why}))
        journal.settle(done)
        return out

    def _replay_one(self, entry: dict[str, Any]) -> str | None:
        """Commit one journal entry; None when committed, else why it never can be."""
        run_id = int(entry["run_id"])
        if entry["kind"] == "finish":
            self.finish_run(run_id, str(entry["status"]))
            return None
        if entry["kind"] != "result":
            return f"unknown entry kind {entry['kind']!r}"
        o = BoardOutcome.from_dict(entry["outcome"])

        def existing() -> BoardResult | None:
            with Session(self.engine) as s:
                if s.get(Run, run_id) is None:
                    raise InputError(f"no run {run_id} in the database")
                return s.scalar(select(BoardResult).where(BoardResult.run_id == run_id,
                                                          BoardResult.port == o.port))

        row = self._retry(f"read run {run_id}", existing, _locked)
        if row is None:
            try:
                self.record(run_id, o)
                return None
            except ResultRejected:  # another process replaying the same journal was first?
                row = self._retry(f"read run {run_id}", existing, _locked)
                if row is None:
                    raise
        started = _utc(o.started).timestamp() if o.started else None
        have = row.started_at.replace(tzinfo=row.started_at.tzinfo or dt.timezone.utc)
        if row.status == o.status and started is not None \
                and abs(have.timestamp() - started) < 1e-3:
            return None  # committed before the journal was rewritten
        return (f"run {run_id} already has another result for {o.port} ({row.status}, "
                f"committed {have.isoformat(timespec='seconds')})")


@dataclass
class Replay:
    """What `ResultStore.replay` did with a journal."""

    committed: int = 0
    rejected: list[str] = field(default_factory=list)  # refused for good now: why, per entry
    held: int = 0  # refused before, still kept in the journal
    waiting: list[str] = field(default_factory=list)  # the database is still unavailable


def _what(entry: dict[str, Any]) -> str:
    """A journal entry in words: the result of PORT (STATUS) in run N, or the end of run N."""
    run = entry.get("run_id", "?")
    if entry.get("kind") == "result":
        o = entry.get("outcome") if isinstance(entry.get("outcome"), dict) else {}
        return f"the {o.get('status', '?')} result of {o.get('port', '?')} in run {run}"
    return f"the end of run {run}"


def _result_row(run_id: int, o: BoardOutcome) -> BoardResult:
    ident = o.identity
    checks = [] if o.verdict is None else o.verdict.to_dict()["checks"]
    row = BoardResult(
        run_id=run_id, port=o.port, serial=_str(ident.get("serial")),
        board=_str(ident.get("board")), reported_package_id=_str(ident.get("package_id")),
        bitstream_sha256=_str(ident.get("bitstream_sha256")),
        backend=_str(ident.get("backend")), protocol=_str(ident.get("protocol")),
        mode=o.mode, status=o.status, reason=o.reason, n_vectors=o.total,
        n_answered=o.answered, exact_failed=o.exact_failed, match_rate=o.match_rate,
        duration_s=o.duration_s, started_at=_utc(o.started), committed_at=_utc(),
        checks=checks, identity=dict(ident), board_selftest=o.board_selftest,
        trust=_str((o.trust or {}).get("trust")), fingerprint_only=o.fingerprint_only,
    )
    if o.verdict is not None:
        row.vectors = [
            VectorRow(
                index=v.index, answered=v.answered, label=v.label,
                expected_label=v.expected_label, golden_label=v.golden_label,
                exact=v.exact, raw_diff=v.raw_diff, fingerprint=v.fingerprint,
            )
            for v in o.verdict.vectors
        ]
    return row


class Journal:
    """Results (and run ends) that could not be committed yet: one JSON object per line,
    appended and fsynced, so a crash right after `append` keeps the entry.

    Several processes may share one journal (stations on one SQLite file, or on one PostgreSQL
    URL on one host): each append, and each change `replay` makes (`settle`), holds an
    exclusive lock (flock) on PATH.lock, a file beside the journal that is never replaced or
    removed; a read holds it shared. So no process rewrites the journal from a read that
    misses what another one appended, and none reads an entry half-written."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    @staticmethod
    def default_path(db_url: str) -> Path:
        """Next to a SQLite file (`accept.db.pending.jsonl`), else in the user's state folder."""
        url = make_url(db_url)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            return Path(f"{url.database}.pending.jsonl")
        state = Path(os.environ.get("XDG_STATE_HOME") or Path("~/.local/state").expanduser())
        digest = hashlib.sha256(url.render_as_string(hide_password=True).encode()).hexdigest()
        return state / "fpgaprint" / f"accept-{digest[:12]}.pending.jsonl"

    @contextlib.contextmanager
    def locked(self, shared: bool = False):
        """Hold the journal's lock (exclusive, or `shared` for a read). A reader that cannot
        create the lock file (a folder it may not write) reads without it."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            if not shared:
                raise
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def append(self, entry: dict[str, Any]) -> None:
        data = (json.dumps(entry, sort_keys=True, allow_nan=False, default=str) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.locked():  # taken before the journal is opened: `settle` may replace it
            created = not self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    data = b"\n" + data  # a line a crash cut short stays apart from this one
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:  # the new file's name is durable too
                _fsync_dir(self.path.parent)

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.locked(shared=True):
            lines = self._lines()
        out = []
        for n, (_, entry) in enumerate(lines, 1):
            if entry is None:  # a line cut by a crash while appending
                log.warning("%s:%d: unreadable journal line skipped", self.path, n)
            else:
                out.append(entry)
        return out

    def _lines(self) -> list[tuple[bytes, dict[str, Any] | None]]:
        """Each non-empty line as stored, with its entry (None when it is not one)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as e:
            raise InputError(f"--journal {self.path}: cannot read ({e.strerror})") from None
        out: list[tuple[bytes, dict[str, Any] | None]] = []
        for line in data.splitlines():
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            out.append((line, entry if isinstance(entry, dict) else None))
        return out

    def settle(self, done: list[tuple[dict[str, Any], dict[str, Any] | None]]) -> None:
        """Under the lock, replace each entry of `done` (as read earlier) by what became of it:
        None removes it (committed), an entry replaces it (marked). The journal is read again
        first: entries appended since, by any process, stay as they are, and so do unreadable
        lines and entries another replay changed meanwhile."""
        if not done:
            return
        todo: dict[str, list[dict[str, Any] | None]] = {}
        for before, after in done:
            todo.setdefault(_key(before), []).append(after)
        with self.locked():
            out, changed = [], False
            for line, entry in self._lines():
                afters = todo.get(_key(entry)) if entry is not None else None
                if not afters:
                    out.append(line + b"\n")
                    continue
                changed = True
                after = afters.pop(0)
                if after is not None:
                    out.append(_key(after).encode() + b"\n")
            if not changed:
                return
            if not out:
                self.path.unlink(missing_ok=True)
                return
            write_atomic(self.path, b"".join(out), sync=True)


def _key(entry: dict[str, Any]) -> str:
    """An entry as one journal line (without its newline), the same for equal entries."""
    return json.dumps(entry, sort_keys=True, default=str)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
