"""multiprocessing's forkserver, one per process, shared by whoever forks from it (served boards,
local Dask workers): each asks for the modules its children need, and the server imports the
union of what was asked before it started (afterwards a request adds nothing)."""

from __future__ import annotations

import multiprocessing
from multiprocessing.context import ForkServerContext

_preload: set[str] = set()


def forkserver(preload: tuple[str, ...] | list[str] = ()) -> ForkServerContext:
    """The forkserver context, with `preload` added to what its server imports."""
    ctx = multiprocessing.get_context("forkserver")
    _preload.update(preload)
    ctx.set_forkserver_preload(sorted(_preload))  # again: another caller may have replaced it
    return ctx
