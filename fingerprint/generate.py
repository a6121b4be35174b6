"""Data-free intrinsic examples: vanilla, robust and sensitive.

All three start from uniform noise, take projected sign-gradient steps on the cross-entropy
toward balanced target classes and keep examples whose label and logit margin hold on the
source model after projection onto the accelerator's input grid.

- vanilla: the source model as it is.
- robust: the loss averaged over perturbed copies of the model (parameter noise, pruning and
  fake weight quantization, see `perturb`), and kept only if the label survives fresh draws.
- sensitive: robust, with the examples confined to mid-gray plus high frequencies
  (`highpass`), where a model trained or fine-tuned on other data behaves differently.
"""

from __future__ import annotations

import json
import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from fpgaprint.core.errors import InputError
from fpgaprint.core.fpset import FingerprintSet
from fpgaprint.fingerprint.highpass import highpass
from fpgaprint.fingerprint.perturb import ParamSampler, PerturbConfig
from fpgaprint.fingerprint.source import Model

ALGORITHMS = ("vanilla", "robust", "sensitive")


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
    check_samples: int = 16  # fresh perturbed models an example's label must survive
    highpass_cutoff: float = 0.35
    perturb: PerturbConfig = field(default_factory=PerturbConfig)

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
    """Runs one algorithm on one differentiable model."""

    def __init__(self, model: Model, algorithm: str, params: GenParams, seed: int):
        if algorithm not in ALGORITHMS:
            raise InputError(
                f"unknown algorithm {algorithm!r}; choose from {', '.join(ALGORITHMS)}")
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
        self.robust = algorithm in ("robust", "sensitive")
        self.sampler = ParamSampler(self.module, params.perturb, model.kind == "float", self.gen)
        self.hp = highpass(model.input_shape, params.highpass_cutoff) \
            if algorithm == "sensitive" else None

    def loss(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed cross-entropy toward `t` and each example's worst margin over the models."""
        if not self.robust:
            logits = self.module(x)
            return F.cross_entropy(logits, t, reduction="sum"), _margin(logits.detach(), t)
        total = x.new_zeros(())
        worst = torch.full((len(x),), float("inf"))
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
        """Whether each example keeps its label on `check_samples` fresh perturbed models."""
        ok = np.ones(len(t), dtype=bool)
        if not self.robust:
            return ok
        xt = torch.from_numpy(x)
        with torch.no_grad():
            for _ in range(self.p.check_samples):
                pred = self.sampler.forward(self.sampler.sample(), xt).argmax(1).numpy()
                ok &= pred == t
        return ok

    def run(self, count: int, progress: bool = False) -> FingerprintSet:
        ncls = self.model.num_classes
        want = balanced_targets(count, ncls, self.gen)
        need = np.bincount(want, minlength=ncls)
        kept_q: list[np.ndarray] = []
        kept_t: list[np.ndarray] = []
        kept_m: list[np.ndarray] = []
        have = np.zeros(ncls, dtype=np.int64)
        bar = _progress(progress)
        with bar if bar is not None else nullcontext():
            for rnd in range(self.p.max_rounds):
                missing = np.repeat(np.arange(ncls), np.maximum(need - have, 0))
                if len(missing) == 0:
                    break
                n = min(self.p.batch, max(64, int(math.ceil(len(missing) * self.p.oversample))))
                t = np.resize(missing[torch.randperm(len(missing), generator=self.gen).numpy()],
                              n)
                task = bar.add_task(f"{self.algorithm} round {rnd + 1}", total=self.p.steps) \
                    if bar is not None else None
                x = self.optimize(t, (lambda: bar.advance(task)) if bar is not None else None)
                q = self.grid.to_int(x)
                xf = self.grid.to_float(q)
                m = margins_of(self.model.logits(xf), t)
                ok = (m >= self.p.min_margin) & self.survives(xf, t)
                for i in np.flatnonzero(ok):
                    c = t[i]
                    if have[c] < need[c]:
                        have[c] += 1
                        kept_q.append(q[i])
                        kept_t.append(c)
                        kept_m.append(m[i])
        if (have < need).any():
            short = {int(c): int(need[c] - have[c]) for c in np.flatnonzero(have < need)}
            raise InputError(
                f"{self.algorithm}: could not reach margin {self.p.min_margin} for "
                f"{sum(short.values())} of {count} examples (missing per class: {short}) in "
                f"{self.p.max_rounds} rounds; lower the margin or raise the steps"
            )
        order = np.argsort(np.array(kept_t), kind="stable")
        return FingerprintSet(
            inputs_int=np.stack(kept_q)[order],
            labels=np.array(kept_t)[order],
            margins=np.array(kept_m)[order],
            algorithm=self.algorithm,
            params=self.p.to_dict(),
            seed=self.seed,
            source_sha256=self.model.sha256,
            input_shape=self.model.input_shape,
            grid=self.grid,
        )


def _progress(enabled: bool):
    if not enabled:
        return None
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}"
                    "/{task.total} steps"), TimeElapsedColumn(), transient=True)


def generate(model: Model, algorithm: str, count: int, seed: int = 0,
             params: GenParams | None = None, progress: bool = False) -> FingerprintSet:
    """A fingerprint set of `count` intrinsic examples of `model` (labels balanced)."""
    if count < 1:
        raise InputError(f"count must be at least 1, got {count}")
    return Generator(model, algorithm, params or GenParams(), seed).run(count, progress)
