"""Fingerprint benchmarks: generation time, PGD step vs ART, and the table's headline targets.

    python bench/fingerprint.py [--models digits-mlp,tfc-w2a2] [--quick] [--out build/bench]

Prints figures and whether each target is met (and by how much it is missed); exits 0.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fpgaprint.fingerprint import baselines  # noqa: E402
from fpgaprint.fingerprint.evaluate import EvalConfig, evaluate  # noqa: E402
from fpgaprint.fingerprint.generate import Generator, GenParams, generate  # noqa: E402
from fpgaprint.fingerprint.report import write_report  # noqa: E402
from fpgaprint.fingerprint.source import train_zoo  # noqa: E402

INTRINSIC = ("vanilla", "robust", "sensitive")


def line(name: str, value: str, target: str = "", ok: bool | None = None) -> None:
    mark = "" if ok is None else ("  [met]" if ok else "  [MISSED]")
    print(f"{name:<66} {value:>10}  {target}{mark}", flush=True)


def bench_generation(threads: int) -> None:
    torch.set_num_threads(threads)
    src = train_zoo("digits-mlp")
    generate(src, "vanilla", 10, seed=1)  # warm-up
    t = time.perf_counter()
    fs = generate(src, "robust", 100, seed=0)
    dt = time.perf_counter() - t
    line(f"100 robust examples, digits-mlp ({threads} thread(s))", f"{dt:.2f} s", "< 30 s",
         dt < 30)
    assert len(fs) == 100


def bench_pgd_step(threads: int, batch: int = 256, steps: int = 50) -> None:
    """Seconds per step: our PGD step (vanilla and robust) and ART's PGD, same model, batch."""
    from art.attacks.evasion import ProjectedGradientDescent

    torch.set_num_threads(threads)
    src = train_zoo("digits-mlp")
    t_ours = {}
    for alg in ("vanilla", "robust"):
        gen = Generator(src, alg, GenParams(steps=steps, target_margin=1e9), seed=0)
        t_np = np.arange(batch) % 10
        gen.optimize(t_np[:16])  # warm-up
        t = time.perf_counter()
        gen.optimize(t_np)
        t_ours[alg] = (time.perf_counter() - t) / steps
    x = np.random.default_rng(0).random((batch, 64), dtype=np.float32)
    y = np.eye(10, dtype=np.float32)[np.arange(batch) % 10]
    attack = ProjectedGradientDescent(baselines.art_classifier(src), norm=np.inf, eps=1.0,
                                      eps_step=0.02, max_iter=steps, targeted=True,
                                      batch_size=batch, num_random_init=0, verbose=False)
    attack.generate(x=x[:16], y=y[:16])
    t = time.perf_counter()
    attack.generate(x=x, y=y)
    t_art = (time.perf_counter() - t) / steps
    line(f"PGD step, batch {batch}: ours (vanilla)", f"{1e3 * t_ours['vanilla']:.3f} ms",
         f"ART {1e3 * t_art:.3f} ms: no slower", t_ours["vanilla"] <= t_art)
    line(f"PGD step, batch {batch}: ours (robust, 8 perturbed models)",
         f"{1e3 * t_ours['robust']:.3f} ms", f"= {t_ours['robust'] / t_art:.1f}x one ART step")


def headline(model: str, res: dict) -> None:
    s = res["summary"]
    methods = list(res["methods"])
    print(f"\n== {model}: {res['config']['count']} vectors per method ==")
    rows = [r for r in res["variants"] if r["family"] != "source"]
    for alg in [m for m in INTRINSIC if m in methods]:
        fa_data = [r["name"] for r in rows if r["benign"] and r["detected_data"][alg]]
        det_data = {f: v.get(alg) for f, v in s["detection_data"].items()}
        print(f"  {alg}, threshold calibrated with data "
              f"({res['methods'][alg]['threshold_data']:.2f}): false alarms on "
              f"{', '.join(fa_data) or 'none'}; detection " +
              ", ".join(f"{f} {v:.2f}" for f, v in det_data.items() if v is not None))
        fa = [r["name"] for r in rows if r["benign"] and r["detected"][alg]]
        line(f"{alg}: false alarms on benign variants",
             f"{len(fa)}/{sum(r['benign'] for r in rows)}", "0", not fa)
        if fa:
            worst = min((r["match"][alg], r["name"]) for r in rows if r["benign"])
            print(f"    alarms on {', '.join(fa)}; worst match {worst[0]:.2f} ({worst[1]}) vs "
                  f"threshold {res['methods'][alg]['threshold']:.2f}")
        for fam in ("swap", "transfer", "finetune-shifted", "backdoor"):
            d = s["detection"].get(fam, {}).get(alg)
            if d is None:
                continue
            best = max(r["match"][alg] for r in rows if r["family"] == fam)
            line(f"{alg}: detection of {fam}", f"{d:.2f}", "1.0", d >= 1.0)
            if d < 1.0:
                print(f"    highest attacker match {best:.2f} vs threshold "
                      f"{res['methods'][alg]['threshold']:.2f}")
    sw = s.get("single_weight")
    if sw:
        nat = sw["label"].get("natural") or 0.0
        for alg in [m for m in INTRINSIC if m in methods]:
            v = sw["label"][alg] or 0.0
            ratio = v / nat if nat else (float("inf") if v else float("nan"))
            line(f"{alg}: label-only detection, 1 random weight-bit flip",
                 f"{v:.3f}", f"natural {nat:.3f}: >= 2x", v > 0 and (nat == 0 or ratio >= 2))
        nat_s = sw["label_strict"].get("natural") or 0.0
        for alg in [m for m in INTRINSIC if m in methods]:
            v = sw["label_strict"][alg] or 0.0
            line(f"{alg}: strict label-only (any label differs), 1 weight-bit flip",
                 f"{v:.3f}", f"natural {nat_s:.3f}: >= 2x", v > 0 and v >= 2 * nat_s)
        for alg in methods:
            ex = sw["exact_of_effective"].get(alg)
            line(f"{alg}: exact mode, share of output-changing flips seen",
                 "n/a" if ex is None else f"{ex:.3f}", f"of {sw['effective']} flips: 1.0",
                 None if ex is None else ex >= 1.0)
    eff = s.get("random_exact_of_effective", {})
    for alg in [m for m in INTRINSIC if m in methods]:
        if alg in eff:
            line(f"{alg}: exact mode, random flips (all counts) seen", f"{eff[alg]:.3f}",
                 "1.0", eff[alg] >= 1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="digits-mlp,tfc-w2a2")
    ap.add_argument("--quick", action="store_true", help="smoke run of the table")
    ap.add_argument("--out", default="build/bench")
    ap.add_argument("--skip-table", action="store_true")
    args = ap.parse_args()
    print("== generation speed ==")
    for threads in (1, 2):
        bench_generation(threads)
    bench_pgd_step(1)
    bench_pgd_step(2)
    if args.skip_table:
        return
    torch.set_num_threads(1)
    for name in args.models.split(","):
        cfg = EvalConfig.quick() if args.quick else EvalConfig()
        out = Path(args.out) / f"fingerprint-{name}"
        cfg.build_dir = str(out)
        t = time.perf_counter()
        res, sets = evaluate(f"zoo:{name}", cfg)
        write_report(res, out, sets)
        (out / "bench.json").write_text(json.dumps({"seconds": time.perf_counter() - t}))
        print(f"\n{name}: table in {out}/table.md ({time.perf_counter() - t:.0f} s)")
        headline(name, res)


if __name__ == "__main__":
    main()
