"""Baseline vector sets at the same budget as the intrinsic examples.

- natural: held-out samples of the evaluator's data set, balanced over classes;
- noise: uniform noise;
- adversarial: near-boundary examples, PGD (ART) from natural samples;
- sensitive-samples: He, Zhang, Lee (CVPR 2019): inputs maximizing the norm of the gradient
  of the predicted logit with respect to the weights, started from natural samples.
Labels are always the source model's predictions on the grid-projected inputs.
"""

from __future__ import annotations

import numpy as np
import torch

from fpgaprint.compiler.data import Dataset
from fpgaprint.core.fpset import FingerprintSet
from fpgaprint.core.grid import InputGrid
from fpgaprint.fingerprint.generate import margins_of
from fpgaprint.fingerprint.perturb import perturbable
from fpgaprint.fingerprint.source import Model

BASELINES = ("natural", "noise", "adversarial", "sensitive-samples")


def _as_set(model: Model, x: np.ndarray, name: str, seed: int, params: dict,
            grid: InputGrid) -> FingerprintSet:
    q = grid.to_int(x)
    logits = model.logits(grid.to_float(q))
    labels = logits.argmax(1)
    return FingerprintSet(q, labels, margins_of(logits, labels), name, params, seed,
                          model.sha256, model.input_shape, grid)


def natural_pick(data: Dataset, count: int, seed: int) -> np.ndarray:
    """Indices of `count` held-out samples, balanced over the true classes."""
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(data.y_test == c))
                 for c in range(data.num_classes)]
    order = [idx[i] for i in range(max(map(len, per_class))) for idx in per_class
             if i < len(idx)]
    return np.array(order[:count])


def natural(model: Model, data: Dataset, count: int, seed: int = 0,
            grid: InputGrid | None = None) -> FingerprintSet:
    x = data.x_test[natural_pick(data, count, seed)]
    return _as_set(model, x, "natural", seed, {}, grid or model.input_grid())


def noise(model: Model, count: int, seed: int = 0, grid: InputGrid | None = None
          ) -> FingerprintSet:
    x = np.random.default_rng(seed).random((count, *model.input_shape), dtype=np.float32)
    return _as_set(model, x, "noise", seed, {}, grid or model.input_grid())


def adversarial(model: Model, data: Dataset, count: int, seed: int = 0, eps: float = 0.1,
                grid: InputGrid | None = None) -> FingerprintSet:
    """Untargeted L-inf PGD (ART) from natural samples, eps small enough to stay near them."""
    from art.attacks.evasion import ProjectedGradientDescent

    x = data.x_test[natural_pick(data, count, seed)].reshape((-1, *model.input_shape))
    torch.manual_seed(seed)
    attack = ProjectedGradientDescent(art_classifier(model), norm=np.inf, eps=eps,
                                      eps_step=eps / 8, max_iter=20, verbose=False)
    adv = attack.generate(x=x.astype(np.float32))
    params = {"eps": eps, "eps_step": eps / 8, "max_iter": 20, "norm": "inf"}
    return _as_set(model, adv, "adversarial", seed, params, grid or model.input_grid())


def art_classifier(model: Model):
    """ART's PyTorch wrapper around a differentiable model (inputs clipped to [0, 1])."""
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model=model.module.eval(), loss=torch.nn.CrossEntropyLoss(),
                             input_shape=tuple(model.input_shape), nb_classes=model.num_classes,
                             clip_values=(0.0, 1.0), device_type="cpu")


def _sensitivity_ascent_vmap(module: torch.nn.Module, names: list[str], x: torch.Tensor,
                             y: torch.Tensor, steps: int, step_size: float) -> torch.Tensor:
    """Per-example ascent on ||d logit_y / d weights||^2, vectorized with torch.func."""
    from torch.func import functional_call, grad, vmap

    params = {n: p.detach() for n, p in module.named_parameters() if n in names}
    onehot = torch.nn.functional.one_hot(y, int(module(x[:1]).shape[1])).float()

    def logit(p, xi, oi):
        return (functional_call(module, p, (xi[None],))[0] * oi).sum()

    def sensitivity(xi, oi):
        g = grad(logit)(params, xi, oi)
        return sum((v**2).sum() for v in g.values())

    step = vmap(grad(sensitivity))
    for _ in range(steps):
        x = (x + step_size * step(x, onehot).sign()).clamp(0.0, 1.0)
    return x


def _sensitivity_ascent_loop(module: torch.nn.Module, names: list[str], x: torch.Tensor,
                             y: torch.Tensor, steps: int, step_size: float) -> torch.Tensor:
    params = [dict(module.named_parameters())[n] for n in names]
    out = []
    for row, yi in zip(x, y.tolist()):
        xi = row[None].clone()
        for _ in range(steps):
            xi.requires_grad_(True)
            grads = torch.autograd.grad(module(xi)[0, yi], params, create_graph=True,
                                        allow_unused=True)
            norm = sum((g**2).sum() for g in grads if g is not None)
            gx, = torch.autograd.grad(norm, xi)
            with torch.no_grad():
                xi = (xi + step_size * gx.sign()).clamp(0.0, 1.0)
        out.append(xi.detach()[0])
    return torch.stack(out)


def sensitive_samples(model: Model, data: Dataset, count: int, seed: int = 0, steps: int = 20,
                      step_size: float = 0.01, grid: InputGrid | None = None
                      ) -> FingerprintSet:
    """Gradient ascent on ||d logit_y / d weights||^2 from natural samples (He et al. 2019)."""
    module = model.module.eval()
    names = list(perturbable(module))
    x0 = data.x_test[natural_pick(data, count, seed)].reshape((-1, *model.input_shape))
    x = torch.from_numpy(x0.astype(np.float32))
    with torch.no_grad():
        y = module(x).argmax(1)
    try:
        x = _sensitivity_ascent_vmap(module, names, x, y, steps, step_size)
    except (RuntimeError, NotImplementedError, TypeError):  # modules torch.func cannot vmap
        x = _sensitivity_ascent_loop(module, names, x, y, steps, step_size)
    p = {"steps": steps, "step_size": step_size, "objective": "||d logit_y / d weights||^2"}
    return _as_set(model, x.detach().numpy(), "sensitive-samples", seed, p,
                   grid or model.input_grid())
