"""Acceptance results database (SQLAlchemy 2 ORM): runs, one row per board, one per vector.

Any SQLAlchemy URL works; tested with SQLite (`sqlite:///accept.db`, the default) and
PostgreSQL through psycopg 3 (`postgresql+psycopg://user:pw@host/db`). Each board's result
and its vector rows are written in one transaction, so a result is either fully committed or
absent, and a killed run loses nothing that was committed.

A locked or unreachable database is retried with backoff for `wait` seconds; a result that
still cannot be committed goes to a local `Journal` (JSON lines, fsynced), which `replay`
commits at the next start.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import threading
import time
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
    select,
    text,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DatabaseError,
    NoSuchModuleError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from fpgaprint.core.atomic import write_atomic
from fpgaprint.core.errors import InputError
from fpgaprint.harness.verdict import NO_VERDICT, BoardOutcome, overall

log = logging.getLogger("fpgaprint.accept")

DEFAULT_URL = "sqlite:///accept.db"
RUNNING = "RUNNING"
LOCK_WAIT = 30.0  # seconds a locked or unreachable database is retried
_PG_TRANSIENT = {"55P03", "40001", "40P01", "57014"}  # lock, serialization, deadlock, timeout
T = TypeVar("T")


class DatabaseUnavailable(InputError):
    """The database stayed locked or unreachable for the whole wait."""


def _reason(e: BaseException) -> str:
    """One line of the driver's message (never the SQL statement)."""
    orig = getattr(e, "orig", None) or e
    text = str(orig).strip().splitlines()
    return (text[0] if text else type(orig).__name__)[:200]


def _locked(e: BaseException) -> bool:
    orig = getattr(e, "orig", None)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    text = _reason(e).lower()
    return code in _PG_TRANSIENT or "locked" in text or "busy" in text


SCHEMA_LOCK = 0x6670_6770  # the advisory lock under which a station creates the tables


def _create_tables(engine: Engine) -> None:
    """Create missing tables. On PostgreSQL under an advisory lock: stations that start at
    once into a new database would otherwise collide in the catalog (CREATE TABLE IF NOT
    EXISTS is not atomic there)."""
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SCHEMA_LOCK})
        Base.metadata.create_all(conn)


def _utc(ts: float | None = None) -> dt.datetime:
    utc = dt.timezone.utc
    return dt.datetime.fromtimestamp(ts, utc) if ts else dt.datetime.now(utc)


class Base(DeclarativeBase):
    pass


class Run(Base):
    """One acceptance run of a station over several boards."""

    __tablename__ = "accept_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    station: Mapped[str] = mapped_column(String(128))
    package_id: Mapped[str] = mapped_column(String(64), index=True)
    package_name: Mapped[str] = mapped_column(String(256), default="")
    ports: Mapped[list] = mapped_column(JSON)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), default=RUNNING)

    results: Mapped[list["BoardResult"]] = relationship(
        back_populates="run", order_by="BoardResult.id"
    )


class BoardResult(Base):
    """The verdict of one board in a run, with the identity the board reported."""

    __tablename__ = "accept_results"
    __table_args__ = (UniqueConstraint("run_id", "port"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("accept_runs.id"), index=True)
    port: Mapped[str] = mapped_column(String(512))
    serial: Mapped[str | None] = mapped_column(String(128), index=True)
    board: Mapped[str | None] = mapped_column(String(128))
    reported_package_id: Mapped[str | None] = mapped_column(String(64))
    bitstream_sha256: Mapped[str | None] = mapped_column(String(64))
    backend: Mapped[str | None] = mapped_column(String(64))
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
        self._lock = threading.Lock()
        try:
            parsed = make_url(url)
            args = {"timeout": 1.0} if parsed.get_backend_name() == "sqlite" else {}
            self.engine: Engine = create_engine(parsed, pool_pre_ping=True, connect_args=args)
        except (ArgumentError, NoSuchModuleError, ValueError) as e:
            raise InputError(f"--db {url!r}: not a usable database URL ({e})") from None
        self.url = parsed.render_as_string(hide_password=True)
        try:
            self._retry("open", lambda: _create_tables(self.engine), _locked)
        except OperationalError as e:
            raise InputError(f"--db {self.url}: cannot open the database ({_reason(e)})") \
                from None
        except DatabaseError as e:
            raise InputError(f"--db {self.url}: not a database ({_reason(e)})") from None

    def close(self) -> None:
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
                run = Run(
                    station=station, package_id=package_id, package_name=package_name,
                    ports=list(ports), started_at=_utc(), status=RUNNING,
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
            return self._retry(f"commit the result of {o.port}", commit)
        except SQLAlchemyError as e:
            raise InputError(f"database {self.url}: cannot commit the result of {o.port} "
                             f"({_reason(e)})") from None

    def finish_run(self, run_id: int, status: str) -> None:
        def finish() -> None:
            with Session(self.engine) as s, s.begin():
                run = s.get(Run, run_id)
                if run is None:
                    raise InputError(f"database {self.url}: no run {run_id}")
                run.status = status
                run.finished_at = _utc()

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

    def replay(self, journal: "Journal") -> int:
        """Commit what `journal` spooled; entries that still fail stay in it. Returns how
        many were committed (a result already in the database counts as committed)."""
        entries = journal.entries()
        if not entries:
            return 0
        left = []
        done = 0
        for entry in entries:
            try:
                if entry.get("db") != self.url:
                    left.append(entry)
                    continue
                if entry["kind"] == "result":
                    o = BoardOutcome.from_dict(entry["outcome"])
                    if o.port not in self.committed_ports(int(entry["run_id"])):
                        self.record(int(entry["run_id"]), o)
                else:
                    self.finish_run(int(entry["run_id"]), str(entry["status"]))
                done += 1
            except (InputError, SQLAlchemyError, KeyError, TypeError, ValueError) as e:
                log.warning("journal entry not committed yet: %s", e)
                left.append(entry)
        journal.rewrite(left)
        return done


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
    appended and fsynced, so a crash right after `append` keeps the entry."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @staticmethod
    def default_path(db_url: str) -> Path:
        """Next to a SQLite file (`accept.db.pending.jsonl`), else in the user's state folder."""
        url = make_url(db_url)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            return Path(f"{url.database}.pending.jsonl")
        state = Path(os.environ.get("XDG_STATE_HOME") or Path("~/.local/state").expanduser())
        digest = hashlib.sha256(url.render_as_string(hide_password=True).encode()).hexdigest()
        return state / "fpgaprint" / f"accept-{digest[:12]}.pending.jsonl"

    def append(self, entry: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(entry, sort_keys=True, allow_nan=False, default=str) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def entries(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as e:
            raise InputError(f"--journal {self.path}: cannot read ({e.strerror})") from None
        out = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:  # a line cut by a crash while appending
                log.warning("%s:%d: unreadable journal line skipped", self.path, n)
                continue
            if isinstance(entry, dict):
                out.append(entry)
        return out

    def rewrite(self, entries: list[dict[str, Any]]) -> None:
        if not entries:
            self.path.unlink(missing_ok=True)
            return
        write_atomic(self.path, "".join(json.dumps(e, sort_keys=True, default=str) + "\n"
                                        for e in entries), sync=True)
