"""fpgaprint's own source files, as its code identities hash them (a build step's resume key,
the code a cluster worker must match)."""

from __future__ import annotations

from pathlib import Path

SUFFIXES = (".py", ".yaml", ".sv", ".v", ".cpp", ".h")


def source_files(base: Path) -> list[Path]:
    """The source files under `base`, sorted (bytecode caches left out)."""
    return sorted(p for p in base.rglob("*")
                  if p.suffix in SUFFIXES and "__pycache__" not in p.parts)
