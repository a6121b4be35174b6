"""Atomic file writes, written once: a temporary file in the target's folder, then a rename.

A reader never sees a half-written file, and a failed write leaves the old file (or none).
Also the bounded read of a small file (a key, a manifest, a config) whose size is not trusted.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: int = 0o644, sync: bool = False) -> Iterator[IO[bytes]]:
    """A binary file object that replaces `path` when the block ends without an error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            yield f
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, data: bytes | str, mode: int = 0o644,
                 sync: bool = False) -> None:
    """Write `data` (text is UTF-8) to `path` atomically."""
    with atomic_file(path, mode, sync) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


def read_bounded(path: str | Path, limit: int) -> bytes | None:
    """The bytes of `path`, or None when it holds more than `limit` bytes (at most `limit` + 1
    are read, whatever its size). OSError as `open` raises it; each caller names the file its
    own way."""
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    return data if len(data) <= limit else None


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def write_json(path: str | Path, obj: Any, sort_keys: bool = True) -> None:
    """`obj` as indented JSON (numpy scalars and arrays, paths allowed), atomically."""
    text = json.dumps(obj, indent=2, sort_keys=sort_keys, default=_json_default) + "\n"
    write_atomic(path, text)
