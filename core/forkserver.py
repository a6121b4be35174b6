"""multiprocessing's forkserver, one per process, shared by whoever forks from it (served boards,
local Dask workers): each asks for the modules its children need, and the server imports the
union of what was asked before it started (afterwards a request adds nothing).

`ForkedCLI` runs `python -m fpgaprint ARGV` in a child forked from it: the same code as a new
interpreter (by runpy, with this process's environment and directory), without its imports."""

from __future__ import annotations

import multiprocessing
import os
import runpy
import signal
import subprocess
import sys
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext
from typing import IO

_preload: set[str] = set()


def forkserver(preload: tuple[str, ...] | list[str] = ()) -> ForkServerContext:
    """The forkserver context, with `preload` added to what its server imports."""
    ctx = multiprocessing.get_context("forkserver")
    _preload.update(preload)
    ctx.set_forkserver_preload(sorted(_preload))  # again: another caller may have replaced it
    return ctx


def adopt(cwd: str, env: dict[str, str]) -> None:
    """In a child forked from the server: its caller's directory and environment (`cwd`,
    `env`, taken when the child was asked for), not the server's."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)


def _run_cli(argv: list[str], cwd: str, env: dict[str, str], out: Connection,
             err: Connection | None) -> None:
    """In the forked child: stdout (and stderr) to the parent's pipes, then the command line
    as `python -m fpgaprint ARGV` runs it."""
    adopt(cwd, env)
    os.dup2(out.fileno(), 1)
    if err is not None:
        os.dup2(err.fileno(), 2)
    else:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)
    out.close()
    if err is not None:
        err.close()
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    sys.argv = ["fpgaprint", *argv]
    runpy.run_module("fpgaprint", run_name="__main__", alter_sys=True)  # python -m fpgaprint


class ForkedCLI:
    """`python -m fpgaprint ARGV` forked from the forkserver (`preload` imported there), with
    the subprocess.Popen calls its callers use: stdout is a text pipe, stderr a pipe
    (subprocess.PIPE), discarded (DEVNULL) or a file. `daemon`: ended with this process, and
    then it may not start processes of its own."""

    def __init__(self, argv: list[str], stderr: IO | int, env: dict | None,
                 preload: tuple[str, ...] | list[str] = (), daemon: bool = True):
        ctx = forkserver(preload)
        r_out, w_out = ctx.Pipe(duplex=False)
        r_err = w_err = None
        if stderr == subprocess.PIPE:
            r_err, w_err = ctx.Pipe(duplex=False)
        elif stderr != subprocess.DEVNULL:
            w_err = Connection(os.dup(stderr.fileno()), readable=False)
        self._p = ctx.Process(target=_run_cli, daemon=daemon,
                              args=(argv, os.getcwd(), dict(os.environ if env is None else env),
                                    w_out, w_err))
        self._p.start()
        for end in (w_out, w_err):
            if end is not None:
                end.close()
        self.pid = self._p.pid
        self.stdout = open(os.dup(r_out.fileno()), "r")
        r_out.close()
        self.stderr = None
        if r_err is not None:
            self.stderr = open(os.dup(r_err.fileno()), "r")
            r_err.close()

    @property
    def returncode(self) -> int | None:
        return self._p.exitcode

    def poll(self) -> int | None:
        return self._p.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._p.join(timeout)
        if self._p.exitcode is None:
            raise subprocess.TimeoutExpired(str(self.pid), timeout)
        return self._p.exitcode

    def send_signal(self, sig: int) -> None:
        """Signal the child unless it has ended (the forkserver, its parent, may have reaped
        it before this process saw its exit code)."""
        if self._p.exitcode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)
