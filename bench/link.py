"""Link figures: wire efficiency, binary protocol vs MLPerf Tiny text mode, line-rate use.

Boards run in a child process behind a real pty with the line throttled to 8N1 at the given baud.
By default the accelerator is a deterministic stand-in (raw = x @ W, 10 INT16-range outputs)
with the input size of each reference topology: the figures measure the link, not the model.
With --package DIR the virtual board of a built package is measured as well.

    .venv/bin/python bench/link.py [--baud 115200] [--vectors 100] [--package DIR]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fpgaprint.harness.client import BoardClient  # noqa: E402
from fpgaprint.hw_targets.agent import BoardAgent  # noqa: E402
from fpgaprint.hw_targets.link import BoardLink, LinkFaults, PtyTransport  # noqa: E402
from fpgaprint.hw_targets.mlperf import (  # noqa: E402
    MlperfTinyClient,
    MlperfTinyHandler,
    class_scores,
)

TOPOLOGIES = {"digits": (64,), "TFC": (1, 28, 28), "CNV": (3, 32, 32)}
OUTPUTS = 10


class StandIn:
    """Deterministic accelerator stand-in: raw = x @ W (INT16 range), labels = argmax."""

    def __init__(self, name: str, shape: tuple[int, ...]):
        n = int(np.prod(shape))
        self.name, self.shape = name, shape
        self.W = np.random.default_rng(0).integers(-1, 2, size=(n, OUTPUTS))

    def identity(self) -> dict:
        return {"board": "Pynq-Z1", "serial": "BENCH", "package_id": "00" * 32,
                "bitstream_sha256": None, "backend": "stand-in", "name": self.name}

    def infer(self, x):
        raw = np.clip(x.reshape(len(x), -1) @ self.W, -32768, 32767)
        return raw, raw.argmax(axis=1)

    def selftest(self) -> dict:
        return {"passed": True, "count": 0, "exact_mismatches": 0, "label_matches": 0,
                "seconds": 0.0}

    def reset(self) -> None:
        pass


def payload_bytes(x: np.ndarray, raw: np.ndarray, in_itemsize: int = 1) -> tuple[int, int]:
    """Useful bytes each way: inputs in their container type; raw outputs as INT16 + label."""
    return x.size * in_itemsize, raw.size * 2 + raw.shape[0]


def _serve(make_handler, baud: int | None, conn) -> None:
    """Child process: serve a board on a pty until told to stop; report the link's counters."""
    with BoardLink(PtyTransport(), make_handler(), LinkFaults(baud=baud)) as link:
        conn.send(link.url)
        while True:
            msg = conn.recv()
            conn.send(dict(link.stats))
            if msg == "stop":
                return


class ChildBoard:
    """A board in its own process (as `fpgaprint board serve` runs), so host and board do not
    share an interpreter."""

    def __init__(self, make_handler, baud: int | None):
        ctx = mp.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(make_handler, baud, child), daemon=True)
        self.proc.start()
        self.url = self.conn.recv()
        self.stopped = False

    def stats(self, stop: bool = False) -> dict:
        self.conn.send("stop" if stop else "stats")
        self.stopped = stop
        return self.conn.recv()

    def __enter__(self) -> "ChildBoard":
        return self

    def __exit__(self, *exc) -> None:
        if not self.stopped:
            self.stats(stop=True)
        self.proc.join(timeout=10)


def run_binary(backend, x: np.ndarray, baud: int | None) -> dict:
    with ChildBoard(lambda: BoardAgent(backend), baud) as board:
        with BoardClient(board.url, timeout=2.0, baud=baud or 115200) as client:
            client.hello()
            start = board.stats()
            t0 = time.perf_counter()
            raw, labels = client.infer(x)
            seconds = time.perf_counter() - t0
        end = board.stats(stop=True)
    want_raw, _ = backend.infer(x)
    assert (raw == want_raw).all(), "binary protocol returned wrong data"
    return {"seconds": seconds, "in": end["bytes_in"] - start["bytes_in"],
            "out": end["bytes_out"] - start["bytes_out"], "raw": raw, "frames": client.stats}


def mlperf_handler(backend, shape: tuple[int, ...], dtype: str) -> MlperfTinyHandler:
    """A package's text mode (dequantised by its golden tail), or the stand-in's raw scores."""
    package = getattr(backend, "package", None)
    scores = None if package is None else class_scores(package)
    return MlperfTinyHandler(backend, shape, dtype, scores=scores)


