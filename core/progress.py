"""Progress of long work, written once: rich bars on a terminal; when output is not a
terminal (CI logs), timestamped lines, at least one every `heartbeat` seconds while a task
runs, so a log never goes quiet during a long step."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.progress import (
    Progress as _RichProgress,
)

HEARTBEAT_S = 10.0  # off a terminal, the longest silence; $FPGAPRINT_HEARTBEAT_S overrides
LOG_WIDTH = 1 << 16  # off a terminal: lines as long as their text (rich would cut at 80)


def console(stderr: bool = False) -> Console:
    """The console a command prints to (stdout, or stderr bound now). On a terminal, rich as
    usual; otherwise (a CI log, a pipe, a file) no line is wrapped or cut: tables take their
    natural width and text is never folded."""
    import sys

    c = Console(file=sys.stderr if stderr else sys.stdout, highlight=False)
    if not c.is_terminal:
        c.soft_wrap = True
        c.width = LOG_WIDTH
    return c


def _heartbeat_s() -> float:
    try:
        value = float(os.environ.get("FPGAPRINT_HEARTBEAT_S", HEARTBEAT_S))
    except ValueError:
        return HEARTBEAT_S
    return value if 0.1 <= value <= 3600 else HEARTBEAT_S


class Task:
    """One unit of long work; `advance` and `update` it as it goes."""

    def __init__(self, progress: "Progress", name: str, total: float | None):
        self._p, self.name, self.total = progress, name, total
        self.completed = 0.0
        self.detail = ""
        self.started = time.monotonic()
        self._id = None

    def advance(self, n: float = 1, detail: str | None = None, line: bool = True) -> None:
        self.update(completed=self.completed + n, detail=detail, line=line)

    def update(self, completed: float | None = None, detail: str | None = None,
               total: float | None = None, line: bool = True) -> None:
        """A new detail is a line off a terminal unless `line=False` (frequent updates, e.g.
        per epoch: the heartbeat shows them)."""
        if completed is not None:
            self.completed = completed
        if total is not None:
            self.total = total
        if detail is not None:
            self.detail = detail
        self._p._changed(self, line=line and detail is not None)

    def text(self) -> str:
        count = ""
        if self.total:
            count = f" {self.completed:g}/{self.total:g}"
        elif self.completed:
            count = f" {self.completed:g}"
        detail = f": {self.detail}" if self.detail else ""
        return f"{self.name}{count}{detail}"


class Progress:
    """Tasks shown as rich bars on a terminal, as timestamped lines otherwise.

    `console=None` shows nothing (library use); a console that is not a terminal gets lines.
    """

    def __init__(self, console: Console | None, heartbeat: float | None = None,
                 transient: bool = True):
        self.console = console
        self.heartbeat = heartbeat or _heartbeat_s()
        self.lines = console is not None and not console.is_terminal
        self._rich = None
        if console is not None and console.is_terminal:
            self._rich = _RichProgress(
                # descriptions and details are data (a board's serial, a port): never markup
                TextColumn("{task.description}", style="bold", markup=False), BarColumn(),
                MofNCompleteColumn(), TextColumn("{task.fields[detail]}", markup=False),
                TimeElapsedColumn(), console=console,
                transient=transient)
        self._tasks: list[Task] = []
        self._last = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def __enter__(self) -> "Progress":
        if self._rich is not None:
            self._rich.__enter__()
        if self.lines:
            self._beat = threading.Thread(target=self._heartbeat, daemon=True,
                                          name="fpgaprint-progress")
            self._beat.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        if self._rich is not None:
            self._rich.__exit__(*exc)

    @contextlib.contextmanager
    def task(self, name: str, total: float | None = None) -> Iterator[Task]:
        """A task for the duration of the block; a line when it starts and when it ends."""
        t = Task(self, name, total)
        with self._lock:
            self._tasks.append(t)
        if self._rich is not None:
            t._id = self._rich.add_task(name, total=total, detail="")
        self._line(f"{name} …")
        try:
            yield t
        finally:
            with self._lock:
                self._tasks.remove(t)
            if self._rich is not None:
                self._rich.remove_task(t._id)
            self._line(f"{t.text()} (done in {time.monotonic() - t.started:.1f} s)")

    def log(self, message: str) -> None:
        """A message above the bars, or a timestamped line."""
        if self._rich is not None:
            self._rich.console.print(message)
        else:
            self._line(message)

    # -- internals --------------------------------------------------------------------------
    def _changed(self, t: Task, line: bool) -> None:
        if self._rich is not None and t._id is not None:
            self._rich.update(t._id, completed=t.completed, total=t.total,
                              description=t.name, detail=t.detail)
        elif line:
            self._line(t.text())

    def _line(self, text: str) -> None:
        if not self.lines:
            return
        with self._lock:
            self._last = time.monotonic()
            self.console.print(f"{time.strftime('%H:%M:%S')} {text}", markup=False,
                               highlight=False, soft_wrap=True)

    def _heartbeat(self) -> None:
        poll = min(1.0, self.heartbeat / 4)
        while not self._stop.wait(poll):
            with self._lock:  # a line before the silence reaches `heartbeat`, not after
                quiet = time.monotonic() - self._last >= self.heartbeat - poll
                current = self._tasks[-1] if self._tasks else None
            if quiet and current is not None:
                self._line(f"{current.text()} … {time.monotonic() - current.started:.0f} s")
