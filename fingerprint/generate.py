"""Data-free intrinsic examples: the paper's C-, RC- and LTRC-examples (vanilla, robust, ltrc).

All three start from uniform noise, take projected sign-gradient steps on the cross-entropy
toward balanced target classes and keep examples whose label and logit margin hold on the
source model after projection onto the accelerator's input grid (docs/fingerprint.md compares
each objective with the paper's).

- vanilla (C-examples): the source model as it is.
- robust (RC-examples): the loss averaged over copies drawn from the deployment chain (the
  build's weight and activation bit widths, parameter noise: `perturb.generation_family`);
  kept only if the label survives every draw of a held-out family (`survival_family`).
- ltrc (LTRC-examples): robust, with the examples confined to mid-gray plus the high
  frequencies of a 2-D Fourier high-pass (`highpass`), where a model trained or fine-tuned on
  other data behaves differently. `sensitive` is accepted as its former name.

The fragile `boundary` tier is made from the deployed model instead (`fingerprint.boundary`).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from fpgaprint.core.errors import InputError
from fpgaprint.core.fpset import FingerprintSet
from fpgaprint.core.progress import Progress
from fpgaprint.fingerprint.highpass import highpass
from fpgaprint.fingerprint.perturb import (
    ParamSampler,
    PerturbConfig,
    generation_family,
    survival_family,
)
from fpgaprint.fingerprint.sets import MAX_COUNT, split_disjoint
from fpgaprint.fingerprint.source import Model

INTRINSIC = ("vanilla", "robust", "ltrc")
ALGORITHMS = (*INTRINSIC, "boundary")
ALIASES = {"sensitive": "ltrc"}  # former name, still accepted
PAPER_NAMES = {"vanilla": "C-examples", "robust": "RC-examples", "ltrc": "LTRC-examples",
               "boundary": "boundary examples (fragile tier, not in the paper)"}


def canonical(algorithm: str) -> str:
    """The algorithm's name, aliases resolved; unknown names are an InputError."""
    name = ALIASES.get(algorithm, algorithm)
    if name not in ALGORITHMS:
        raise InputError(
            f"unknown algorithm {algorithm!r}; choose from {', '.join(ALGORITHMS)}")
    return name


@dataclass
class GenParams:
    """Optimization and selection settings (stored in the set)."""

    steps: int = 100
    step_size: float = 0.02
    min_margin: float = 0.5  # kept if the source's margin after grid projection reaches it
    target_margin: float = 1.0  # an example stops moving once its worst margin reaches it
    oversample: float = 1.5
    max_rounds: int = 10
    batch: int = 512
    grid_bits: int = 8
    weight_bits: int = 4  # the build's widths (BuildConfig): the generation family draws them
    act_bits: int = 4
    highpass_cutoff: float = 0.35
    perturb: PerturbConfig | None = None  # default: generation_family(weight_bits, act_bits)
    survival: PerturbConfig | None = None  # default: survival_family(weight_bits, act_bits)

    def __post_init__(self) -> None:
        if self.perturb is None:
            self.perturb = generation_family(self.weight_bits, self.act_bits)
        if self.survival is None:
            self.survival = survival_family(self.weight_bits, self.act_bits)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


def balanced_targets(count: int, num_classes: int, gen: torch.Generator) -> np.ndarray:
    """`count` labels covering the classes as evenly as possible, in random order."""
    t = np.arange(count) % num_classes
    return t[torch.randperm(count, generator=gen).numpy()]


def margins_of(logits: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor
               ) -> np.ndarray:
    """Target logit minus the best other logit (negative: another class wins)."""
    lg = torch.as_tensor(logits, dtype=torch.float32)
    return _margin(lg, torch.as_tensor(target, dtype=torch.long)).numpy()


