"""The score check on recipes the calibration never saw: does it separate the quiet attacks
from benign compression?

    python bench/score_check.py [--model digits-mlp] [--count 500] [--golden FILE]
                                [--out build/bench]

Generates and calibrates a robust set (`fpgaprint fingerprint generate --calibrate`, with
the build's golden model when given), says whether the set carries the score check and why,
and judges held-out benign compressions and quiet attacks with the pass rule
(`fingerprint.check.check`: labels and, when carried, score). Prints one row per model and
exits 0.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fpgaprint.core.fpset import load_set  # noqa: E402
from fpgaprint.fingerprint import variants  # noqa: E402
from fpgaprint.fingerprint.calibrate import accuracy, dataset_for  # noqa: E402
from fpgaprint.fingerprint.check import check  # noqa: E402
from fpgaprint.fingerprint.source import load_model, train_zoo  # noqa: E402

EPOCHS = 5


def recipes(src, data, golden: Path | None):
    """(side, name, maker) of the held-out benign compressions and the quiet attacks."""
    out = []
    if golden is not None:
        out.append(("benign", "finn-golden", lambda: load_model(golden)))
    if src.kind == "float":
        out.append(("benign", "qat3", lambda: variants.qat(src, 3, data, epochs=EPOCHS)))
    else:
        out.append(("benign", "qat", lambda: variants.qat(src, 0, data, epochs=EPOCHS)))
    for f in (0.5, 0.7):
        out.append(("benign", f"prune{round(100 * f)}+ft10",
                    lambda f=f: variants.prune(src, f, data, epochs=10, seed=1)))
    out += [
        ("attack", "finetune-shifted", lambda: variants.shifted_finetune(src, data, EPOCHS)),
        ("attack", "finetune-mixed", lambda: variants.mixed_finetune(src, data, EPOCHS)),
        ("attack", "backdoor-strong", lambda: variants.backdoor(src, data, rate=0.3,
                                                                 epochs=3 * EPOCHS, lr=5e-3)),
        ("attack", "extraction-natural", lambda: variants.extraction(src, data, seed=7)),
        ("attack", "extraction-noise", lambda: variants.extraction(src, data, seed=8,
                                                                   queries="noise")),
        ("attack", "transfer", lambda: variants.transfer(src, data)),
    ]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="digits-mlp")
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--golden", type=Path, help="the build's model/golden.onnx")
    ap.add_argument("--out", type=Path, default=Path("build/bench"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    fp = args.out / f"score-{args.model}-{args.count}.npz"
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "fpgaprint", "fingerprint", "generate", f"zoo:{args.model}",
           "--count", str(args.count), "--calibrate", "--out", str(fp), "--threads", "1"]
    if args.golden:
        cmd += ["--golden", str(args.golden)]
    subprocess.run(cmd, check=True, capture_output=True)
    fs = load_set(fp)
    cal = fs.calibration
    sc = cal.get("score", {})
    print(f"{args.model}, robust, {len(fs)} vectors ({time.perf_counter() - t0:.0f} s): label "
          f"threshold {fs.threshold:.3f}, score threshold {sc.get('threshold', float('nan')):.4f}"
          f" from {sc.get('worst_benign')}; score check "
          + ("carried" if fs.has_score else "not carried") + f": {cal['score_check']['why']}")
    src = train_zoo(args.model, seed=0)
    if not fs.has_score:  # judge what the check would say at the calibration's threshold
        fs = fs.with_score(src.logits(fs.inputs).astype(np.float32), sc["threshold"])
        print("(not carried: the rows below apply it anyway at that threshold)")
    data = dataset_for(src)
    print(f"source accuracy {accuracy(src, data):.3f}")
    print("side    model                 accuracy  labels  score r [95 % interval]    "
          "score     verdict")
    for side, name, make in recipes(src, data, args.golden):
        t = time.perf_counter()
        m = make()
        m, info = m if isinstance(m, tuple) else (m, {})
        r = check(m, fs)
        s = r.score
        status = s["status"] + ("/MARGINAL" if s.get("marginal") else "")
        extra = f" attack success {info['attack_success']:.2f}" if "attack_success" in info \
            else ""
        print(f"{side:7s} {name:21s} {accuracy(m, data):8.3f}  {r.match_rate:6.3f}  "
              f"{s['correlation']:6.3f} [{s['interval'][0]:6.3f}, {s['interval'][1]:6.3f}]  "
              f"{status:16s}  {r.verdict}{extra} ({time.perf_counter() - t:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
