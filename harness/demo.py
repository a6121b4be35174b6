"""`make demo`: the whole product on the embedded default, through the real CLI.

train → fingerprint → build (FINN+) → signed package → virtual board on a pty → verify PASS →
a board with one high-order weight-bit flip → verify FAIL. Prints a compact summary. The
signing key in OUT/keys is kept across runs, so a host that trusts its public key still does.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rich.table import Table

from fpgaprint.core.progress import Progress
from fpgaprint.core.progress import console as make_console
from fpgaprint.hw_targets.served import ServedBoard

console = make_console()


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


def clear_keeping_key(out: Path) -> bool:
    """Empty OUT (created if missing) but for a whole signing key pair in OUT/keys; True when
    one was kept. A partial pair is removed, to be made anew."""
    keys = out / "keys"
    out.mkdir(parents=True, exist_ok=True)
    kept = (keys / "signing.key").is_file() and (keys / "signing.pub").is_file()
    for old in out.iterdir():
        if old == keys and kept:
            continue
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()
    return kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="build/demo")
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--board", default="Pynq-Z1")
    args = ap.parse_args()
    out = Path(args.out)
    keys = out / "keys"
    kept = clear_keeping_key(out)
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
    if kept:
        stage("keys", lambda: f"Ed25519 signing key of an earlier run, {keys / 'signing.pub'}")
    else:
        stage("keys", lambda: (fpgaprint("keys", "generate", "--out", keys, log=log),
                               f"new Ed25519 signing key, {keys / 'signing.pub'}")[1])

    def build():
        fpgaprint("build", model, "--board", args.board, "--out", pkg, "--fingerprint", fp,
                  "--key", keys / "signing.key", log=log)
        r = json.loads((pkg / "reports" / "build.json").read_text())
        stages = r["equivalence"]
        bad = [e["stage"] for e in stages if not e["ok"]]
        exact = sum(1 for e in stages if e["ok"] and e["exact"])
        match = r["selftest"]["golden_match_rate"]
        equal = (f"MISMATCH at {', '.join(bad)}" if bad else
                 f"bit-exact at {exact} stages, float32-equal at {len(stages) - exact}")
        return f"{len(r['steps'])} steps, {equal}, golden match {match:.2f}"

    stage("build + package", build)
    stage("package verify", lambda: fpgaprint("package", "verify", pkg, "--trusted-key",
                                              keys / "signing.pub", log=log)
          .stdout.strip().splitlines()[-1])

    verdicts = {}

    pub = keys / "signing.pub"  # the pinned signer: never taken from the package

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
