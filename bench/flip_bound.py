"""How many of the fidelity table's single weight-bit flips any input can expose by its label.

    .venv/bin/python bench/flip_bound.py GOLDEN.onnx [--inputs 20000] [--seed 0]

The 400 held-out single weight-bit flips of `fingerprint eval` (same seed, the boundary tier's
generation flips left out, as `fingerprint/evaluate.py` draws them) are applied one at a time
to the golden model; a flip counts as exposable when it changes the label (or the raw output)
of at least one of N uniform-noise inputs on the input grid. The share is the ceiling of any
label-level check of that model on such inputs. Prints figures only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fpgaprint.core.golden import GoldenModel  # noqa: E402
from fpgaprint.fingerprint.evaluate import EvalConfig, held_out_singles  # noqa: E402
from fpgaprint.fingerprint.intexec import executor  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("golden", type=Path)
    ap.add_argument("--inputs", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    golden = GoldenModel(args.golden)
    ex = executor(golden)
    if ex is None:
        sys.exit(f"{args.golden}: the fast integer executor does not support this graph")
    singles = held_out_singles(golden, EvalConfig.single_flip_seeds, args.seed)
    shape = golden.model.get_tensor_shape(golden.model.graph.input[0].name)[1:]
    x = np.random.default_rng([args.seed, 5]).integers(0, 256, (args.inputs, int(np.prod(shape))))
    labels, changed = ex.flip_labels(x, singles, raw=True)
    base = ex.run(x)[2]
    by_label = (labels != base[None]).any(1)
    print(f"{args.golden}: {len(singles)} single weight-bit flips, {args.inputs} uniform-noise "
          f"inputs")
    print(f"  exposable by a label: {by_label.mean():.3f} ({int(by_label.sum())})")
    print(f"  exposable by the raw output: {changed.any(1).mean():.3f}")


if __name__ == "__main__":
    main()
