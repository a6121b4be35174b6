"""Verdict reliability on a noisy link with the CLI's default settings: many verifies of a
healthy and of a faulty virtual board over a pty with bit errors and dropped bytes. Reports
the verdict rate, false PASS (faulty board passed), false FAIL (healthy board failed), and the
median / p99 / maximum time of a verify against its deadline. Bounded by count and time.

    .venv/bin/python bench/reliability.py --package build/demo/package \\
        --trusted-key build/demo/keys/signing.pub [--verifies 1000] [--minutes 30]
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from fpgaprint.core.progress import Progress
from fpgaprint.hw_targets.served import ServedBoard


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", type=Path, default=Path("build/demo/package"))
    ap.add_argument("--trusted-key", type=Path, default=Path("build/demo/keys/signing.pub"))
    ap.add_argument("--verifies", type=int, default=1000, help="in total, half per board")
    ap.add_argument("--ber", type=float, default=1e-4)
    ap.add_argument("--drop", type=float, default=0.01)
    ap.add_argument("--minutes", type=float, default=30.0, help="time bound of the whole run")
    ap.add_argument("--seed", type=int, default=7, help="seed of the boards' link faults")
    args = ap.parse_args()

    from fpgaprint.core.golden import GoldenModel
    from fpgaprint.core.package import verify_package
    from fpgaprint.harness.verify import LinkSettings, selftest_plan, verify_board

    settings = LinkSettings()  # exactly the defaults of `fpgaprint verify`
    pkg = verify_package(args.package, trusted_key=args.trusted_key)
    mems = GoldenModel(pkg.golden_path).memories()
    key = [k for k in mems if k.endswith("/weights")][-1]
    flip = f"{key}:0:{mems[key].bits - 1}"
    link = ["--trusted-key", str(args.trusted_key), "--noise-ber", str(args.ber),
            "--drop-rate", str(args.drop), "--seed", str(args.seed)]
    boards = {"healthy": ServedBoard(args.package, *link, stderr=subprocess.DEVNULL),
              "flipped": ServedBoard(args.package, *link, "--flip", flip,
                                     stderr=subprocess.DEVNULL)}
    for b in boards.values():
        b.wait_ready()
    plan = selftest_plan(pkg)
    deadline = settings.deadline_for(plan)
    counts = {name: collections.Counter() for name in boards}
    times: dict[str, list[float]] = {name: [] for name in boards}
    stop_at = time.monotonic() + 60 * args.minutes
    console = Console()
    bounded = False
    try:
        with Progress(Console(stderr=True)) as progress, \
                progress.task("verify", total=args.verifies) as task:
            for i in range(args.verifies):
                if time.monotonic() > stop_at:
                    bounded = True
                    break
                name = "healthy" if i % 2 == 0 else "flipped"
                t0 = time.perf_counter()
                out = verify_board(boards[name].port, pkg, plan, settings)
                times[name].append(time.perf_counter() - t0)
                counts[name][out.status] += 1
                task.advance(detail=f"healthy {dict(counts['healthy'])}, flipped "
                                    f"{dict(counts['flipped'])}", line=False)
    finally:
        for b in boards.values():
            b.stop()
        pkg.close()
    ran = sum(len(t) for t in times.values())
    table = Table(title=f"{ran} of {args.verifies} verifies"
                        f"{' (time bound reached)' if bounded else ''}: {len(plan.expected)} "
                        f"vectors, BER {args.ber:g} + {args.drop:.0%} dropped bytes, CLI "
                        f"defaults (timeout {settings.timeout:g} s, retries {settings.retries}, "
                        f"batch {settings.batch}, deadline {deadline:.1f} s)")
    for col in ("board", "PASS", "FAIL", "NO_VERDICT", "verdicts", "false", "median s", "p99 s",
                "max s"):
        table.add_column(col, justify="right")
    for name, c in counts.items():
        n = sum(c.values()) or 1
        false = c["FAIL"] if name == "healthy" else c["PASS"]
        t = np.array(times[name] or [0.0])
        table.add_row(name + (f" ({flip})" if name == "flipped" else ""), str(c["PASS"]),
                      str(c["FAIL"]), str(c["NO_VERDICT"]),
                      f"{(c['PASS'] + c['FAIL']) / n:.1%}", str(false),
                      f"{np.median(t):.2f}", f"{np.percentile(t, 99):.2f}", f"{t.max():.2f}")
    console.print(table)
    total = sum(sum(c.values()) for c in counts.values()) or 1
    verdicts = sum(c["PASS"] + c["FAIL"] for c in counts.values())
    false = counts["healthy"]["FAIL"] + counts["flipped"]["PASS"]
    worst = max(max(t) for t in times.values() if t) if ran else 0.0
    console.print(f"verdict rate {verdicts / total:.1%} (goal >= 99 %), false PASS/FAIL {false} "
                  f"(goal 0), slowest verify {worst:.2f} s of a {deadline:.1f} s deadline")


if __name__ == "__main__":
    main()
