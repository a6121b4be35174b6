"""Board definitions, loaded from boards.yaml (board facts are data, not code)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources as _res

import yaml

from fpgaprint.core.errors import InputError

RESOURCE_KEYS = ("LUT", "FF", "BRAM_18K", "DSP", "URAM")


@dataclass(frozen=True)
class Board:
    name: str
    part: str
    finn_board: str
    platform: str  # "zynq" or "alveo"
    clock_ns: float
    resources: dict
    serial_device: str | None
    baud: int | None


def _load() -> dict[str, Board]:
    text = _res.files("fpgaprint.core").joinpath("boards.yaml").read_text()
    return {name: Board(name=name, **fields) for name, fields in yaml.safe_load(text).items()}


BOARDS: dict[str, Board] = _load()


def get_board(name: str) -> Board:
    """The board called `name` (case-insensitive), or InputError listing the valid ones."""
    for key, board in BOARDS.items():
        if key.lower() == name.lower():
            return board
    raise InputError(f"unknown board {name!r}; valid boards: {', '.join(BOARDS)}")


def check_resources(board: Board, estimate: dict, warn_at: float = 0.8) -> list[tuple[str, str]]:
    """Compare a resource estimate with the board: (level, message) for each notable use.

    level is "warn" at >= warn_at of a resource, "fail" over 100 %.
    """
    findings = []
    for key in RESOURCE_KEYS:
        have = board.resources.get(key, 0)
        need = float(estimate.get(key, 0) or 0)
        if need <= 0:
            continue
        if have == 0 or need > have:
            findings.append(("fail", f"{key}: needs {need:.0f}, {board.name} has {have}"))
        elif need >= warn_at * have:
            findings.append(("warn", f"{key}: {need:.0f} of {have} ({100 * need / have:.0f} %)"))
    return findings
