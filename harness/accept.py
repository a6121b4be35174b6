"""Factory acceptance: verify N boards in parallel, commit each result as soon as it completes.

Boards run in worker threads; the calling thread commits every finished board to the database
in its own transaction, so a run that is killed keeps every result committed before the kill.
"""

from __future__ import annotations

import socket
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from fpgaprint.core.errors import InputError
from fpgaprint.harness.db import ResultStore
from fpgaprint.harness.verdict import NO_VERDICT, BoardOutcome, overall
from fpgaprint.harness.verify import DEFAULT_BATCH, Plan, verify_board

if TYPE_CHECKING:
    from rich.console import Console

    from fpgaprint.core.package import Package


@dataclass
class AcceptResult:
    run_id: int
    status: str
    outcomes: list[BoardOutcome]  # in the order of the ports given


def parse_ports(spec: str) -> list[str]:
    """`A,B,...` → list of port URLs; empty or duplicate entries are an InputError."""
    ports = [p.strip() for p in spec.split(",")]
    if not spec.strip() or any(not p for p in ports):
        raise InputError(f"--ports {spec!r}: expected a comma-separated list of port URLs")
    dup = sorted({p for p in ports if ports.count(p) > 1})
    if dup:
        raise InputError(f"--ports: port {dup[0]} given more than once")
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
    timeout: float = 2.0,
    retries: int = 3,
    batch_size: int = DEFAULT_BATCH,
    console: "Console | None" = None,
    client_factory: Callable[..., Any] | None = None,
) -> AcceptResult:
    """Verify every port in parallel; commit each outcome as it completes; finish the run."""
    run_id = store.start_run(station, pkg.package_id, pkg.manifest.get("name", ""), ports)
    plans = {p: plan_for(p) for p in ports}
    done: dict[str, BoardOutcome] = {}
    progress = _Progress(ports, {p: len(plans[p].order) for p in ports}, console)
    t0 = time.time()

    with progress, ThreadPoolExecutor(max_workers=len(ports), thread_name_prefix="board") as ex:
        futures: dict[Future, str] = {
            ex.submit(
                verify_board, p, pkg, plans[p], timeout, retries, batch_size, client_factory,
                progress.advancer(p),
            ): p
            for p in ports
        }
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                port = futures[fut]
                try:
                    outcome = fut.result()
                except Exception as e:  # a bug must not turn into a missing or passing board
                    outcome = _crashed(port, pkg, plans[port], e, t0)
                store.record(run_id, outcome)
                done[port] = outcome
                progress.finish(outcome)
    outcomes = [done[p] for p in ports]
    status = overall([o.status for o in outcomes])
    store.finish_run(run_id, status)
    return AcceptResult(run_id, status, outcomes)


class _Progress:
    """Live rich progress: one bar per board, its verdict once committed (no-op without console)."""

    def __init__(self, ports: list[str], totals: dict[str, int], console: "Console | None"):
        self.bars = None
        self.tasks: dict[str, Any] = {}
        if console is None:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.bars = Progress(
            TextColumn("{task.fields[port]:<24}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[verdict]}"), console=console, transient=False,
        )
        for p in ports:
            self.tasks[p] = self.bars.add_task(p, total=totals[p], port=p, verdict="running")

    def __enter__(self) -> "_Progress":
        if self.bars is not None:
            self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bars is not None:
            self.bars.stop()

    def advancer(self, port: str) -> Callable[[int], None] | None:
        if self.bars is None:
            return None
        return lambda n: self.bars.advance(self.tasks[port], n)

    def finish(self, o: BoardOutcome) -> None:
        if self.bars is None:
            return
        from fpgaprint.harness.reports import STYLE

        style = STYLE.get(o.status, "")
        serial = f" {o.serial}" if o.serial else ""
        self.bars.update(self.tasks[o.port], verdict=f"[{style}]{o.status}[/]{serial} (committed)")
