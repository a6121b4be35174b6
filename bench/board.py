"""Virtual-board benchmark: inferences per second in-process (batch 1 and larger) and over a
pty with the real client against `fpgaprint board serve`, golden model per-vector vs batched
execution, the power-on self-test time, the compute time HELLO claims against the measured
one, and how long `board serve` takes to start (new interpreter, or forked from the
forkserver once it runs), for digits-mlp and tfc-w2a2.

    .venv/bin/python bench/board.py [--models digits-mlp,tfc-w2a2] [--seconds 2]
                                    [--package NAME=DIR ...] [--work DIR] [--no-pty]

Without --package, each model is compiled (fpgaprint build pipeline) and packaged with its
own test data as self-test vectors (in --work, else a temporary directory).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
SELFTEST_COUNT = 100


def make_package(name: str, work: Path) -> Path:
    """Compile zoo:NAME and package it (unsigned) with its test data as self-test vectors."""
    work.mkdir(parents=True, exist_ok=True)
    import contextlib
    import io

    import torch

    from fpgaprint.compiler.build import build_model
    from fpgaprint.compiler.package import finalize_package, write_selftest
    from fpgaprint.core.golden import GoldenModel
    from fpgaprint.core.grid import InputGrid

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        result = build_model(f"zoo:{name}", "Pynq-Z1", work / f"build-{name}")
    fe, grid = result.frontend, InputGrid(8)
    inputs = grid.to_int(fe.data.x_test[:SELFTEST_COUNT]).reshape((-1, *fe.input_shape))
    model = fe.float_model if fe.float_model is not None else fe.torch_model
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(grid.to_float(inputs))).argmax(1).numpy()
    pkg = work / f"pkg-{name}"
    (pkg / "model").mkdir(parents=True)
    shutil.copy2(result.golden_path, pkg / "model" / "golden.onnx")
    raw, _, labels = GoldenModel(result.golden_path).run(inputs)
    write_selftest(pkg, inputs, raw, labels, expected.astype(np.int64),
                   {"checks": ["exact", "fingerprint"], "fingerprint_threshold": 0.5})
    finalize_package(pkg, {"name": name, "board": "Pynq-Z1", "part": "xc7z020clg400-1",
                           "platform": "zynq", "clock_ns": 10.0, "io": result.report["io"]},
                     allow_unsigned=True)
    return pkg


def rate(fn, x: np.ndarray, seconds: float) -> float:
    """Vectors per second of fn(x) repeated for about `seconds` (after one warm-up call)."""
    fn(x)
    n, t0 = 0, time.perf_counter()
    while True:
        fn(x)
        n += len(x)
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return n / elapsed


def bench_model(name: str, pkg: Path, seconds: float, pty: bool) -> dict:
    from fpgaprint.core.golden import GoldenModel
    from fpgaprint.hw_targets.agent import BoardAgent
    from fpgaprint.hw_targets.backends import open_backend

    t0 = time.perf_counter()
    board = open_backend(pkg, allow_unsigned=True)
    out = {"model": name, "open_s": time.perf_counter() - t0}
    st = board.selftest()
    out["selftest_n"], out["selftest_s"] = st["count"], st["seconds"]
    t0 = time.perf_counter()
    BoardAgent(board)  # power-on: identity and self-test
    out["power_on_s"] = time.perf_counter() - t0
    vectors = board.package.vectors()
    x = vectors["inputs"]
    golden = GoldenModel(pkg / "model" / "golden.onnx")
    out["golden_loop"] = rate(lambda v: golden.run(v, batch=False), x[:16], seconds)
    out["golden_batched"] = rate(golden.run, x, seconds)
    out["inproc_b1"] = rate(board.infer, x[:1], seconds)
    out["inproc_b64"] = rate(board.infer, x[:64], seconds)
    out["measured_s"] = 1 / out["inproc_b64"]
    if pty:
        from fpgaprint.harness.client import BoardClient
        from fpgaprint.hw_targets.served import ServedBoard

        for launch in ("exec", "forkserver", "forkserver"):  # the second fork: server up
            t0 = time.perf_counter()
            with ServedBoard(pkg, "--allow-unsigned", launch=launch):
                out[f"start_{launch}_s"] = time.perf_counter() - t0
        with ServedBoard(pkg, "--allow-unsigned") as served:
            port = served.port
            with BoardClient(port, timeout=5.0) as client:
                out["claimed_s"] = client.hello()["infer_s_per_vector"]
                out["pty_b1"] = rate(client.infer, x[:1], seconds)
                out["pty_b64"] = rate(client.infer, x[:64], seconds)
            with BoardClient(port, timeout=5.0, chunk_bytes=60000) as client:
                client.hello()
                out["pty_b64_big"] = rate(client.infer, x[:64], seconds)
                raw, _ = client.infer(x)
                out["pty_exact"] = bool(np.array_equal(raw, vectors["golden_raw"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="digits-mlp,tfc-w2a2")
    ap.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    ap.add_argument("--package", action="append", default=[], metavar="NAME=DIR",
                    help="use an existing package instead of compiling NAME")
    ap.add_argument("--no-pty", action="store_true", help="skip the pty measurement")
    ap.add_argument("--work", type=Path, help="keep compiled packages here (reused when present)")
    args = ap.parse_args()
    os.chdir(ROOT)
    given = dict(p.split("=", 1) for p in args.package)
    console = Console(width=250)
    rows = []
    with tempfile.TemporaryDirectory(prefix="fpgaprint-bench-board-") as tmp:
        work = args.work.resolve() if args.work else Path(tmp)
        for name in args.models.split(","):
            t0 = time.perf_counter()
            if name in given:
                pkg = Path(given[name])
            elif (work / f"pkg-{name}" / "manifest.json").is_file():
                pkg = work / f"pkg-{name}"
            else:
                pkg = make_package(name, work)
            console.print(f"{name}: package ready in {time.perf_counter() - t0:.1f} s")
            rows.append(bench_model(name, pkg, args.seconds, not args.no_pty))
    table = Table(title=f"virtual board ({os.cpu_count()} cores, vectors/s unless noted)")
    cols = [("open_s", "open pkg s", "{:.3f}"), ("selftest_s", "self-test s", "{:.3f}"),
            ("selftest_n", "vectors", "{}"), ("power_on_s", "agent power-on s", "{:.3f}"),
            ("golden_loop", "golden 1/exec", "{:.0f}"),
            ("golden_batched", "golden batched", "{:.0f}"),
            ("inproc_b1", "in-proc b=1", "{:.0f}"), ("inproc_b64", "in-proc b=64", "{:.0f}"),
            ("pty_b1", "pty b=1", "{:.0f}"), ("pty_b64", "pty b=64", "{:.0f}"),
            ("pty_b64_big", "pty b=64 60k frames", "{:.0f}"),
            ("pty_exact", "pty exact", "{}"),
            ("claimed_s", "HELLO s/vector", "{:.2e}"), ("measured_s", "in-proc s/vector", "{:.2e}"),
            ("start_exec_s", "serve start s (exec)", "{:.2f}"),
            ("start_forkserver_s", "serve start s (fork)", "{:.2f}")]
    table.add_column("model")
    for _, title, _ in cols:
        table.add_column(title, justify="right")
    for r in rows:
        table.add_row(r["model"], *(fmt.format(r[k]) if k in r else "-" for k, _, fmt in cols))
    console.print(table)


if __name__ == "__main__":
    main()