def _margin(logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    own = logits.gather(1, t[:, None])[:, 0]
    return own - logits.scatter(1, t[:, None], float("-inf")).max(1).values


class Generator:
    """Runs one intrinsic-example algorithm on one differentiable model."""

    def __init__(self, model: Model, algorithm: str, params: GenParams, seed: int):
        algorithm = canonical(algorithm)
        if algorithm not in INTRINSIC:
            raise InputError(f"{algorithm}: not an intrinsic-example algorithm "
                             f"({', '.join(INTRINSIC)})")
        if model.module is None:
            raise InputError(
                f"{model.name}: generation needs a PyTorch/Brevitas model (gradients); "
                f"{model.kind} models can only be checked"
            )
        self.model = model
        self.algorithm = algorithm
        self.p = params
        self.seed = seed
        self.gen = torch.Generator().manual_seed(seed)
        self.grid = model.input_grid(params.grid_bits)
        self.module = model.module.eval()
        self.robust = algorithm in ("robust", "ltrc")
        quantize = model.kind == "float"
        self.sampler = ParamSampler(self.module, params.perturb, quantize, self.gen)
        self.checker = ParamSampler(self.module, params.survival, quantize,
                                    torch.Generator().manual_seed(seed + 1_000_003))
        self.hp = highpass(model.input_shape, params.highpass_cutoff) \
            if algorithm == "ltrc" else None

    def loss(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed cross-entropy toward `t` and each example's worst margin over the models."""
        if not self.robust:
            logits = self.module(x)
            return F.cross_entropy(logits, t, reduction="sum"), _margin(logits.detach(), t)
        total = x.new_zeros(())
        worst = torch.full((len(x),), float("inf"))
        with self.sampler.hooked():
            for _ in range(self.p.perturb.samples):
                logits = self.sampler.forward(self.sampler.sample(), x)
                total = total + F.cross_entropy(logits, t, reduction="sum")
                worst = torch.minimum(worst, _margin(logits.detach(), t))
        return total / self.p.perturb.samples, worst

    def project(self, x: torch.Tensor, low: torch.Tensor | None) -> torch.Tensor:
        if self.hp is not None:
            x = low + self.hp(x).reshape(x.shape)
        return x.clamp(self.grid.lo, self.grid.hi)

    def optimize(self, t: np.ndarray, on_step=None) -> np.ndarray:
        """PGD from uniform noise toward targets `t`; returns float inputs in the grid's range.

        An example stops moving once its worst margin reaches `target_margin`, so it stays
        close to its noise start instead of drifting to a class prototype that every model
        trained on the same task would recognize.
        """
        shape = (len(t), *self.model.input_shape)
        lo, span = self.grid.lo, self.grid.hi - self.grid.lo
        x = lo + span * torch.rand(shape, generator=self.gen)
        low = torch.full(shape, lo + 0.5 * span) if self.hp is not None else None
        x = self.project(x, low)
        target = torch.from_numpy(t).long()
        bshape = (-1,) + (1,) * len(self.model.input_shape)
        for step in range(self.p.steps):
            x.requires_grad_(True)
            loss, worst = self.loss(x, target)
            grad, = torch.autograd.grad(loss, x)
            active = (worst < self.p.target_margin).float().reshape(bshape)
            decay = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / max(1, self.p.steps)))
            with torch.no_grad():
                x = self.project(x - self.p.step_size * span * decay * active * grad.sign(),
                                 low)
            if on_step:
                on_step()
        return x.detach().numpy()

    def survives(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Whether each example keeps its label on every draw of the survival family (held
        out from the generation family)."""
        ok = np.ones(len(t), dtype=bool)
        if not self.robust:
            return ok
        xt = torch.from_numpy(x)
        with torch.no_grad(), self.checker.hooked():
            for _ in range(self.p.survival.samples):
                pred = self.checker.forward(self.checker.sample(), xt).argmax(1).numpy()
                ok &= pred == t
        return ok

    def run(self, count: int, progress: Progress | None = None) -> FingerprintSet:
        """`count` distinct examples (no two equal on the grid), labels balanced.

        A class whose examples do not survive (robust, ltrc) within `max_rounds` cedes its
        share to the classes that do; the set records the shortfall per class in its params.
        Only when no class yields an example is it an error."""
        ncls = self.model.num_classes
        want = balanced_targets(count, ncls, self.gen)
        need = np.bincount(want, minlength=ncls)
        kept_q: list[np.ndarray] = []
        kept_t: list[int] = []
        kept_m: list[float] = []
        seen: set[bytes] = set()
        have = np.zeros(ncls, dtype=np.int64)
        tried = np.zeros(ncls, dtype=np.int64)
        reasons = {"margin": 0, "survival": 0}
        shortfall: dict[int, int] = {}
        with (progress or Progress(None)).task(f"{self.algorithm} examples") as task:
            for rnd in range(self.p.max_rounds + 1):
                if rnd == self.p.max_rounds:  # one more round: other classes fill the gap
                    short = np.maximum(need - have, 0)
                    donors = np.flatnonzero((have > 0) & (short == 0))
                    if not short.any() or not len(donors):
                        break
                    shortfall = {int(c): int(short[c]) for c in np.flatnonzero(short)}
                    need = have.copy()
                    for i in range(int(short.sum())):
                        need[donors[i % len(donors)]] += 1
                missing = np.repeat(np.arange(ncls), np.maximum(need - have, 0))
                if len(missing) == 0:
                    break
                n = max(64, int(math.ceil(len(missing) * self.p.oversample)))
                t_all = np.resize(
                    missing[torch.randperm(len(missing), generator=self.gen).numpy()], n)
                chunks = range(0, n, self.p.batch)
                task.update(completed=0, total=self.p.steps * len(chunks),
                            detail=f"round {rnd + 1}, {int(have.sum())}/{int(need.sum())} kept")
                for lo in chunks:
                    t = t_all[lo:lo + self.p.batch]
                    x = self.optimize(t, task.advance)
                    q = self.grid.to_int(x)
                    xf = self.grid.to_float(q)
                    m = margins_of(self.model.logits(xf), t)
                    strong = m >= self.p.min_margin
                    ok = strong & self.survives(xf, t)
                    np.add.at(tried, t, 1)
                    reasons["margin"] += int((~strong).sum())
                    reasons["survival"] += int((strong & ~ok).sum())
                    for i in np.flatnonzero(ok):
                        c, key = t[i], q[i].tobytes()
                        if have[c] < need[c] and key not in seen:
                            seen.add(key)
                            have[c] += 1
                            kept_q.append(q[i])
                            kept_t.append(int(c))
                            kept_m.append(float(m[i]))
            # the closing line says what was kept, not what the last round started with
            task.update(detail=f"{len(kept_t)}/{int(need.sum())} kept", line=False)
        if (have < need).any() or not kept_t:
            short = {int(c): int(need[c] - have[c]) for c in np.flatnonzero(have < need)}
            why = ("the margin" if reasons["margin"] >= reasons["survival"] else
                   "survival of the held-out perturbations")
            raise InputError(
                f"{self.algorithm}: {sum(short.values())} of {count} examples missing (per "
                f"class: {short}) after {self.p.max_rounds} rounds; the limit was {why} "
                f"({reasons['margin']} candidates below margin {self.p.min_margin}, "
                f"{reasons['survival']} did not survive); raise --steps or lower the margin")
        params = self.p.to_dict()
        if shortfall:
            params["class_shortfall"] = shortfall
        order = np.argsort(np.array(kept_t), kind="stable")
        return FingerprintSet(
            inputs_int=np.stack(kept_q)[order],
            labels=np.array(kept_t)[order],
            margins=np.array(kept_m)[order],
            algorithm=self.algorithm,
            params=params,
            seed=self.seed,
            source_sha256=self.model.sha256,
            input_shape=self.model.input_shape,
            grid=self.grid,
        )


def check_count(count: int, flag: str = "count") -> int:
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_COUNT:
        raise InputError(f"{flag} must be an integer from 1 to {MAX_COUNT}, got {count!r}")
    return count


def generate(model: Model, algorithm: str, count: int, seed: int = 0,
             params: GenParams | None = None, progress: Progress | None = None
             ) -> FingerprintSet:
    """A fingerprint set of `count` examples of `model` (labels balanced).

    `boundary` needs the deployed model (a golden graph): see `fingerprint.boundary`."""
    return generate_pair(model, algorithm, count, 0, seed, params, progress)[0]


def generate_pair(model: Model, algorithm: str, count: int, challenge: int = 0, seed: int = 0,
                  params=None, progress: Progress | None = None
                  ) -> tuple[FingerprintSet, FingerprintSet | None]:
    """An embedded set of `count` examples and, when `challenge` > 0, a disjoint challenge set
    of that many, from one run: no quantized input of one appears in the other."""
    algorithm = canonical(algorithm)
    check_count(count)
    if challenge:
        check_count(challenge, "challenge count")
    if algorithm == "boundary":
        from fpgaprint.fingerprint.boundary import BoundaryParams, generate_boundary

        if params is not None and not isinstance(params, BoundaryParams):
            raise InputError("boundary generation takes BoundaryParams")
        with (progress or Progress(None)).task("boundary vectors"):
            return generate_boundary(model, count, challenge, seed, params, progress)
    if params is not None and not isinstance(params, GenParams):
        raise InputError(f"{algorithm} generation takes GenParams")
    fs = Generator(model, algorithm, params or GenParams(), seed).run(count + challenge,
                                                                     progress)
    if not challenge:
        return fs, None
    return split_disjoint(fs, count, seed)
