"""Work fanned out on Dask: an embedded `LocalCluster` sized to the machine, an existing cluster
by address, or in this process (serial), with the same task functions in every case.

Workers run one task at a time per process (FINN and the build redirect process-wide state),
must run the same fpgaprint code as the client (checked: version and a digest of the installed
sources) and must see the same paths (a shared file system for a remote cluster). A worker
lost mid-task is Dask's to handle: the scheduler gives the task to another worker (at most
`distributed.scheduler.allowed-failures` times, then the task fails with KilledWorker).

Progress: `TaskView` shows a live table in a terminal and timestamped lines otherwise; tasks
report their start through Dask's event log (`task_started`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from fpgaprint.core.errors import InputError, LinkError
from fpgaprint.core.forkserver import forkserver
from fpgaprint.core.sources import source_files

SERIAL = "serial"
LOCAL = "local"
TOPIC = "fpgaprint-task"
_ADDRESS = re.compile(r"^(tcp|tls)://[A-Za-z0-9._\-]+(:\d{1,5})?$|^(tcp|tls)://\[[0-9A-Fa-f:]+\]"
                      r"(:\d{1,5})?$")
CONNECT_TIMEOUT = 30.0
# A LocalCluster's workers are forked from multiprocessing's forkserver, which imports these
# once: a worker (and the replacement of a lost one) then starts in a fraction of a second
# instead of importing torch, Brevitas and FINN+ anew (3 s or more).
WORKER_PRELOAD = ("distributed", "numpy", "torch", "onnx", "qonnx.core.modelwrapper",
                  "brevitas.nn", "finn.custom_op.fpgadataflow")


def check_scheduler(value: str | None, flag: str = "--scheduler") -> str | None:
    """`serial`, `local` or a scheduler address (`tcp://HOST:8786`); None stays None."""
    if value is None:
        return None
    v = value.strip()
    if v in (SERIAL, LOCAL) or _ADDRESS.match(v):
        return v
    raise InputError(f"{flag} {value!r}: expected {LOCAL!r} (a LocalCluster on this machine), "
                     f"{SERIAL!r} (in this process) or a scheduler address like "
                     "tcp://HOST:8786")


def local_workers() -> int:
    """Cores this process may use: the LocalCluster's default number of workers."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


PACKAGES = ("fpgaprint", "fpgaprint.core", "fpgaprint.compiler", "fpgaprint.fingerprint",
            "fpgaprint.hw_targets", "fpgaprint.harness")


@functools.lru_cache(maxsize=1)
def code_identity() -> dict[str, str]:
    """fpgaprint's version and a SHA-256 of its installed sources (what a worker must match);
    the sources are read as files, not imported."""
    import importlib.util
    from importlib import metadata

    h = hashlib.sha256()
    for pkg in PACKAGES:
        spec = importlib.util.find_spec(pkg)
        base = Path(spec.origin).resolve().parent
        for p in source_files(base):
            if pkg == "fpgaprint" and p.parent != base:
                continue  # the top package only: the others are hashed under their own name
            h.update(f"{pkg}/{p.relative_to(base).as_posix()}\0".encode())
            h.update(p.read_bytes())
    try:
        version = metadata.version("fpgaprint")
    except metadata.PackageNotFoundError:
        version = "0+unknown"
    return {"version": version, "code": h.hexdigest()}


# One task at a time per process: builds redirect stdout and set FINN's environment, jobs
# set torch's global thread count and seeds (a worker started with --nthreads > 1 still runs
# our tasks one after the other).
PROCESS_LOCK = threading.Lock()


