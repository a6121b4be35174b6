"""Factory acceptance: verify N boards in parallel, commit each result as soon as it completes.

Boards run in worker threads; the calling thread commits every finished board to the database
in its own transaction, so a run that is killed keeps every result committed before the kill
(`fpgaprint accept --resume RUN` verifies the boards it lacks and finishes it). A result the
database refuses even after the store's retries is spooled to the journal, never lost; one it
refuses for good (its schema, a constraint) is spooled marked `rejected`, with why. The run is
claimed by this process (`ResultStore.claim`) and kept claimed by a heartbeat while boards run.

Every port is a different board: two ports that name one device (a symlink and its target) are
refused before any board is touched. A serial reported by boards on two ports of a run is a
conflict (`AcceptResult.conflicts`): both results are kept as the boards gave them, and none of
those boards passes on this run (a FAIL stays FAIL, a PASS counts as no verdict), as
`fpgaprint report` counts them.
"""

from __future__ import annotations

import os
import socket
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

from fpgaprint.core.cliopts import check_port_url
from fpgaprint.core.errors import InputError
from fpgaprint.core.progress import Progress
from fpgaprint.harness.db import (
    HEARTBEAT,
    RUNNING,
    DatabaseUnavailable,
    Journal,
    ResultRejected,
    ResultStore,
)
from fpgaprint.harness.reports import port_conflicts, serial_conflicts
from fpgaprint.harness.verdict import NO_VERDICT, BoardOutcome, overall
from fpgaprint.harness.verify import LinkSettings, Plan, verify_board

if TYPE_CHECKING:
    from rich.console import Console

    from fpgaprint.core.package import Package


@dataclass
class AcceptResult:
    run_id: int
    status: str
    outcomes: list[BoardOutcome]  # in the order of the ports given
    spooled: list[str] = field(default_factory=list)  # what went to the journal
    unsaved: list[str] = field(default_factory=list)  # what neither place could keep
    db_error: str | None = None  # why
    rejected: dict[str, str] = field(default_factory=dict)  # refused for good: what -> why
    conflicts: dict[str, list[str]] = field(default_factory=dict)  # serial -> its ports

    def conflict_of(self) -> dict[str, str]:
        """Port -> why its board is in a serial conflict, for the reports."""
        return port_conflicts(self.conflicts, self.run_id)


def run_status(statuses: list[str], conflicts: dict[str, list[str]]) -> str:
    """A run's verdict from its boards' statuses; a serial conflict's boards never pass on
    the run, so it has no verdict at best."""
    return overall(list(statuses) + ([NO_VERDICT] if conflicts else []))


@dataclass
class Resumed:
    """What `resume` found: the ports still to verify, the statuses committed before, the
    station of the run."""

    ports: list[str]
    earlier: list[str]
    station: str
    finished: str | None = None  # the run's status when it was finished already
    earlier_serials: list[tuple[str, str | None]] = field(default_factory=list)  # (port, serial)


def resume(store: ResultStore, run_id: int, package_id: str, mode: str,
           ports: list[str] | None) -> Resumed:
    """Check that run `run_id` can be resumed with this package, mode and ports, and claim it
    (RunBusy if another process works on it). `ports` replace the boards still to verify."""
    run = store.run(run_id)
    if run["package_id"] != package_id:
        raise InputError(f"--resume {run_id}: run {run_id} verified package "
                         f"{run['package_id'][:16]}…, not {package_id[:16]}…")
    if run["status"] != RUNNING:
        return Resumed([], [], run["station"], finished=run["status"])
    other = sorted({r["mode"] for r in run["results"]} - {mode})
    if other:
        raise InputError(f"--resume {run_id}: run {run_id} verified boards in {other[0]} "
                         f"mode, not {mode}: resume it in the same mode")
    done = {r["port"] for r in run["results"]}
    if ports is not None:
        devices = {device(p): p for p in done}
        again = [p for p in ports if device(p) in devices]
        if again:
            same = devices[device(again[0])]
            alias = "" if same == again[0] else f" (as {same}: the same device)"
            raise InputError(f"--ports: {again[0]} already has a result in run {run_id}{alias}; "
                             "give the ports of the boards still to verify")
    store.claim(run_id)
    run = store.run(run_id)  # what a process that held the run before committed
    done = {r["port"] for r in run["results"]}
    if ports is not None:
        todo = list(ports)
        store.set_ports(run_id, [p for p in run["ports"] if p in done] + todo)
    else:
        todo = [p for p in run["ports"] if p not in done]
    return Resumed(todo, [r["status"] for r in run["results"]], run["station"],
                   earlier_serials=[(r["port"], r["serial"]) for r in run["results"]])


def device(port: str) -> str:
    """What a port reaches, for telling boards apart: a device path's real path (a symlink
    and its target, /dev//pts/9 and /dev/pts/9 are one device); a URL (socket://,
    rfc2217://, …) as given."""
    return port if "://" in port else os.path.realpath(port)


def check_distinct(ports: Sequence[str], flag: str = "--ports") -> None:
    """InputError (one line) if a port is given twice or two ports name the same device."""
    dup = sorted({p for p in ports if list(ports).count(p) > 1})
    if dup:
        raise InputError(f"{flag}: port {dup[0]} given more than once")
    seen: dict[str, str] = {}
    for p in ports:
        first = seen.setdefault(device(p), p)
        if first != p:
            raise InputError(f"{flag}: {first} and {p} are the same device ({device(p)}): "
                             "give each board once")


