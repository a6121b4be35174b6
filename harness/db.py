"""Acceptance results database (SQLAlchemy 2 ORM): runs, one row per board, one per vector.

Any SQLAlchemy URL works; tested with SQLite (`sqlite:///accept.db`, the default) and
PostgreSQL through psycopg 3 (`postgresql+psycopg://user:pw@host/db`). Each board's result
and its vector rows are written in one transaction, so a result is either fully committed or
absent, and a killed run loses nothing that was committed.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

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
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from fpgaprint.core.errors import InputError
from fpgaprint.harness.verdict import BoardOutcome

DEFAULT_URL = "sqlite:///accept.db"
RUNNING = "RUNNING"


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
    """Opens (and creates) the results database; commits runs and board results."""

    def __init__(self, url: str = DEFAULT_URL) -> None:
        try:
            parsed = make_url(url)
            self.engine: Engine = create_engine(parsed, pool_pre_ping=True)
            Base.metadata.create_all(self.engine)
        except (ArgumentError, NoSuchModuleError, ValueError) as e:
            raise InputError(f"--db {url!r}: not a usable database URL ({e})") from None
        except OperationalError as e:
            shown = parsed.render_as_string(hide_password=True)
            raise InputError(f"--db {shown}: cannot open the database ({e.orig})") from None
        self.url = parsed.render_as_string(hide_password=True)
        self._lock = threading.Lock()

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start_run(self, station: str, package_id: str, package_name: str, ports: list[str]) -> int:
        with self._lock, Session(self.engine) as s, s.begin():
            run = Run(
                station=station, package_id=package_id, package_name=package_name,
                ports=list(ports), started_at=_utc(), status=RUNNING,
            )
            s.add(run)
            s.flush()
            return run.id

    def record(self, run_id: int, o: BoardOutcome) -> int:
        """Commit one board's result with all its vector rows in a single transaction."""
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
        try:
            with self._lock, Session(self.engine) as s, s.begin():
                s.add(row)
                s.flush()
                return row.id
        except SQLAlchemyError as e:
            raise InputError(f"database {self.url}: cannot commit the result of {o.port} ({e})")

    def finish_run(self, run_id: int, status: str) -> None:
        with self._lock, Session(self.engine) as s, s.begin():
            run = s.get(Run, run_id)
            run.status = status
            run.finished_at = _utc()

    def run(self, run_id: int) -> dict[str, Any]:
        """A run with its results (as dicts) for reports and checks."""
        with Session(self.engine) as s:
            run = s.get(Run, run_id)
            if run is None:
                raise InputError(f"database {self.url}: no run {run_id}")
            return {
                "id": run.id, "station": run.station, "package_id": run.package_id,
                "status": run.status, "ports": run.ports,
                "results": [
                    {
                        "port": r.port, "serial": r.serial, "status": r.status,
                        "n_vectors": r.n_vectors, "n_answered": r.n_answered,
                        "vector_rows": len(r.vectors), "match_rate": r.match_rate,
                        "exact_failed": r.exact_failed, "reason": r.reason,
                    }
                    for r in run.results
                ],
            }

    def last_run_id(self) -> int | None:
        with Session(self.engine) as s:
            return s.scalar(select(func.max(Run.id)))
