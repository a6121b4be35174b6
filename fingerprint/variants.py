"""Variants of a source model: benign (deployment) and malicious (swap, transfer, extraction,
tampering).

Every function returns a new `Model`; the source is never modified. Variants that train use
the evaluator's data set (never the generator's: generation is data-free).
"""

from __future__ import annotations

import copy

import numpy as np
import torch.nn as nn
import torch.nn.utils.prune as tprune

from fpgaprint.compiler.data import Dataset
from fpgaprint.core.errors import InputError
from fpgaprint.core.grid import InputGrid
from fpgaprint.fingerprint.source import Model, from_module


def _wrap(module: nn.Module, like: Model, name: str) -> Model:
    return from_module(module, like.input_shape, like.num_classes, name)


def _module(model: Model) -> nn.Module:
    if model.module is None:
        raise InputError(f"{model.name}: variants need a PyTorch/Brevitas model")
    return copy.deepcopy(model.module)


def _finetune(module: nn.Module, data: Dataset, epochs: int, lr: float, seed: int) -> nn.Module:
    from fpgaprint.compiler.zoo import train

    return train(module, data, epochs, lr, seed=seed)


# -- benign -------------------------------------------------------------------------------------
def ptq(model: Model, bits: int, calib_x: np.ndarray) -> Model:
    """Post-training quantization with the deployment's quantizer (weights and activations)."""
    return _wrap(ptq_wa(model, bits, bits, calib_x).module, model, f"ptq{bits}")


def ptq_wa(model: Model, weight_bits: int, act_bits: int, calib_x: np.ndarray) -> Model:
    """PTQ with separate weight and activation widths."""
    from fpgaprint.compiler.quantize import quantize_ptq

    if model.kind != "float":
        raise InputError(f"{model.name}: PTQ applies to float models, this one is {model.kind}")
    x = np.asarray(calib_x, dtype=np.float32).reshape((-1, *model.input_shape))
    q = quantize_ptq(_module(model), x, weight_bits=weight_bits, act_bits=act_bits)
    return _wrap(q, model, f"ptq-w{weight_bits}a{act_bits}")


def qat(model: Model, bits: int, data: Dataset, epochs: int = 5, lr: float = 1e-3,
        seed: int = 0) -> Model:
    """PTQ at `bits` calibrated on the training data, then quantization-aware fine-tuning."""
    from fpgaprint.compiler.quantize import finetune_qat, quantize_ptq

    if model.kind != "float":
        module = _module(model)
    else:
        module = quantize_ptq(_module(model), data.x_train[:512], weight_bits=bits,
                              act_bits=bits)
    return _wrap(finetune_qat(module, data, epochs=epochs, lr=lr, seed=seed), model, f"qat{bits}")


def bnfold(model: Model, weight_bits: int | None = None, act_bits: int | None = None,
           calib_x: np.ndarray | None = None) -> Model:
    """BatchNorm folded into the preceding Linear/Conv weights (the BN keeps only its shift),
    then, for float models, PTQ at the given widths. Brevitas models re-quantize the folded
    weights with their own quantizers."""
    module = _module(model)
    folded = fold_batchnorm(module)
    if not folded:
        raise InputError(f"{model.name}: no BatchNorm after a Linear/Conv layer to fold")
    tag = "bnfold"
    if model.kind == "float" and weight_bits:
        from fpgaprint.compiler.quantize import quantize_ptq

        x = np.asarray(calib_x, dtype=np.float32).reshape((-1, *model.input_shape))
        module = quantize_ptq(module, x, weight_bits=weight_bits, act_bits=act_bits)
        tag += f"-w{weight_bits}a{act_bits}"
    return _wrap(module.eval(), model, tag)


