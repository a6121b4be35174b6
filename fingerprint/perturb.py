"""Random parameter perturbations standing in for deployment: noise, pruning, fake quantization.

The robust objectives average their loss over models drawn here: every weight and bias scaled
by (1 + eps), eps ~ U(-r, r); weight matrices magnitude-pruned and fake-quantized with the
deployment's weight quantizer (per-tensor symmetric, max-abs scale, narrow range) at a bit
width drawn per sample. Brevitas models quantize their own weights in forward, so for them the
noise and pruning act on the float weights before their quantizers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from torch.func import functional_call


@dataclass(frozen=True)
class PerturbConfig:
    """How deployed models may differ from the source."""

    samples: int = 8
    rel_noise: float = 0.03
    quant_bits: tuple[int, ...] = (8, 6, 4)  # 0 = keep float weights
    prune: tuple[float, ...] = (0.0, 0.5, 0.7)

    def to_dict(self) -> dict:
        return asdict(self)


def fake_quant(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-tensor symmetric quantization with a max-abs scale, narrow range, dequantized."""
    qmax = (1 << (bits - 1)) - 1
    scale = w.abs().max().clamp_min(1e-12) / qmax
    return torch.clamp(torch.round(w / scale), -qmax, qmax) * scale


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
    """Draws perturbed parameter sets for `functional_call`."""

    def __init__(self, module: nn.Module, cfg: PerturbConfig, quantize: bool,
                 gen: torch.Generator):
        self.module = module
        self.cfg = cfg
        self.quantize = quantize
        self.gen = gen
        self.base = perturbable(module)

    def _choice(self, options: tuple) -> object:
        return options[int(torch.randint(len(options), (1,), generator=self.gen))]

    def sample(self) -> dict[str, torch.Tensor]:
        r = self.cfg.rel_noise
        bits = self._choice(self.cfg.quant_bits) if self.quantize and self.cfg.quant_bits else 0
        frac = self._choice(self.cfg.prune) if self.cfg.prune else 0.0
        out = {}
        for name, p in self.base.items():
            eps = (torch.rand(p.shape, generator=self.gen) * 2 - 1) * r
            q = p * (1 + eps)
            if p.dim() >= 2:
                q = magnitude_prune(q, float(frac))
                if bits:
                    q = fake_quant(q, int(bits))
            out[name] = q
        return out

    def forward(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.module, params, (x,))