def task_started(**info: Any) -> None:
    """Tell the client that the current task started (on a Dask worker; a no-op elsewhere)."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return
    worker.log_event(TOPIC, {"task": str(worker.get_current_task()), "event": "started",
                             "worker": worker.address, **info})


def worker_address() -> str:
    """This Dask worker's address, or `local` in the client's process."""
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return LOCAL


@dataclass
class Cluster:
    """Where tasks run: `client` is None in serial mode."""

    mode: str  # serial | local | the scheduler address
    client: Any = None
    workers: list[str] = field(default_factory=list)  # addresses that may run our tasks
    refused: dict[str, str] = field(default_factory=dict)  # worker -> why not
    dashboard: str | None = None
    restrict: bool = False  # submit only to `workers`

    def describe(self, live: bool = True) -> str:
        """Where tasks run; `live`: with the dashboard's address (gone once the run ends, so
        reports leave it out)."""
        if self.client is None:
            return "serial, in this process"
        where = "LocalCluster" if self.mode == LOCAL else f"scheduler {self.mode}"
        text = f"{where}: {len(self.workers)} worker(s)"
        if self.refused:
            text += f", {len(self.refused)} refused (other fpgaprint code)"
        if self.dashboard and live:
            text += f"; Dask dashboard {self.dashboard}"
        return text

    def submit(self, fn: Callable, arg: Any, key: str):
        opts: dict[str, Any] = {"key": key, "pure": False}
        if self.restrict:
            opts.update(workers=list(self.workers), allow_other_workers=False)
        return self.client.submit(fn, arg, **opts)


def _identity_on_worker() -> dict[str, str]:
    return code_identity()


def _check_workers(client, mode: str) -> tuple[list[str], dict[str, str]]:
    ours = code_identity()
    found = client.run(_identity_on_worker)
    ok, refused = [], {}
    for addr, ident in sorted(found.items()):
        if ident == ours:
            ok.append(addr)
        else:
            refused[addr] = (f"fpgaprint {ident.get('version')} code {ident.get('code', '')[:12]}"
                             f", this client runs {ours['version']} code {ours['code'][:12]}")
    if not ok:
        why = "; ".join(f"{a}: {w}" for a, w in refused.items()) or "no workers"
        raise InputError(f"--scheduler {mode}: no worker runs this fpgaprint ({why})")
    return ok, refused


@contextlib.contextmanager
def connect(mode: str | None, workers: int | None = None, say: Callable[[str], None] | None
            = None, timeout: float = CONNECT_TIMEOUT, worker_log: str | Path | None = None
            ) -> Iterator[Cluster]:
    """A `Cluster` for `mode` (serial, local, or a scheduler address), closed on exit.

    local: a LocalCluster of `workers` processes (default: one per core) with one thread each,
    forked from the forkserver (WORKER_PRELOAD) with this process's environment as it is now;
    worker processes may start their own children (the build's equivalence worker). With
    `worker_log`, their stdout and stderr (libraries print there) go to that file instead of
    this terminal."""
    mode = check_scheduler(mode) or LOCAL
    say = say or (lambda msg: None)
    if mode == SERIAL:
        yield Cluster(SERIAL)
        return
    import dask
    from distributed import Client, LocalCluster

    with contextlib.ExitStack() as stack:
        if mode == LOCAL:
            n = workers or local_workers()
            if n < 1:
                raise InputError(f"--workers {n}: expected at least 1")
            with dask.config.set({"distributed.worker.daemon": False,
                                  "distributed.worker.multiprocessing-method": "forkserver"}):
                from distributed.utils import get_mp_context

                get_mp_context()  # Dask sets its own preload list once; ours goes after it
                forkserver(WORKER_PRELOAD)
                cluster = stack.enter_context(LocalCluster(
                    n_workers=n, threads_per_worker=1, processes=True,
                    dashboard_address="127.0.0.1:0", host="127.0.0.1",
                    silence_logs=40,
                    env=dict(os.environ)))  # this process's, not the forkserver's
            client = stack.enter_context(Client(cluster))
            if worker_log is not None:
                client.register_plugin(_output_to(worker_log), name="fpgaprint-output")
        else:
            try:
                client = stack.enter_context(Client(mode, timeout=timeout))
            except (OSError, TimeoutError) as e:
                raise LinkError(f"--scheduler {mode}: cannot reach the Dask scheduler "
                                f"({type(e).__name__}: {e})") from None
        ok, refused = _check_workers(client, mode)
        for addr, why in refused.items():
            say(f"worker {addr} left out: {why}")
        threads = {a: n for a, n in client.nthreads().items() if a in ok and n > 1}
        if threads:
            say(f"{len(threads)} worker(s) run {max(threads.values())} threads: builds on one "
                "worker process run one at a time (start workers with --nthreads 1)")
        yield Cluster(mode, client, ok, refused, _dashboard(client), restrict=bool(refused))


def _output_to(path: str | Path):
    """A worker plugin sending the worker process's stdout and stderr to `path` (appended);
    workers started later (a lost worker's replacement) get it too."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class OutputTo(WorkerPlugin):
        def __init__(self, path: str):
            self.path = path

        def setup(self, worker) -> None:
            import sys

            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.close(fd)

    return OutputTo(str(Path(path).resolve()))


def _dashboard(client) -> str | None:
    try:
        link = client.dashboard_link
    except Exception:  # no bokeh, or the scheduler serves no dashboard
        return None
    return link or None


@dataclass
class Outcome:
    """One task's result, or the error that ended it (`error` set, `value` None)."""

    index: int
    value: Any = None
    error: BaseException | None = None


def fan_out(cluster: Cluster, fn: Callable[[Any], Any], items: list[Any], keys: list[str],
            on_start: Callable[[int, dict], None] | None = None) -> Iterator[Outcome]:
    """Run fn(item) for every item on `cluster`; yield outcomes as they finish.

    Serial mode runs them here in order. An exception from a task, a task given up after
    lost workers (KilledWorker) or a result that cannot be unpickled is that item's `error`,
    never the end of the others."""
    if len(set(keys)) != len(keys):
        raise ValueError("task keys must be unique")
    if cluster.client is None:
        for i, item in enumerate(items):
            if on_start:
                on_start(i, {"worker": LOCAL})
            try:
                yield Outcome(i, fn(item))
            except Exception as e:  # reported with the item, the others go on
                yield Outcome(i, error=e)
        return
    from distributed import as_completed

    client = cluster.client
    index = {k: i for i, k in enumerate(keys)}

    def started(event) -> None:
        _, msg = event
        if on_start and isinstance(msg, dict) and msg.get("task") in index:
            on_start(index[msg["task"]], msg)

    client.subscribe_topic(TOPIC, started)
    try:
        futures = [cluster.submit(fn, item, key) for item, key in zip(items, keys)]
        by_key = {f.key: i for i, f in enumerate(futures)}
        for fut in as_completed(futures):
            i = by_key[fut.key]
            try:
                yield Outcome(i, fut.result())
            except Exception as e:  # KilledWorker, a task's exception, a lost connection
                yield Outcome(i, error=e)
            finally:
                fut.release()
    finally:
        with contextlib.suppress(Exception):
            client.unsubscribe_topic(TOPIC)


def describe_error(e: BaseException) -> str:
    """One line for a task's error (Dask's KilledWorker named as a lost worker)."""
    if type(e).__name__ == "KilledWorker":
        return (f"the workers running this task were lost too often ({e}); Dask gave it up "
                "(distributed.scheduler.allowed-failures)")
    from fpgaprint.core.errors import FpgaprintError

    if isinstance(e, FpgaprintError):
        return str(e)
    return f"{type(e).__name__}: {e}"


# -------------------------------------------------------------------------------- progress

def stamp() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class TaskView:
    """Live progress of named tasks: a rich table in a terminal; elsewhere the timestamped
    lines (and heartbeat) of `core.progress`, one per change of a task's state.

    `columns` are the extra fields shown per task; `update(i, state, **fields)` changes a row.
    """

    STYLES = {"queued": "dim", "running": "cyan", "ok": "green", "skipped": "green",
              "failed": "bold red"}
    FINAL = ("ok", "skipped", "failed")

    def __init__(self, title: str, names: list[str], console=None,
                 columns: Iterable[str] = ("worker", "seconds", "detail")):
        self.title = title
        self.names = names
        self.columns = list(columns)
        self.console = console
        self.rows = [{"state": "queued"} for _ in names]
        self.t0 = time.monotonic()
        self._lock = threading.Lock()
        self._live = None
        self._lines = None  # core.progress for a console that is not a terminal
        self._task = None
        self._stack = contextlib.ExitStack()
        self.tty = console is not None and console.is_terminal

    def line(self, text: str) -> None:
        """A message above the table, or a timestamped line."""
        if self._lines is not None:
            self._lines.log(text)
        elif self.console is not None:
            self.console.print(text, highlight=False)

    def __enter__(self) -> "TaskView":
        if self.tty:
            from rich.live import Live

            self._live = self._stack.enter_context(Live(
                console=self.console, refresh_per_second=4, get_renderable=self._table))
        elif self.console is not None:
            from fpgaprint.core.progress import Progress

            self._lines = self._stack.enter_context(Progress(self.console))
            self._task = self._stack.enter_context(self._lines.task(self.title,
                                                                    len(self.names)))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.__exit__(*exc)
        self._live = self._lines = self._task = None

    def done(self) -> int:
        return sum(r["state"] in self.FINAL for r in self.rows)

    def update(self, i: int, state: str, **fields: Any) -> None:
        with self._lock:
            row = self.rows[i]
            changed = row.get("state") != state
            row.update(fields, state=state)
            done = self.done()
        if self._task is not None and changed:
            extra = ", ".join(f"{k} {row[k]}" for k in self.columns
                              if row.get(k) not in (None, ""))
            self._task.update(completed=done, detail=f"{self.names[i]} {state}"
                              + (f" ({extra})" if extra else ""))

    def _table(self):
        from rich.table import Table
        from rich.text import Text

        with self._lock:
            elapsed = time.monotonic() - self.t0
            t = Table(title=f"{self.title}: {self.done()}/{len(self.names)} done, "
                            f"{elapsed:.0f} s", header_style="bold")
            t.add_column("task")
            t.add_column("state")
            for c in self.columns:
                t.add_column(c)
            for name, row in zip(self.names, self.rows):
                t.add_row(name, Text(row["state"], self.STYLES.get(row["state"], "")),
                          *(str(row.get(c, "") if row.get(c) is not None else "")
                            for c in self.columns))
            return t
