"""Compile benchmark: per-step seconds for digits-mlp, tfc-w2a2, cnv-w2a2, and the ratio of
`fpgaprint build` (with equivalence checks and reports) to the bare FINN+ pass sequence on the
same QONNX model, measured alternately in one run.

    .venv/bin/python bench/compile.py [--models digits-mlp,tfc-w2a2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table


def bare_finn(qonnx: Path, out: Path, config, board) -> dict[str, float]:
    """The same FINN+ transformations as the build's steps, without checks or reports."""
    from qonnx.core.modelwrapper import ModelWrapper

    from fpgaprint.compiler.config import finn_config
    from fpgaprint.compiler.steps import STEPS, StepContext, grid_of

    (out / "model").mkdir(parents=True, exist_ok=True)
    model = ModelWrapper(str(qonnx))
    ctx = StepContext(config, board, finn_config(config, board, (out / "finn").resolve()),
                      grid_of(model, config.input_bits), out, lambda *a, **k: None)
    times = {}
    for step in STEPS:
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            model, _ = step.fn(model, ctx)
        times[step.name] = time.perf_counter() - t0
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", default="digits-mlp,tfc-w2a2,cnv-w2a2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--samples", type=int, default=32, help="equivalence vectors per stage")
    args = ap.parse_args()

    from fpgaprint.compiler.build import build_model
    from fpgaprint.compiler.config import BuildConfig
    from fpgaprint.compiler.frontend import resolve
    from fpgaprint.core.boards import get_board
    from fpgaprint.core.finn_env import ensure_finn

    console = Console()
    board = get_board("Pynq-Z1")
    root = Path(tempfile.mkdtemp(prefix="fpgaprint-bench-"))
    ensure_finn(root / "finn")
    summary = Table(title="fpgaprint build vs bare FINN+ passes (same QONNX, alternating)")
    for col in ("model", "build s (median)", "bare FINN+ s (median)", "ratio (median)",
                "ratio min–max"):
        summary.add_column(col, justify="right")
    for name in args.models.split(","):
        cfg = BuildConfig(equivalence_samples=args.samples)
        fe = resolve(f"zoo:{name}", cfg, root / name / "front", lambda *a, **k: None)
        builds, bares, ratios, last_steps = [], [], [], {}
        for r in range(args.repeats):
            t0 = time.perf_counter()
            res = build_model(str(fe.qonnx_path), "Pynq-Z1", root / name / f"b{r}", cfg)
            tb = time.perf_counter() - t0
            t0 = time.perf_counter()
            bare_steps = bare_finn(fe.qonnx_path, root / name / f"f{r}", cfg, board)
            tf = time.perf_counter() - t0
            builds.append(tb)
            bares.append(tf)
            ratios.append(tb / tf)
            last_steps = {s["name"]: s["seconds"] for s in res.report["steps"]}
        steps = Table(title=f"{name}: per-step seconds (last build; bare FINN+ alongside)")
        steps.add_column("step")
        steps.add_column("build", justify="right")
        steps.add_column("bare", justify="right")
        for step, secs in last_steps.items():
            steps.add_row(step, f"{secs:.3f}", f"{bare_steps.get(step, 0):.3f}")
        eq = sum(r["seconds"] for r in res.report["equivalence"])
        steps.add_row("equivalence checks", f"{eq:.3f}", "-")
        console.print(steps)
        summary.add_row(name, f"{statistics.median(builds):.2f}",
                        f"{statistics.median(bares):.2f}", f"{statistics.median(ratios):.2f}",
                        f"{min(ratios):.2f}–{max(ratios):.2f}")
    console.print(summary)
    console.print("goal: ratio ≤ 1.10")


if __name__ == "__main__":
    main()
