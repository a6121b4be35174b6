"""FINN+ process settings: a build directory and FINN's settings object, set up once."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_ready = False


def ensure_finn(build_dir: str | Path | None = None) -> None:
    """Point FINN_BUILD_DIR at an existing directory and initialise FINN's settings."""
    global _ready
    if build_dir is not None:
        Path(build_dir).mkdir(parents=True, exist_ok=True)
        os.environ["FINN_BUILD_DIR"] = str(Path(build_dir).resolve())
    elif not os.environ.get("FINN_BUILD_DIR") or not Path(os.environ["FINN_BUILD_DIR"]).is_dir():
        os.environ["FINN_BUILD_DIR"] = tempfile.mkdtemp(prefix="fpgaprint-finn-")
    from finn.util import settings

    if not _ready:
        from fpgaprint.core import qonnx_speed

        settings.initialize_dummy_settings()
        qonnx_speed.install()
        _ready = True
    # FINN+ places its generated code by its settings object, made once per process: each
    # build of the process (a serial matrix, a forked worker) gets its own directory
    settings.get_settings().finn_build_dir = os.environ["FINN_BUILD_DIR"]
