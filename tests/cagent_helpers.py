"""The C reference agent in tests: built with the firmware Makefile against a package's headers
and the Verilator HAL, served on one end of a null-modem pair of ptys (a relay thread copies
bytes between the two masters, as socat does), with the package's Verilated BIST top."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import threading
import time
import tty
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = ROOT / "firmware"


def build_agent(pkg, out: Path) -> Path:
    """The agent of a verified package with the Verilator HAL and POSIX line: OUT/build/…"""
    from fpgaprint.hw_targets import cagent

    gen = out / "gen"
    gen.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(pkg.header_path, gen / "selftest_vectors.h")
    cagent.write(pkg, gen / cagent.HEADER)
    subprocess.run(["make", "-s", "-C", str(FIRMWARE), f"GEN={gen}", f"OUT={out / 'build'}",
                    "sim"], check=True, capture_output=True, text=True)
    return out / "build" / "fpgaprint-agent-sim"


def bist_library(rtl_dir: Path) -> Path:
    """The Verilated BIST top around the stitched design (cached by fpgaprint's build)."""
    from fpgaprint.compiler.bist.sim import build_bist
    from fpgaprint.compiler.rtlsim.design import StitchedDesign

    return Path(build_bist(StitchedDesign(rtl_dir)).library)


@contextmanager
def null_modem() -> Iterator[tuple[str, str]]:
    """Two pty paths wired to each other (raw, 8 bit): what one end writes the other reads.
    This process keeps both slaves open, so a side may close and reopen its end."""
    pairs = [os.openpty() for _ in range(2)]
    for _, slave in pairs:
        tty.setraw(slave)
    (m1, s1), (m2, s2) = pairs
    stop = threading.Event()

    def relay() -> None:
        peer = {m1: m2, m2: m1}
        while not stop.is_set():
            ready, _, _ = select.select([m1, m2], [], [], 0.1)
            for fd in ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    continue
                view = memoryview(data)
                while view:
                    view = view[os.write(peer[fd], view):]

    thread = threading.Thread(target=relay, daemon=True)
    thread.start()
    try:
        yield os.ttyname(s1), os.ttyname(s2)
    finally:
        stop.set()
        thread.join(5)
        for fd in (m1, s1, m2, s2):
            os.close(fd)


@contextmanager
def served_agent(binary: Path, library: Path, run_dir: Path, serial: str = "C-AGENT-1",
                 timeout: float = 120.0) -> Iterator[str]:
    """The agent serving one end of a null modem; yields the host's end. It has run its
    power-on self-test (the BIST and the package's vectors) when this yields."""
    with null_modem() as (board_end, host_end):
        env = {**os.environ, "FPGAPRINT_SIM_LIBRARY": str(library),
               "FPGAPRINT_SIM_RUN_DIR": str(run_dir)}
        proc = subprocess.Popen([str(binary), board_end, "--serial", serial], env=env,
                                stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + timeout
            line = ""
            while "serving" not in line:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the agent did not come up: {line}"
                                         f"{proc.stderr.read() if proc.poll() is not None else ''}")
                line = proc.stderr.readline()
            yield host_end
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stderr.close()
