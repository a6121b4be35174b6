"""A host that floods the board and never reads: the board's memory over the flood, and how
long a fresh request waits once the flood stops.

    .venv/bin/python bench/flood.py --package build/demo/package \\
        --trusted-key build/demo/keys/signing.pub [--seconds 60]

Goals: memory flat (within 20 MB of where it started), a fresh HELLO answered within 2 s.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

import numpy as np


def flood(port: str, seconds: float, seed: int = 0) -> dict[str, float]:
    """Write requests to `port` for `seconds` without reading an answer."""
    import serial

    from fpgaprint.hw_targets import protocol as P

    rng = np.random.default_rng(seed)
    frames = [P.encode_frame(P.Frame(P.MsgType.INFER, s % 0xFFFF + 1,
                                     P.pack_array(rng.integers(0, 256, (16, 64)))))
              for s in range(256)]
    frames += [P.encode_frame(P.Frame(P.MsgType.INFO, 7)), rng.bytes(512) + b"\x00"]
    sent = blocked = 0
    with serial.serial_for_url(port, timeout=0, write_timeout=0.05) as s:
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end:
            data = frames[i % len(frames)]
            i += 1
            try:
                sent += s.write(data)
            except serial.SerialTimeoutException:
                blocked += 1  # the board holds the line: backpressure
    return {"bytes": float(sent), "blocked_writes": float(blocked)}


def run(package: Path, trusted_key: Path, seconds: float, sample: float = 1.0) -> dict:
    """Serve a board, flood it, then time a fresh HELLO; memory sampled every `sample` s."""
    import threading

    import psutil

    from fpgaprint.harness.client import BoardClient
    from fpgaprint.hw_targets.served import ServedBoard

    with ServedBoard(package, "--trusted-key", trusted_key, stderr=subprocess.DEVNULL) as b:
        proc = psutil.Process(b.proc.pid)
        with BoardClient(b.port, timeout=2.0) as c:  # warm: every module loaded
            c.hello()
            c.infer(np.zeros((16, 64), dtype=np.int64))
        rss = [proc.memory_info().rss]
        result: dict = {}
        t = threading.Thread(target=lambda: result.update(flood(b.port, seconds)))
        t.start()
        while t.is_alive():
            time.sleep(sample)
            rss.append(proc.memory_info().rss)
            if len(rss) % 10 == 0:
                print(f"{time.strftime('%H:%M:%S')} flooding: board at "
                      f"{rss[-1] / 2**20:.1f} MB", flush=True)
        t.join()
        t0 = time.monotonic()
        with BoardClient(b.port, timeout=2.0, deadline=60) as c:
            c.hello()
        fresh = time.monotonic() - t0
        rss.append(proc.memory_info().rss)
    mb = np.array(rss) / 2**20
    return {"seconds": seconds, "flood_mb": result.get("bytes", 0) / 2**20,
            "blocked_writes": result.get("blocked_writes", 0), "rss_start_mb": mb[0],
            "rss_max_mb": mb.max(), "rss_growth_mb": mb.max() - mb[0],
            "fresh_hello_s": fresh}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", type=Path, default=Path("build/demo/package"))
    ap.add_argument("--trusted-key", type=Path, default=Path("build/demo/keys/signing.pub"))
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    r = run(args.package, args.trusted_key, args.seconds)
    print(f"flood of {r['seconds']:.0f} s, {r['flood_mb']:.1f} MB written "
          f"({r['blocked_writes']:.0f} writes held back by the board), never read")
    print(f"board memory: {r['rss_start_mb']:.1f} MB at start, {r['rss_max_mb']:.1f} MB at most "
          f"(+{r['rss_growth_mb']:.1f} MB; goal within 20 MB)")
    print(f"fresh HELLO after the flood: answered in {r['fresh_hello_s']:.2f} s (goal < 2 s)")


if __name__ == "__main__":
    main()