def parse_ports(spec: str) -> list[str]:
    """`A,B,...` → list of port URLs; empty or duplicate entries, and two entries naming the
    same device, are an InputError."""
    ports = [p.strip() for p in spec.split(",")]
    if not spec.strip() or any(not p for p in ports):
        raise InputError(f"--ports {spec!r}: expected a comma-separated list of port URLs")
    for p in ports:
        check_port_url(p, "--ports")
    check_distinct(ports)
    return ports


def default_station() -> str:
    return socket.gethostname()


def _crashed(port: str, pkg: "Package", plan: Plan, exc: BaseException, t0: float) -> BoardOutcome:
    return BoardOutcome(
        port=port, status=NO_VERDICT, reason=f"error while verifying: {exc!r}",
        package_id=pkg.package_id, package_name=pkg.manifest.get("name", ""), mode=plan.mode,
        started=t0, duration_s=time.time() - t0,
    )


def accept(
    ports: list[str],
    pkg: "Package",
    plan_for: Callable[[str], Plan],
    store: ResultStore,
    station: str,
    settings: LinkSettings = LinkSettings(),
    console: "Console | None" = None,
    client_factory: Callable[..., Any] | None = None,
    journal: Journal | None = None,
    run_id: int | None = None,
    earlier: Sequence[str] = (),
    earlier_serials: Sequence[tuple[str, str | None]] = (),
) -> AcceptResult:
    """Verify every port in parallel; commit each outcome as it completes; finish the run.

    With `run_id`, the boards are added to that run (a resumed run); `earlier` holds the
    statuses of its results committed before, `earlier_serials` their (port, serial), and the
    run's status covers them too. A serial reported on two ports of the run (these boards or
    the earlier ones) is a conflict: the run does not pass.
    """
    check_distinct(ports)  # before the run is started or a board touched
    if run_id is None:
        run_id = store.start_run(station, pkg.package_id, pkg.manifest.get("name", ""), ports)
    plans = {p: plan_for(p) for p in ports}
    done: dict[str, BoardOutcome] = {}
    result = AcceptResult(run_id, NO_VERDICT, [])
    progress = Progress(console)
    t0 = time.time()

    def spool(entry: dict[str, Any], what: str, e: Exception) -> None:
        if journal is None:
            raise e
        result.db_error = str(e)
        if isinstance(e, ResultRejected):
            entry = {**entry, "rejected": str(e)}
        try:
            journal.append({**entry, "db": store.url, "run_id": run_id})
            if isinstance(e, ResultRejected):
                result.rejected[what] = str(e)
            else:
                result.spooled.append(what)
        except (OSError, ValueError) as je:  # still no verdict lost: printed, the exit code
            result.unsaved.append(what)
            result.db_error += f"; journal {journal.path}: {getattr(je, 'strerror', None) or je}"

    with progress, ExitStack() as stack, \
            ThreadPoolExecutor(max_workers=len(ports), thread_name_prefix="board") as ex:
        boards = _Boards(progress, ports, {p: len(plans[p].order) for p in ports})
        stack.callback(boards.close)
        futures: dict[Future, str] = {
            ex.submit(verify_board, p, pkg, plans[p], settings, client_factory,
                      boards.advancer(p)): p
            for p in ports
        }
        pending = set(futures)
        beat = time.monotonic()
        while pending:
            finished, pending = wait(pending, timeout=HEARTBEAT, return_when=FIRST_COMPLETED)
            if time.monotonic() - beat >= HEARTBEAT:  # the run is still being worked on
                store.heartbeat(run_id)
                beat = time.monotonic()
            for fut in finished:
                port = futures[fut]
                try:
                    outcome = fut.result()
                except Exception as e:  # a bug must not turn into a missing or passing board
                    outcome = _crashed(port, pkg, plans[port], e, t0)
                try:
                    store.record(run_id, outcome)
                except (DatabaseUnavailable, InputError) as e:
                    spool({"kind": "result", "outcome": outcome.to_dict()}, port, e)
                done[port] = outcome
                boards.finish(outcome, committed=port not in [*result.spooled, *result.unsaved,
                                                          *result.rejected])
    result.outcomes = [done[p] for p in ports]
    result.conflicts = serial_conflicts([*earlier_serials,
                                         *((o.port, o.serial) for o in result.outcomes)])
    result.status = run_status([o.status for o in result.outcomes] + list(earlier),
                               result.conflicts)
    try:
        store.finish_run(run_id, result.status)
    except DatabaseUnavailable as e:
        spool({"kind": "finish", "status": result.status}, f"end of run {run_id}", e)
    return result


class _Boards:
    """One progress task per board (`fpgaprint.core.progress`), ended with its verdict."""

    def __init__(self, progress: Progress, ports: list[str], totals: dict[str, int]):
        self.stacks = {p: ExitStack() for p in ports}
        self.tasks = {p: self.stacks[p].enter_context(progress.task(f"board {p}", totals[p]))
                      for p in ports}

    def advancer(self, port: str) -> Callable[[int], None]:
        return lambda n: self.tasks[port].advance(n, line=False)

    def detail(self, o: BoardOutcome, committed: bool = True) -> str:
        """The task's last detail: the board's verdict, serial and where its result went."""
        serial = f" {o.serial}" if o.serial else ""
        where = "committed" if committed else "spooled to the journal"
        return f"{o.status}{serial} ({where})"

    def finish(self, o: BoardOutcome, committed: bool = True) -> None:
        self.tasks[o.port].update(detail=self.detail(o, committed), line=False)
        self.stacks[o.port].close()

    def close(self) -> None:
        for stack in self.stacks.values():
            stack.close()
