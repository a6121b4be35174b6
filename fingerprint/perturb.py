"""Random copies of a model standing in for its deployment: the perturbation families.

A family (`PerturbConfig`) draws models: every weight and bias scaled by (1 + eps),
eps ~ U(-r, r); weight matrices magnitude-pruned at a drawn fraction and fake-quantized with
the deployment's weight quantizer (per-tensor symmetric, max-abs scale, narrow range) at a drawn
bit width; for float models, the outputs of every ReLU fake-quantized as the deployment's
unsigned activation quantizer does, with a clip drawn relative to the batch's largest
activation (data-free: the deployed clip comes from calibration data the generator never sees).
Brevitas models quantize their own weights and activations in forward, so for them noise and
pruning act on the float weights before their quantizers.

Robust generation averages its loss over one family (the generation family, drawn from the
build's bit widths) and keeps examples that survive another (the survival family); the
calibration's benign variants are chosen outside both (`covers`).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial

import torch
import torch.nn as nn
from torch.func import functional_call


@dataclass(frozen=True)
class PerturbConfig:
    """How drawn copies of the model differ from the source."""

    samples: int = 8
    rel_noise: float = 0.03
    quant_bits: tuple[int, ...] = (4,)  # weight bit widths (float models); 0 = float weights
    act_bits: tuple[int, ...] = (4,)  # ReLU output bit widths (float models); 0 = float
    prune: tuple[float, ...] = (0.0,)
    act_clip: tuple[float, float] = (0.4, 1.0)  # clip / largest activation of the batch

    def to_dict(self) -> dict:
        return asdict(self)

    def covers(self, spec: dict) -> bool:
        """Whether a variant described by `spec` (see `calibrate`) is a draw of this family.

        Draws have no fine-tune, no BN folding and no compiler: only parameter noise within
        `rel_noise`, a pruning fraction, and weight/activation quantization at drawn widths.
        """
        kind = spec.get("kind")
        if kind == "ptq":
            return (spec.get("weight_bits") in self.quant_bits
                    and spec.get("act_bits") in self.act_bits and 0.0 in self.prune)
        if kind == "prune":
            return not spec.get("finetune_epochs") and spec.get("fraction") in self.prune
        if kind == "noise":
            return float(spec.get("rel_noise", 1.0)) <= self.rel_noise
        return False


def generation_family(weight_bits: int, act_bits: int) -> PerturbConfig:
    """The deployment chain as the build runs it: its widths, with parameter noise."""
    return PerturbConfig(quant_bits=(weight_bits,), act_bits=(act_bits,), rel_noise=0.03,
                         prune=(0.0,))


def survival_family(weight_bits: int, act_bits: int) -> PerturbConfig:
    """Held out from generation: stronger noise and pruning without fine-tune."""
    return PerturbConfig(samples=16, quant_bits=(weight_bits,), act_bits=(act_bits,),
                         rel_noise=0.06, prune=(0.2, 0.4), act_clip=(0.3, 1.0))


def fake_quant(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-tensor symmetric quantization with a max-abs scale, narrow range, dequantized."""
    qmax = (1 << (bits - 1)) - 1
    scale = w.abs().max().clamp_min(1e-12) / qmax
    return torch.clamp(torch.round(w / scale), -qmax, qmax) * scale


def fake_quant_act(h: torch.Tensor, bits: int, clip: torch.Tensor) -> torch.Tensor:
    """Unsigned activation quantization to `bits` with clip `clip`; straight-through gradient."""
    levels = (1 << bits) - 1
    scale = clip.clamp_min(1e-12) / levels
    q = torch.clamp(torch.round(h / scale), 0, levels) * scale
    return h + (q - h).detach()


def magnitude_prune(w: torch.Tensor, fraction: float) -> torch.Tensor:
    """Zero the `fraction` of entries smallest in magnitude."""
    k = int(round(fraction * w.numel()))
    if k <= 0:
        return w
    cut = w.abs().reshape(-1).kthvalue(k).values
    return torch.where(w.abs() > cut, w, torch.zeros_like(w))


def perturbable(module: nn.Module) -> dict[str, torch.Tensor]:
    """The weights and biases of a model (not quantizer scales nor buffers)."""
    return {
        name: p.detach()
        for name, p in module.named_parameters()
        if name.rsplit(".", 1)[-1] in ("weight", "bias")
    }


class ParamSampler:
    """Draws perturbed copies (parameters and activation quantizers) for `functional_call`."""

    def __init__(self, module: nn.Module, cfg: PerturbConfig, quantize: bool,
                 gen: torch.Generator):
        self.module = module
        self.cfg = cfg
        self.quantize = quantize
        self.gen = gen
        self.base = perturbable(module)
        self.sizes = [p.numel() for p in self.base.values()]
        self.numel = sum(self.sizes)
        self.relus = [m for m in module.modules() if isinstance(m, nn.ReLU)] if quantize else []
        self._hooks: list | None = None  # while `hooked`
        self._acts: list | None = None  # the activation draw `forward` is running

    def _choice(self, options: tuple) -> object:
        return options[int(torch.randint(len(options), (1,), generator=self.gen))]

    def sample(self) -> dict:
        r = self.cfg.rel_noise
        bits = self._choice(self.cfg.quant_bits) if self.quantize and self.cfg.quant_bits else 0
        frac = self._choice(self.cfg.prune) if self.cfg.prune else 0.0
        # one draw for all parameters, in their order: the numbers of one draw per parameter
        eps = (torch.rand(self.numel, generator=self.gen) * 2 - 1) * r
        params = {}
        for (name, p), scale in zip(self.base.items(), (1 + eps).split(self.sizes)):
            q = p * scale.view(p.shape)
            if p.dim() >= 2:
                q = magnitude_prune(q, float(frac))
                if bits:
                    q = fake_quant(q, int(bits))
            params[name] = q
        acts = []
        if self.relus and self.cfg.act_bits:
            lo, hi = self.cfg.act_clip
            for _ in self.relus:
                abits = int(self._choice(self.cfg.act_bits))
                frac_clip = lo + (hi - lo) * float(torch.rand((), generator=self.gen))
                acts.append((abits, frac_clip))
        return {"params": params, "acts": acts}

    @contextmanager
    def hooked(self):
        """The activation quantizers on the module's ReLUs for the duration, applying the draw
        that `forward` runs (and nothing outside it): cheaper than hooking every forward."""
        if self._hooks is not None:
            yield
            return
        self._hooks = [relu.register_forward_hook(partial(self._quantize_act, i))
                       for i, relu in enumerate(self.relus)]
        try:
            yield
        finally:
            for h in self._hooks:
                h.remove()
            self._hooks = None

    def _quantize_act(self, i: int, _m, _inp, out: torch.Tensor) -> torch.Tensor | None:
        if self._acts is None or i >= len(self._acts) or not self._acts[i][0]:
            return None
        bits, frac = self._acts[i]
        clip = out.detach().amax() * frac
        return fake_quant_act(out, bits, clip)

    def forward(self, draw: dict, x: torch.Tensor) -> torch.Tensor:
        with self.hooked():
            self._acts = draw["acts"]
            try:
                return functional_call(self.module, draw["params"], (x,))
            finally:
                self._acts = None
