"""Quantize a float PyTorch model with Brevitas: PTQ with calibration, optional QAT fine-tune.

Supported float layers (in an nn.Sequential, nested allowed): Linear, Conv2d, BatchNorm1d/2d,
ReLU, MaxPool2d, Flatten, Dropout, Identity. Inputs are floats in [0, 1] on the input grid;
the compiler feeds the accelerator unsigned integers and folds the grid scale into the graph,
so the first layer needs no input quantizer.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from fpgaprint.core.errors import UnsupportedModelError

SUPPORTED = (nn.Linear, nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d,
             nn.Flatten, nn.Dropout, nn.Identity)


def _flatten(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    if isinstance(model, nn.Sequential):
        out = []
        for name, child in model.named_children():
            out += _flatten(child, f"{prefix}{name}.")
        return out
    if not isinstance(model, SUPPORTED):
        where = prefix.rstrip(".") or type(model).__name__
        raise UnsupportedModelError(
            f"cannot quantize layer {where!r} of type {type(model).__name__}; supported float "
            f"layers: {', '.join(t.__name__ for t in SUPPORTED)} in an nn.Sequential "
            "(or give an already quantized Brevitas model / QONNX file)"
        )
    return [(prefix.rstrip("."), model)]


def _quant_layer(layer: nn.Module, wbits: int, abits: int) -> nn.Module | None:
    import brevitas.nn as qnn

    if isinstance(layer, nn.Linear):
        q = qnn.QuantLinear(layer.in_features, layer.out_features, bias=layer.bias is not None,
                            weight_bit_width=wbits)
    elif isinstance(layer, nn.Conv2d):
        if layer.groups != 1:
            raise UnsupportedModelError("grouped/depthwise Conv2d is not supported for PTQ")
        q = qnn.QuantConv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                            stride=layer.stride, padding=layer.padding,
                            bias=layer.bias is not None, weight_bit_width=wbits)
    elif isinstance(layer, nn.ReLU):
        return qnn.QuantReLU(bit_width=abits, return_quant_tensor=False)
    elif isinstance(layer, (nn.Dropout, nn.Identity)):
        return None
    else:
        import copy

        return copy.deepcopy(layer)
    with torch.no_grad():
        q.weight.copy_(layer.weight)
        if layer.bias is not None:
            q.bias.copy_(layer.bias)
    return q


def quantize_ptq(model: nn.Module, calib_x: np.ndarray, weight_bits: int = 4,
                 act_bits: int = 4) -> nn.Module:
    """Brevitas copy of a float model, activation scales calibrated on `calib_x`."""
    from brevitas.graph.calibrate import calibration_mode

    layers = [_quant_layer(m, weight_bits, act_bits) for _, m in _flatten(model)]
    qmodel = nn.Sequential(*[m for m in layers if m is not None])
    for attr in ("input_shape", "num_classes"):
        if hasattr(model, attr):
            setattr(qmodel, attr, getattr(model, attr))
    qmodel.eval()
    x = torch.from_numpy(np.asarray(calib_x, dtype=np.float32))
    with torch.no_grad(), calibration_mode(qmodel):
        for i in range(0, len(x), 256):
            qmodel(x[i : i + 256])
    return qmodel.eval()


def finetune_qat(qmodel: nn.Module, ds, epochs: int = 10, lr: float = 1e-3, seed: int = 0,
                 progress=None):
    """Quantization-aware fine-tuning of a Brevitas model on a data set (`progress`: a
    `fpgaprint.core.progress.Progress` showing the epochs)."""
    from fpgaprint.compiler.zoo import train

    return train(qmodel, ds, epochs, lr, seed=seed, progress=progress, name="QAT")
