"""Verdict reliability on a noisy link: many verifies of a healthy and of a faulty virtual board
over a pty with bit errors and dropped bytes; counts false PASS and false FAIL (exit 3, no
verdict, is allowed). Bounded by count and time; stops by itself.

    .venv/bin/python bench/reliability.py --package build/demo/package [--verifies 1000]
        [--ber 1e-4] [--drop 0.01] [--retries 8] [--minutes 20]
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fpgaprint.hw_targets.served import ServedBoard


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", type=Path, default=Path("build/demo/package"))
    ap.add_argument("--verifies", type=int, default=1000, help="in total, half per board")
    ap.add_argument("--ber", type=float, default=1e-4)
    ap.add_argument("--drop", type=float, default=0.01)
    ap.add_argument("--retries", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=1.0)
    ap.add_argument("--minutes", type=float, default=20.0)
    args = ap.parse_args()

    from fpgaprint.core.golden import GoldenModel
    from fpgaprint.core.package import verify_package
    from fpgaprint.harness.verify import selftest_plan, verify_board

    pkg = verify_package(args.package, allow_unsigned=True)
    mems = GoldenModel(pkg.golden_path).memories()
    key = [k for k in mems if k.endswith("/weights")][-1]
    flip = f"{key}:0:{mems[key].bits - 1}"
    link = ["--noise-ber", str(args.ber), "--drop-rate", str(args.drop), "--seed", "7"]
    boards = {"healthy": ServedBoard(args.package, *link, stderr=subprocess.DEVNULL),
              "flipped": ServedBoard(args.package, *link, "--flip", flip,
                                     stderr=subprocess.DEVNULL)}
    for b in boards.values():
        b.wait_ready()
    plan = selftest_plan(pkg)
    counts = {name: collections.Counter() for name in boards}
    seconds = {name: 0.0 for name in boards}
    deadline = time.monotonic() + 60 * args.minutes
    console = Console()
    try:
        with console.status("verifying") as status:
            for i in range(args.verifies):
                if time.monotonic() > deadline:
                    console.print("time bound reached")
                    break
                name = "healthy" if i % 2 == 0 else "flipped"
                t0 = time.perf_counter()
                out = verify_board(boards[name].port, pkg, plan, timeout=args.timeout,
                                   retries=args.retries)
                seconds[name] += time.perf_counter() - t0
                counts[name][out.status] += 1
                status.update(f"verify {i + 1}/{args.verifies}: {dict(counts['healthy'])} "
                              f"{dict(counts['flipped'])}")
    finally:
        for b in boards.values():
            b.stop()
    table = Table(title=f"{sum(sum(c.values()) for c in counts.values())} verifies of "
                        f"{len(plan.expected)} vectors, BER {args.ber:g}, {args.drop:.0%} "
                        f"dropped bytes, retries {args.retries}")
    for col in ("board", "PASS", "FAIL", "NO_VERDICT", "false verdicts", "s / verify"):
        table.add_column(col, justify="right")
    for name, c in counts.items():
        false = c["FAIL"] if name == "healthy" else c["PASS"]
        n = sum(c.values()) or 1
        table.add_row(f"{name}" + (f" ({flip})" if name == "flipped" else ""), str(c["PASS"]),
                      str(c["FAIL"]), str(c["NO_VERDICT"]), str(false), f"{seconds[name] / n:.3f}")
    console.print(table)
    console.print("goal: 0 false PASS (flipped board) and 0 false FAIL (healthy board)")


if __name__ == "__main__":
    main()
