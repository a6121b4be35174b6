"""Library warnings and log records (Python `warnings`, torch, Brevitas, QONNX, FINN+) go to a
log file or nowhere, never onto the terminal: a command's terminal output is its own.
`FPGAPRINT_DEBUG=1` leaves them where the libraries send them."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from typing import Callable, Iterator

LIBRARIES = ("py.warnings", "torch", "brevitas", "qonnx", "finn", "onnx", "onnxscript",
             "onnxruntime")


def _ours(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in LIBRARIES)


@contextlib.contextmanager
def library_output(handler: logging.Handler | None = None) -> Iterator[None]:
    """For the block, library warnings and log records go to `handler` (e.g. the build log's),
    or are dropped without one. Loggers a library sets up later (an import inside the block)
    keep their own handlers: import the library first."""
    if os.environ.get("FPGAPRINT_DEBUG"):
        yield
        return
    with warnings.catch_warnings():  # restores showwarning, nested blocks included
        restore = route(handler)
        try:
            yield
        finally:
            restore()


def route(handler: logging.Handler | None) -> Callable[[], None]:
    """Send library warnings and log records to `handler` (None: nowhere) from now on, e.g.
    for the whole life of a worker process; returns what puts the loggers back."""
    target = handler if handler is not None else logging.NullHandler()
    names = {n for n in logging.root.manager.loggerDict if _ours(n)} | set(LIBRARIES)
    saved = []
    for name in sorted(names):
        lg = logging.getLogger(name)
        if lg.handlers or name in LIBRARIES:  # the libraries' own handlers, and the top loggers
            saved.append((lg, lg.handlers[:], lg.propagate))
            lg.handlers = [target]
            lg.propagate = False
    warnings.showwarning = _to_log

    def restore() -> None:
        for lg, handlers, propagate in saved:
            lg.handlers, lg.propagate = handlers, propagate
    return restore


def _to_log(message, category, filename, lineno, file=None, line=None) -> None:
    text = warnings.formatwarning(message, category, filename, lineno, line).rstrip()
    logging.getLogger("py.warnings").warning("%s", text)