def run_mlperf(backend, x: np.ndarray, baud: int | None, dtype: str = "UINT8") -> dict:
    with ChildBoard(lambda: mlperf_handler(backend, x.shape[1:], dtype), baud) as board:
        with MlperfTinyClient(board.url, timeout=30.0, baud=baud or 115200) as host:
            start = board.stats()
            t0 = time.perf_counter()
            _, labels = host.classify(x, dtype)
            seconds = time.perf_counter() - t0
        end = board.stats(stop=True)
    _, want_labels = backend.infer(x)
    assert (labels == want_labels).all(), "MLPerf Tiny mode returned wrong labels"
    return {"seconds": seconds, "in": end["bytes_in"] - start["bytes_in"],
            "out": end["bytes_out"] - start["bytes_out"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baud", type=int, default=115200)
    ap.add_argument("--vectors", type=int, default=100)
    ap.add_argument("--mlperf-vectors", type=int, default=4,
                    help="vectors per topology through MLPerf Tiny mode (it is slow)")
    ap.add_argument("--package", type=Path, help="also measure this package's virtual board")
    args = ap.parse_args()
    console = Console()
    rate = args.baud / 10.0
    rng = np.random.default_rng(1)

    eff = Table(title=f"Wire efficiency, binary protocol ({args.vectors} vectors, unthrottled)")
    for col in ("topology", "in B/vec", "host→board", "board→host", "both ways"):
        eff.add_column(col, justify="right")
    cmp_ = Table(title=f"MLPerf Tiny text mode vs binary protocol at {args.baud} baud")
    for col in ("topology", "vectors", "MLPerf B/vec", "binary B/vec", "bytes ratio",
                "MLPerf s/vec", "binary s/vec", "time ratio"):
        cmp_.add_column(col, justify="right")

    boards = [(name, StandIn(name, shape), "UINT8") for name, shape in TOPOLOGIES.items()]
    if args.package is not None:
        from fpgaprint.hw_targets.backends import open_backend

        dev = open_backend(args.package, "virtual", None, None, allow_unsigned=True,
                           allow_unpinned=True)  # wire efficiency, not trust
        boards.append((f"{dev.package.name} (virtual)", dev, dev.input_datatype))

    for name, backend, dtype in boards:
        shape = getattr(backend, "input_shape", None) or backend.shape
        hi = 255 if dtype == "UINT8" else 1
        x = rng.integers(0, hi + 1, size=(args.vectors, *shape))
        b = run_binary(backend, x, None)
        p_in, p_out = payload_bytes(x, b["raw"])
        eff.add_row(name, str(x[0].size), f"{p_in / b['in']:.1%}", f"{p_out / b['out']:.1%}",
                    f"{(p_in + p_out) / (b['in'] + b['out']):.1%}")
        k = min(args.mlperf_vectors, len(x))
        m = run_mlperf(backend, x[:k], args.baud, dtype)
        bt = run_binary(backend, x[:k], args.baud)
        m_b, b_b = (m["in"] + m["out"]) / k, (bt["in"] + bt["out"]) / k
        cmp_.add_row(name, str(k), f"{m_b:.0f}", f"{b_b:.0f}", f"{m_b / b_b:.1f}x",
                     f"{m['seconds'] / k:.3f}", f"{bt['seconds'] / k:.3f}",
                     f"{m['seconds'] / bt['seconds']:.1f}x")
    console.print(eff)
    console.print(cmp_)

    line = Table(title=f"{args.vectors}-vector verify at {args.baud} baud (8N1, "
                       f"{rate:.0f} B/s each way) vs the line-rate limit")
    for col in ("topology", "seconds", "wire limit s", "of wire limit", "payload limit s",
                "of payload limit", "retries"):
        line.add_column(col, justify="right")
    for name, backend, dtype in boards[:1] + boards[3:]:
        shape = getattr(backend, "input_shape", None) or backend.shape
        x = rng.integers(0, 256 if dtype == "UINT8" else 2, size=(args.vectors, *shape))
        r = run_binary(backend, x, args.baud)
        p_in, p_out = payload_bytes(x, r["raw"])
        wire_limit = max(r["in"], r["out"]) / rate
        payload_limit = max(p_in, p_out) / rate
        line.add_row(name, f"{r['seconds']:.3f}", f"{wire_limit:.3f}",
                     f"{r['seconds'] / wire_limit - 1:+.1%}", f"{payload_limit:.3f}",
                     f"{r['seconds'] / payload_limit - 1:+.1%}", str(r["frames"]["retries"]))
    console.print(line)
    console.print("wire limit: the bytes actually sent, the busier direction at line rate; "
                  "payload limit: inputs only (1 B per UINT8 element).")


if __name__ == "__main__":
    main()
