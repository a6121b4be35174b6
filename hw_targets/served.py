"""A board served by `fpgaprint board serve` in a child process: the one way the demo, the
tests and the benchmarks start a board. The child prints its port URL on its first stdout
line; `port` holds it.

A board starts in one of two ways (`launch`):
- "exec": `python -m fpgaprint board serve …`, a new interpreter (the default);
- "forkserver": the same command run in a process forked from a multiprocessing forkserver
  that has imported fpgaprint and FINN+ once. It starts in a tenth of the time (FINN+'s op
  registry imports torch), for callers that start many boards; the board is the same code,
  behind the same pty or TCP port.
"""

from __future__ import annotations

import contextlib
import selectors
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, Iterator

from fpgaprint.core.errors import InputError, LinkError
from fpgaprint.core.forkserver import ForkedCLI

LAUNCHES = ("exec", "forkserver")
# imported once by the forkserver: the CLI, the virtual board and FINN+'s op registry
PRELOAD = ["fpgaprint.cli", "fpgaprint.hw_targets.cli", "fpgaprint.hw_targets.agent",
           "fpgaprint.hw_targets.backends.virtual", "finn.custom_op.fpgadataflow",
           "finn.core.onnx_exec", "finn.util.settings"]
_default_launch = "exec"


def _check_launch(launch: str) -> str:
    if launch not in LAUNCHES:
        raise InputError(f"unknown launch {launch!r}; valid: {', '.join(LAUNCHES)}")
    return launch


def set_default_launch(launch: str) -> str:
    """Make `launch` the default of every ServedBoard after this; returns the previous one."""
    global _default_launch
    before, _default_launch = _default_launch, _check_launch(launch)
    return before


class ServedBoard:
    """`fpgaprint board serve PACKAGE --pty ARGS…` (or `--port URL`, `--tcp` in ARGS) as a
    child process, started by `launch` (module docstring; the default as set)."""

    def __init__(self, package: str | Path, *args: str, stderr: IO | int | None = None,
                 env: dict | None = None, start: bool = True, launch: str | None = None):
        serve_args = [str(a) for a in args]
        if not {"--tcp", "--pty", "--port"} & set(serve_args):
            serve_args.insert(0, "--pty")
        self.cmd = [sys.executable, "-m", "fpgaprint", "board", "serve", str(package),
                    *serve_args]
        self.launch = _check_launch(launch or _default_launch)
        self._stderr = subprocess.PIPE if stderr is None else stderr
        self._env = env
        self.proc: subprocess.Popen | ForkedCLI | None = None
        self.port = ""
        if start:
            self.start()

    def start(self) -> "ServedBoard":
        if self.launch == "forkserver":
            self.proc = ForkedCLI(self.cmd[3:], self._stderr, self._env, PRELOAD)
        else:
            self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE,
                                         stderr=self._stderr, text=True, env=self._env)
        return self

    def wait_ready(self, timeout: float = 120.0) -> str:
        """The port URL the board printed; LinkError (with its stderr) if it did not start."""
        if self.port:
            return self.port
        assert self.proc is not None and self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            line = self.proc.stdout.readline().strip() if sel.select(timeout) else ""
        if not line:
            err = ""
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
            if self.proc.poll() is not None and self._stderr == subprocess.PIPE:
                err = self.proc.stderr.read()
            self.stop()
            raise LinkError(f"board {' '.join(self.cmd[3:])} did not start "
                            f"(exit {self.proc.returncode}): {err.strip()[-500:]}")
        self.port = line
        return line

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return self.proc.returncode

    def __enter__(self) -> "ServedBoard":
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def served_boards(*specs: tuple, **kwargs) -> Iterator[list[ServedBoard]]:
    """Start several boards at once (each spec: (package, *serve args)); yield them ready."""
    boards = [ServedBoard(*spec, **kwargs) for spec in specs]
    try:
        for b in boards:
            b.wait_ready()
        yield boards
    finally:
        for b in boards:
            b.stop()