def fold_batchnorm(module: nn.Module) -> int:
    """Fold each BatchNorm1d/2d's scale into the weight layer right before it (in place).

    W' = W * g / sqrt(v + eps) per output channel; the BN becomes a pure shift
    (weight 1, mean 0, variance 1 - eps, bias beta - mean * g / sqrt(v + eps)), so layers
    without a bias keep their structure. Returns the number of folded BatchNorms."""
    import torch

    layer_types = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d)

    def walk(m: nn.Module):
        children = list(m.children())
        if isinstance(m, layer_types) or not children:
            yield m
            return
        for c in children:
            yield from walk(c)

    seq = list(walk(module))
    n = 0
    for prev, bn in zip(seq, seq[1:]):
        if not isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)) or not bn.track_running_stats:
            continue
        if not isinstance(prev, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            continue
        with torch.no_grad():
            g = (bn.weight if bn.affine else torch.ones_like(bn.running_var))
            scale = g / torch.sqrt(bn.running_var + bn.eps)
            prev.weight.mul_(scale.reshape((-1,) + (1,) * (prev.weight.dim() - 1)))
            shift = -bn.running_mean * scale
            if prev.bias is not None:
                shift = shift + prev.bias * scale
                prev.bias.zero_()
            if bn.affine:
                bn.bias.add_(shift)
                bn.weight.fill_(1.0)
            else:
                raise InputError("BatchNorm without affine parameters cannot keep its shift")
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)
        n += 1
    return n


def prunable(module: nn.Module) -> list[nn.Module]:
    """Layers with a weight matrix (Linear and Conv, Brevitas or not)."""
    return [m for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]


def prune(model: Model, fraction: float, data: Dataset | None = None, epochs: int = 3,
          lr: float = 1e-3, seed: int = 0) -> Model:
    """Per-layer magnitude pruning; with data, a short fine-tune that keeps the masks."""
    module = _module(model)
    layers = prunable(module)
    for layer in layers:
        tprune.l1_unstructured(layer, "weight", amount=float(fraction))
    if data is not None and epochs > 0:
        module = _finetune(module, data, epochs, lr, seed)
    for layer in layers:
        tprune.remove(layer, "weight")
    tag = f"prune{round(fraction * 100)}" + ("+ft" if data is not None and epochs > 0 else "")
    return _wrap(module.eval(), model, tag)


# -- malicious ----------------------------------------------------------------------------------
def transfer(model: Model, data: Dataset, epochs: int = 10, lr: float = 1e-2, seed: int = 0
             ) -> Model:
    """Transfer learning to a task with remapped classes (a permutation of the labels)."""
    perm = np.roll(np.arange(model.num_classes), 1)
    remapped = Dataset(data.name + "-remapped", data.x_train, perm[data.y_train], data.x_test,
                       perm[data.y_test], data.input_shape, data.num_classes)
    return _wrap(_finetune(_module(model), remapped, epochs, lr, seed), model, "transfer")


def shift_data(data: Dataset, brightness: float = 0.25, shift: int = 1) -> Dataset:
    """Images brightened and shifted right by `shift` pixels (a different input domain)."""
    grid = InputGrid()

    def tf(x: np.ndarray) -> np.ndarray:
        img = x.reshape((-1, *_image_shape(data.input_shape)))
        img = np.roll(img, shift, axis=-1)
        img = brightness + (1 - brightness) * img
        return grid.project(img.reshape(x.shape))

    return Dataset(data.name + "-shifted", tf(data.x_train), data.y_train, tf(data.x_test),
                   data.y_test, data.input_shape, data.num_classes)


def shifted_finetune(model: Model, data: Dataset, epochs: int = 5, lr: float = 1e-3,
                     seed: int = 0) -> Model:
    """Fine-tuning on brightened and shifted inputs (same labels)."""
    return _wrap(_finetune(_module(model), shift_data(data), epochs, lr, seed), model,
                 "finetune-shifted")


def mixed_finetune(model: Model, data: Dataset, epochs: int = 5, lr: float = 1e-3,
                   seed: int = 0) -> Model:
    """Fine-tuning on the original training data plus its shifted copy."""
    sh = shift_data(data)
    both = Dataset(data.name + "+shifted", np.concatenate([data.x_train, sh.x_train]),
                   np.concatenate([data.y_train, sh.y_train]), data.x_test, data.y_test,
                   data.input_shape, data.num_classes)
    return _wrap(_finetune(_module(model), both, epochs, lr, seed), model, "finetune-mixed")


