"""Fingerprint benchmarks: generation time, PGD step vs ART, and the table's headline targets.

    python bench/fingerprint.py [--models digits-mlp,tfc-w2a2] [--quick] [--out build/bench]

Targets (100 vectors per tier; at most 500): no false alarm on held-out benign variants
losing at most 5 points; detection 1.0 on swap, transfer, fine-tune on other data,
extraction (natural and noise inputs), strong backdoor and the impostor trained on the set's
own vectors; boundary tier: label-only detection of single random weight-bit flips of the
deployed model at least 10x the natural-sample baseline (its mean over 10 draws), with no
false alarm on the unmodified deployed model over 20 checks in random order. Also: the
score-level statistic at its own threshold, the vectors each gap needs, the whole
detection/false-alarm trade-off at its zero-false-alarm point, the Uniqueness Score.

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
from fpgaprint.fingerprint.generate import (  # noqa: E402
    INTRINSIC,
    Generator,
    GenParams,
    generate,
)
from fpgaprint.fingerprint.report import calibration_lines, write_report  # noqa: E402
from fpgaprint.fingerprint.source import train_zoo  # noqa: E402

DETECT = ("swap", "transfer", "finetune-other-data", "extraction", "extraction-noise",
          "backdoor-strong", "impostor")


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
    tiers = [m for m in (*INTRINSIC, "boundary") if m in methods]
    print(f"\n== {model}: {res['config']['count']} vectors per method ==")
    for m in tiers:
        print(f"  {m}: {res['config']['count']} vectors generated in "
              f"{res['methods'][m]['seconds']:.1f} s")
    for m in methods:
        c = res["methods"][m]["calibration"]
        if m != "boundary":
            print(f"  {m}: threshold {res['methods'][m]['threshold']:.3f} (benign lower bound, "
                  f"worst {c.get('worst_benign')}); gap to the independent models "
                  f"{c.get('gap', 0):.3f}")
            for text in calibration_lines(c):
                print(f"    {text}")
    rows = [r for r in res["variants"] if r["family"] != "source"]
    scope = [r for r in rows if r["benign"] and r["in_scope"]]
    out_scope = [r["name"] for r in rows if r["benign"] and not r["in_scope"]]
    print(f"  held-out benign variants losing <= 5 points: {', '.join(r['name'] for r in scope)}"
          f"; losing more (not counted): {', '.join(out_scope) or 'none'}")
    for alg in [m for m in INTRINSIC if m in methods]:
        fa = [r["name"] for r in scope if r["verdict"][alg] == "FAIL"]
        marg = [r["name"] for r in scope if r["verdict"][alg] == "MARGINAL"]
        line(f"{alg}: false alarms (FAIL) on held-out benign variants", f"{len(fa)}/{len(scope)}",
             "0", not fa)
        if fa or marg:
            print(f"    FAIL on {', '.join(fa) or 'none'}; MARGINAL on {', '.join(marg) or 'none'}")
        for fam in DETECT:
            fam_rows = [r for r in rows if r["family"] == fam]
            if not fam_rows:
                print(f"    {fam}: no such row (see the table's notes)")
                continue
            d = float(np.mean([r["verdict"][alg] == "FAIL" for r in fam_rows]))
            line(f"{alg}: detection of {fam} ({len(fam_rows)} rows)", f"{d:.2f}", "1.0", d >= 1.0)
            if d < 1.0:
                best = max(r["match"][alg] for r in fam_rows)
                print(f"    highest attacker match {best:.2f} vs threshold "
                      f"{res['methods'][alg]['threshold']:.2f}")
    score_methods = sorted({m for r in rows for m in r.get("score", {})},
                           key=methods.index)
    for alg in score_methods:
        thr = res["methods"][alg]["calibration"]["score"]["threshold"]
        fa = [r["name"] for r in scope if r["score_detected"].get(alg)]
        line(f"{alg}, score level (threshold {thr:.3f}): false alarms",
             f"{len(fa)}/{len(scope)}", "0", not fa)
        if fa:
            print(f"    FAIL on {', '.join(fa)}")
        for fam in DETECT:
            fam_rows = [r for r in rows if r["family"] == fam and alg in r.get("score", {})]
            if fam_rows:
                d = float(np.mean([r["score_detected"][alg] for r in fam_rows]))
                line(f"{alg}, score level: detection of {fam} ({len(fam_rows)} rows)",
                     f"{d:.2f}", "1.0", d >= 1.0)
                if d < 1.0:
                    print(f"    highest attacker score "
                          f"{max(r['score'][alg] for r in fam_rows):.3f} vs {thr:.3f}")
    for alg in score_methods:
        fa = [f for f, by in s.get("both_false_alarm", {}).items() if by.get(alg)]
        line(f"{alg}, label and score checks (either FAIL): benign families with a false "
             "alarm", f"{len(fa)}", "0", not fa)
        for fam in DETECT:
            d = s.get("both_detection", {}).get(fam, {}).get(alg)
            if d is not None:
                line(f"{alg}, label and score checks: detection of {fam}", f"{d:.2f}", "1.0",
                     d >= 1.0)
    to = s.get("tradeoff", {})
    for stat in ("label", "score"):
        for alg, t in to.get(stat, {}).items():
            if alg not in tiers:
                continue
            print(f"  trade-off, {stat}, {alg}: detection at the highest threshold with no "
                  "false alarm: " + ", ".join(f"{f} {t['at_zero'][f]:.2f}" for f in DETECT
                                             if f in t["at_zero"]))
            print("    false alarms the full detection costs: " + ", ".join(
                f"{f} {t['for_full'][f]:.2f}" for f in DETECT if f in t["for_full"]))
    for alg, u in s.get("uniqueness", {}).items():
        print(f"  Uniqueness Score {alg}: {u['uniqueness']:.3f} (robustness "
              f"{u['robustness']:.3f} - transferability {u['transferability']:.3f})")
    sw = s.get("single_weight")
    rep = s.get("repeated_checks", {})
    if sw and "boundary" in methods:
        nd = s.get("natural_draws")
        if nd:
            print(f"  natural baseline over {len(nd['rates'])} draws of "
                  f"{res['config']['count']} test samples: mean {nd['mean']:.3f}, sd "
                  f"{nd['std']:.3f}, range {nd['min']:.3f}-{nd['max']:.3f}")
        nat = nd["mean"] if nd else (sw["label_strict"].get("natural") or 0.0)
        b = sw["label"]["boundary"] or 0.0
        ratio = b / nat if nat else float("inf")
        line(f"boundary: label-only detection, {sw['flips']} single weight-bit flips",
             f"{b:.3f}", f"natural mean (strict) {nat:.3f}: >= 10x (ratio {ratio:.1f})",
             ratio >= 10)
        for alg in tiers:
            if alg != "boundary":
                print(f"    {alg}: FAIL at its threshold {sw['label'][alg]:.3f}, any label "
                      f"differs {sw['label_strict'][alg]:.3f}")
        r = rep.get("boundary")
        if r:
            line("boundary: false alarms on the unmodified deployed model",
                 f"{r['not_pass']}/{r['checks']}", "0 over 20 random-order checks",
                 r["not_pass"] == 0 and r["checks"] >= 20)
        for alg in methods:
            ex = sw["exact_of_effective"].get(alg)
            line(f"{alg}: exact mode, share of output-changing flips seen",
                 "n/a" if ex is None else f"{ex:.3f}", f"of {sw['effective']} flips",
                 None)
    stuck = s.get("detection", {})
    for fam, by in stuck.items():
        if fam.startswith("stuck-at-zero"):
            print(f"  {fam}: " + ", ".join(f"{m} {by[m]:.2f}" for m in tiers
                                            if by.get(m) is not None))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="digits-mlp,tfc-w2a2")
    ap.add_argument("--quick", action="store_true", help="smoke run of the table")
    ap.add_argument("--out", default="build/bench")
    ap.add_argument("--skip-table", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--count", type=int, help="vectors per method (default 100; at most 500)")
    ap.add_argument("--methods", help="comma-separated methods (default: all)")
    args = ap.parse_args()
    if not args.skip_speed:
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
        if args.count:
            cfg.count = args.count
        if args.methods:
            cfg.methods = tuple(args.methods.split(","))
        out = Path(args.out) / f"fingerprint-{name}" / (f"n{cfg.count}" if args.count else "")
        cfg.build_dir = str(Path(args.out) / f"fingerprint-{name}")  # one build per model
        t = time.perf_counter()
        res, sets = evaluate(f"zoo:{name}", cfg)
        write_report(res, out, sets)
        (out / "bench.json").write_text(json.dumps({"seconds": time.perf_counter() - t}))
        print(f"\n{name}: table in {out}/table.md ({time.perf_counter() - t:.0f} s)")
        headline(name, res)


if __name__ == "__main__":
    main()
