"""Size of the C reference agent (firmware/): code, constant data and RAM of the agent object
alone (no HAL, no port), from `size -A`, for a package and a few payload limits.

Code is .text; constant data is .rodata* (the package's self-test vectors, the tail constants,
strings) and .data.rel.ro*; RAM is .data + .bss (every buffer is static, sized at compile time
from FPA_MAX_PAYLOAD and the package). .eh_frame (unwind tables a bare-metal link drops with
-fno-asynchronous-unwind-tables) is listed apart.

    .venv/bin/python bench/firmware.py --package DIR [--trusted-key KEY] [--payload 4096 ...]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fpgaprint.core.carrays import c_arrays  # noqa: E402
from fpgaprint.core.package import verify_package  # noqa: E402
from fpgaprint.hw_targets import cagent  # noqa: E402


def sections(obj: Path) -> dict[str, int]:
    out = subprocess.run(["size", "-A", str(obj)], capture_output=True, text=True,
                         check=True).stdout
    sizes: dict[str, int] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].startswith(".") and parts[1].isdigit():
            sizes[parts[0]] = int(parts[1])
    return sizes


def measure(gen: Path, out: Path, payload: int) -> dict[str, int]:
    """Compile the agent object with the firmware Makefile's flags and this payload limit."""
    subprocess.run(["make", "-s", "-B", "-C", str(ROOT / "firmware"), f"GEN={gen}",
                    f"OUT={out}", f"CPPFLAGS=-DFPA_MAX_PAYLOAD={payload}u", "agent"],
                   check=True, capture_output=True, text=True)
    s = sections(out / "fpgaprint_agent.o")
    pick = lambda *prefixes: sum(v for k, v in s.items() if k.startswith(prefixes))  # noqa: E731
    return {"code": pick(".text"), "const": pick(".rodata", ".data.rel.ro"),
            "ram": pick(".data", ".bss") - pick(".data.rel.ro"), "unwind": pick(".eh_frame")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", required=True, help="a package with stitched RTL")
    ap.add_argument("--trusted-key", action="append", help="signer's public key")
    ap.add_argument("--payload", type=int, nargs="+", default=[1024, 4096, 16384],
                    help="FPA_MAX_PAYLOAD values to compile")
    args = ap.parse_args()
    pkg = verify_package(args.package, trusted_key=tuple(args.trusted_key or ()) or None)
    with pkg, tempfile.TemporaryDirectory(prefix="fpgaprint-fw-") as tmp:
        gen = Path(tmp) / "gen"
        gen.mkdir()
        shutil.copyfile(pkg.header_path, gen / "selftest_vectors.h")
        cagent.write(pkg, gen / cagent.HEADER)
        vectors = pkg.vectors()
        arrays = c_arrays(vectors, pkg.io["input"]["datatype"], pkg.io["raw_output"]["datatype"])
        embedded = sum(v.size * np.dtype(t.removesuffix("_t")).itemsize
                       for v, t in arrays.values())
        gcc = subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout
        table = Table(title=f"C agent object, {pkg.name}, {gcc.splitlines()[0]}, -Os, x86-64")
        for col in ("max_payload B", "code B", "const data B", "RAM B", "unwind B"):
            table.add_column(col, justify="right")
        for payload in args.payload:
            m = measure(gen, Path(tmp) / f"p{payload}", payload)
            table.add_row(str(payload), str(m["code"]), str(m["const"]), str(m["ram"]),
                          str(m["unwind"]))
        console = Console(width=120)
        console.print(table)
        console.print(f"const data includes the {len(vectors['inputs'])} self-test vectors with "
                      f"their golden outputs and labels: {embedded} B")


if __name__ == "__main__":
    main()