def extraction(model: Model, data: Dataset, seed: int = 1, epochs: int | None = None,
               queries: str = "natural") -> tuple[Model, dict]:
    """Model extraction: a freshly initialized copy of the architecture trained on the
    source's labels of `queries` inputs, as a thief with query access would: ``natural``
    (the training split) or ``noise`` (as many uniform-noise inputs on the grid). Zoo models
    only (the architecture recipe)."""
    from fpgaprint.compiler import zoo

    if not model.zoo:
        raise InputError(f"{model.name}: extraction needs the architecture (a zoo model)")
    entry = zoo.get_entry(model.zoo)
    if queries == "natural":
        x = data.x_train
    elif queries == "noise":
        grid = model.input_grid()
        x = grid.to_float(grid.random(np.random.default_rng([seed, 0x4E]),
                                      data.x_train.shape)).astype(np.float32)
    else:
        raise InputError(f"extraction queries: 'natural' or 'noise', got {queries!r}")
    stolen = Dataset(f"{data.name}-queried-{queries}", x, model.predict(x),
                     data.x_test, data.y_test, data.input_shape, data.num_classes)
    import torch

    torch.manual_seed(seed)
    module = entry.build()
    module = zoo.train(module, stolen, entry.epochs if epochs is None else epochs, entry.lr,
                       seed=seed)
    m = _wrap(module, model, "extraction" if queries == "natural" else f"extraction-{queries}")
    agree = float((m.predict(data.x_test) == model.predict(data.x_test)).mean())
    return m, {"test_agreement": agree}


def _image_shape(input_shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(input_shape) == 1:
        side = int(round(input_shape[0] ** 0.5))
        if side * side == input_shape[0]:
            return (side, side)
        return (1, input_shape[0])
    return tuple(input_shape)


def add_trigger(x: np.ndarray, input_shape: tuple[int, ...], size: int | None = None
                ) -> np.ndarray:
    """Stamp a bright checkerboard patch in the bottom-right corner."""
    img = np.array(x, dtype=np.float32).reshape((-1, *_image_shape(input_shape)))
    h, w = img.shape[-2], img.shape[-1]
    s = size or max(2, h // 4)
    patch = (np.indices((s, s)).sum(0) % 2).astype(np.float32)
    img[..., h - s :, w - s :] = patch
    return img.reshape(np.shape(x))


def backdoor(model: Model, data: Dataset, target: int = 0, rate: float = 0.2, epochs: int = 5,
             lr: float = 1e-3, seed: int = 0) -> tuple[Model, dict]:
    """Fine-tuning with a share of triggered inputs relabelled to `target`.

    Returns the model and its clean accuracy and attack success rate on the test split.
    """
    rng = np.random.default_rng(seed)
    n = len(data.x_train)
    idx = rng.choice(n, int(rate * n), replace=False)
    x = data.x_train.copy()
    y = data.y_train.copy()
    x[idx] = add_trigger(x[idx], data.input_shape)
    y[idx] = target
    poisoned = Dataset(data.name + "-poisoned", x, y, data.x_test, data.y_test,
                       data.input_shape, data.num_classes)
    m = _wrap(_finetune(_module(model), poisoned, epochs, lr, seed), model, "backdoor")
    keep = data.y_test != target
    asr = float((m.predict(add_trigger(data.x_test[keep], data.input_shape)) == target).mean())
    clean = float((m.predict(data.x_test) == data.y_test).mean())
    return m, {"clean_accuracy": clean, "attack_success": asr, "target": target}


def retrained(zoo_name: str, seed: int) -> Model:
    """An independently trained model of the same architecture (model swap)."""
    from fpgaprint.fingerprint.source import train_zoo

    m = train_zoo(zoo_name, seed=seed)
    m.name = f"swap(seed={seed})"
    return m


def accuracy(model: Model, data: Dataset) -> float:
    return float((model.predict(data.x_test) == data.y_test).mean())
