"""`make demo`: the whole product on the embedded default, through the real CLI.

train → fingerprint → build (FINN+) → signed package → virtual board on a pty → verify PASS →
a board with one high-order weight-bit flip → verify FAIL. Prints a compact summary.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fpgaprint.core.progress import Progress
from fpgaprint.hw_targets.served import ServedBoard

console = Console()


def fpgaprint(*args, check_codes=(0,), log: Path | None = None) -> subprocess.CompletedProcess:
    """Run one `fpgaprint` command; output goes to the demo log."""
    cmd = [sys.executable, "-m", "fpgaprint", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if log is not None:
        with log.open("a") as f:
            f.write(f"$ fpgaprint {' '.join(map(str, args))}\n{proc.stdout}{proc.stderr}\n")
    if proc.returncode not in check_codes:
        console.print(proc.stdout, proc.stderr)
        raise SystemExit(f"fpgaprint {args[0]} exited {proc.returncode}")
    return proc


def high_order_flip(package: Path) -> str:
    """LAYER:INDEX:BIT for the sign (top) bit of the first weight of the last layer."""
    from fpgaprint.core.golden import GoldenModel

    mems = GoldenModel(package / "model" / "golden.onnx").memories()
    key = [k for k in mems if k.endswith("/weights")][-1]
    return f"{key}:0:{mems[key].bits - 1}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="build/demo")
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--board", default="Pynq-Z1")
    args = ap.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    log = out / "demo.log"
    rows: list[tuple[str, str, float]] = []
    t_all = time.perf_counter()

    def stage(title: str, fn):
        t0 = time.perf_counter()
        with Progress(console) as progress, progress.task(title):
            detail = fn()
        rows.append((title, detail, time.perf_counter() - t0))
        console.print(f"[green]✓[/] {title}: {detail}")

    model, fp, pkg = out / "digits-mlp.pt", out / "fingerprint.npz", out / "package"

    stage("train", lambda: fpgaprint("train", "zoo:digits-mlp", "--out", model,
                                     log=log).stdout.strip().split(": ", 1)[-1])
    stage("fingerprint", lambda: (fpgaprint(
        "fingerprint", "generate", model, "--algorithm", "robust", "--count", args.count,
        "--out", fp, "--calibrate", log=log), f"{args.count} robust intrinsic examples")[1])
    stage("keys", lambda: (fpgaprint("keys", "generate", "--out", out / "keys", log=log),
                           "Ed25519 signing key")[1])

    def build():
        fpgaprint("build", model, "--board", args.board, "--out", pkg, "--fingerprint", fp,
                  "--key", out / "keys" / "signing.key", log=log)
        r = json.loads((pkg / "reports" / "build.json").read_text())
        exact = all(e["ok"] for e in r["equivalence"])
        match = r["selftest"]["golden_match_rate"]
        return (f"{len(r['steps'])} steps, {'bit-exact' if exact else 'MISMATCH'} at "
                f"{len(r['equivalence'])} stages, golden match {match:.2f}")

    stage("build + package", build)
    stage("package verify", lambda: fpgaprint("package", "verify", pkg, "--trusted-key",
                                              out / "keys" / "signing.pub", log=log)
          .stdout.strip().splitlines()[-1])

    verdicts = {}

    pub = out / "keys" / "signing.pub"  # the pinned signer: never taken from the package

    def verify(name: str, *faults: str, expect: int):
        with log.open("a") as err, ServedBoard(pkg, "--trusted-key", pub, *faults,
                                               stderr=err) as board:
            proc = fpgaprint("verify", "--port", board.port, "--package", pkg,
                             "--trusted-key", pub, "--json", out / f"verify-{name}.json",
                             "--junit", out / f"verify-{name}.xml", check_codes=(0, 1, 3),
                             log=log)
        verdicts[name] = proc.returncode
        word = {0: "PASS", 1: "FAIL", 3: "NO VERDICT"}[proc.returncode]
        ok = "as expected" if proc.returncode == expect else "[red]UNEXPECTED[/]"
        return f"{word} (exit {proc.returncode}) on {board.port}, {ok}"

    stage("verify healthy board", lambda: verify("healthy", expect=0))
    flip = high_order_flip(pkg)
    stage(f"verify board with flip {flip}", lambda: verify("flipped", "--flip", flip, expect=1))

    table = Table(title="fpgaprint demo", box=None)
    for col in ("stage", "result", "seconds"):
        table.add_column(col)
    for title, detail, secs in rows:
        table.add_row(title, detail, f"{secs:.1f}")
    console.print(table)
    console.print(f"total {time.perf_counter() - t_all:.1f} s; artefacts and log in {out}")
    if verdicts != {"healthy": 0, "flipped": 1}:
        raise SystemExit(f"demo verdicts not as expected: {verdicts}")


if __name__ == "__main__":
    main()
