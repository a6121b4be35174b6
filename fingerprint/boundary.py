"""The fragile tier: boundary vectors of the deployed model, checked strictly by label.

Made from the golden graph (the deployed, quantized model, executed bit-exactly), data-free:

1. pairs of uniform-noise inputs on the grid (at a few brightness scales) that the deployed
   model labels differently are bisected along their segment until the two grid points
   straddling the decision boundary are adjacent; both become candidates, except near-ties
   (final logits closer than `tie_eps` of a raw step), whose label another implementation of
   the host-side scale and bias could break differently;
2. a generation sample of single weight-bit flips (a seeded stream of its own, so evaluations
   can draw others) is applied to the golden model, and each candidate's label is recorded
   with each flip;
3. vectors are chosen greedily for coverage: each pick maximizes the flips it newly exposes,
   with weight 2^-k for a flip already exposed k times, so that the set still catches a flip
   when a few of its vectors are lost; ties go to the smaller logit margin.

A boundary set's labels are the deployed model's, its threshold is 1.0 (any differing label
is FAIL) and its source hash is the golden graph's file hash: it belongs to that build only.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from fpgaprint.core.errors import InputError
from fpgaprint.core.fpset import FingerprintSet
from fpgaprint.core.grid import InputGrid
from fpgaprint.core.words import random_flips
from fpgaprint.fingerprint.intexec import executor
from fpgaprint.fingerprint.sets import check_disjoint
from fpgaprint.fingerprint.source import Model

STRICT = {"method": "strict: every label must equal the deployed (golden) model's label"}
GENERATION_STREAM = 0xB0D  # rng stream of the generation flips: np.random.default_rng([seed, it])


@dataclass
class BoundaryParams:
    pairs: int = 600  # noise pairs bisected per round and scale
    scales: tuple[float, ...] = (1.0, 0.6, 0.3)  # brightness of the noise starts
    flips: int = 600  # generation flips (single weight bits)
    max_rounds: int = 4
    tie_eps: float = 1e-3  # fraction of a raw step below which two logits count as tied
    slow_flips: int = 80  # generation flips when the graph needs FINN's own execution

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


def generation_flips(golden, count: int, seed: int) -> list[tuple[str, int, int]]:
    """The single weight-bit flips a boundary set of `seed` was chosen against."""
    return random_flips(golden.memories(), count,
                        np.random.default_rng([seed, GENERATION_STREAM]), kinds=("weights",))


class _Runner:
    """Labels, logits and flipped labels from the fast executor or FINN's execution."""

    def __init__(self, golden):
        self.golden = golden
        self.ex = executor(golden)

    @property
    def fast(self) -> bool:
        return self.ex is not None

    def run(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        _, logits, labels = (self.ex or self.golden).run(q)
        return logits, labels

    def flip_labels(self, q: np.ndarray, flips: list) -> np.ndarray:
        if self.ex is not None:
            return self.ex.flip_labels(q, flips)
        return np.stack([self.golden.flipped([f]).run(q)[2] for f in flips])


def _tie_eps(golden, params: BoundaryParams) -> float:
    """Final-logit gap under which a vector counts as tied: a fraction of one raw step."""
    scale = 1.0
    for node in golden.model.graph.node:
        if node.op_type == "Mul":
            c = golden.model.get_initializer(node.input[1])
            if c is not None and np.size(c):
                scale = float(np.min(np.abs(c))) or 1.0
    return params.tie_eps * scale


def _margin(logits: np.ndarray) -> np.ndarray:
    top2 = np.sort(logits, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def _bisect(run: _Runner, a: np.ndarray, b: np.ndarray, la: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Grid points on each segment a -> b on both sides of a label change, adjacent."""
    lo = np.zeros(len(a))
    hi = np.ones(len(a))
    span = np.abs(b - a).max(1).astype(np.float64)
    lab_lo = la.copy()
    for _ in range(32):
        if ((hi - lo) * span < 0.5).all():
            break
        mid = (lo + hi) / 2
        xm = np.rint(a + mid[:, None] * (b - a)).astype(np.int64)
        _, lm = run.run(xm)
        same = lm == lab_lo
        lo = np.where(same, mid, lo)
        hi = np.where(same, hi, mid)
    x_lo = np.rint(a + lo[:, None] * (b - a)).astype(np.int64)
    x_hi = np.rint(a + hi[:, None] * (b - a)).astype(np.int64)
    return x_lo, x_hi


def _candidates(run: _Runner, shape: tuple[int, ...], grid: InputGrid, params: BoundaryParams,
                rng: np.random.Generator, eps: float) -> np.ndarray:
    d = int(np.prod(shape))
    starts = []
    for s in params.scales:
        starts.append(np.rint(rng.random((2 * params.pairs, d)) * s * grid.qmax))
    x = np.concatenate(starts).astype(np.int64)
    x = x[rng.permutation(len(x))]
    a, b = x[0::2], x[1::2]
    _, la = run.run(a)
    _, lb = run.run(b)
    keep = la != lb
    x_lo, x_hi = _bisect(run, a[keep], b[keep], la[keep])
    cand = np.concatenate([x_lo, x_hi])
    logits, _ = run.run(cand)
    cand = cand[_margin(logits) > eps]
    return np.unique(cand, axis=0)


def _greedy(detect: np.ndarray, margins: np.ndarray, count: int, taken: np.ndarray
            ) -> list[int]:
    """Indices of `count` candidates by weighted coverage of the flips they expose."""
    cover = np.zeros(detect.shape[1])
    picks: list[int] = []
    avail = ~taken.copy()
    d = detect.astype(np.float64)
    tiebreak = -margins / (np.abs(margins).max() + 1e-12) * 1e-6
    for _ in range(count):
        gain = d @ (0.5 ** cover) + tiebreak
        gain[~avail] = -np.inf
        i = int(np.argmax(gain))
        if not np.isfinite(gain[i]):
            break
        picks.append(i)
        avail[i] = False
        cover += d[i]
    return picks


def generate_boundary(model: Model, count: int, challenge: int = 0, seed: int = 0,
                      params: BoundaryParams | None = None, progress=None
                      ) -> tuple[FingerprintSet, FingerprintSet | None]:
    """`count` boundary vectors of the deployed model (and a disjoint challenge set)."""
    from fpgaprint.fingerprint.source import GoldenRunner

    p = params or BoundaryParams()
    if model.kind != "golden" or not isinstance(model.runner, GoldenRunner):
        raise InputError(
            f"{model.name}: boundary vectors are made from the deployed model: give the build's "
            "model/golden.onnx (a float, Brevitas or QONNX model differs from the accelerator "
            "exactly at the near-ties these vectors sit on)")
    golden = model.runner.golden
    grid = model.runner.grid
    say = progress.log if progress is not None else (lambda msg: None)
    run = _Runner(golden)
    eps = _tie_eps(golden, p)
    rng = np.random.default_rng([seed, 0xB0])
    total = count + challenge
    flips = generation_flips(golden, p.flips if run.fast else min(p.flips, p.slow_flips), seed)
    cand = np.zeros((0, int(np.prod(model.input_shape))), np.int64)
    for rnd in range(p.max_rounds):
        say(f"boundary: round {rnd + 1}, bisecting noise pairs")
        cand = np.unique(np.concatenate([cand, _candidates(run, model.input_shape, grid, p,
                                                           rng, eps)]), axis=0)
        if len(cand) >= 4 * total:
            break
    if len(cand) < total:
        raise InputError(f"boundary: found {len(cand)} boundary candidates, {total} needed "
                         f"(raise pairs or rounds)")
    say(f"boundary: {len(cand)} candidates x {len(flips)} generation flips")
    logits, labels = run.run(cand)
    detect = run.flip_labels(cand, flips).T != labels[:, None]
    margins = _margin(logits)
    taken = np.zeros(len(cand), bool)
    first = _greedy(detect, margins, count, taken)
    taken[first] = True
    second = _greedy(detect, margins, challenge, taken) if challenge else []
    if len(first) < count or len(second) < challenge:
        raise InputError(f"boundary: only {len(first) + len(second)} usable vectors of {total}")
    info = {**p.to_dict(), "candidates": int(len(cand)), "generation_flips": len(flips),
            "generation_stream": [seed, GENERATION_STREAM], "executor":
            "numpy (exact)" if run.fast else "FINN python execution"}

    def make(idx: list[int], covered: float) -> FingerprintSet:
        idx = np.asarray(idx)
        q = cand[idx].reshape((len(idx), *model.input_shape))
        fs = FingerprintSet(q, labels[idx], margins[idx], "boundary",
                            {**info, "generation_flips_exposed": covered}, seed, model.sha256,
                            model.input_shape, grid.bits)
        return fs.with_threshold(1.0, STRICT)

    def covered(idx: list[int]) -> float:
        return float(detect[idx].any(0).mean()) if idx else 0.0

    emb = make(first, covered(first))
    chal = make(second, covered(second)) if challenge else None
    if chal is not None:
        check_disjoint(emb, chal)
    return emb, chal
