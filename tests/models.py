"""Tiny Brevitas models of the shapes users bring (built here, never downloaded), exported
as users export them; each compiles in seconds."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn


def _seed(seed: int) -> None:
    torch.manual_seed(seed)


def _input_quant_mlp(input_quant: nn.Module) -> tuple[nn.Module, tuple[int, ...]]:
    """`input_quant`, then a 3-bit MLP 16 → 12 → 5 (the caller seeds)."""
    import brevitas.nn as qnn

    model = nn.Sequential(
        input_quant,
        qnn.QuantLinear(16, 12, bias=False, weight_bit_width=3),
        nn.BatchNorm1d(12),
        qnn.QuantReLU(bit_width=3),
        qnn.QuantLinear(12, 5, bias=False, weight_bit_width=3),
    )
    return _settle(model, (16,)), (16,)


def signed_input_mlp(seed: int = 0) -> tuple[nn.Module, tuple[int, ...]]:
    """A signed 8-bit input quantizer with scale 1/128 (inputs in [-1, 1)), then an MLP."""
    import brevitas.nn as qnn
    from brevitas.quant import Int8ActPerTensorFixedPoint

    _seed(seed)
    return _input_quant_mlp(
        qnn.QuantIdentity(act_quant=Int8ActPerTensorFixedPoint, scaling_impl_type="const",
                          scaling_init=1.0, return_quant_tensor=True))


def unsigned4_input_mlp(seed: int = 0) -> tuple[nn.Module, tuple[int, ...]]:
    """An unsigned 4-bit input quantizer of its own (not the default 8-bit grid)."""
    import brevitas.nn as qnn
    from brevitas.quant import Uint8ActPerTensorFloat

    _seed(seed)
    return _input_quant_mlp(
        qnn.QuantIdentity(act_quant=Uint8ActPerTensorFloat, bit_width=4,
                          return_quant_tensor=True))


def _conv_block(cin: int, k, **conv) -> list[nn.Module]:
    """A 3-bit conv `cin` → 4 channels (`conv`: its other arguments) → BN → 3-bit ReLU."""
    import brevitas.nn as qnn

    return [qnn.QuantConv2d(cin, 4, k, bias=False, weight_bit_width=3, **conv),
            nn.BatchNorm2d(4), qnn.QuantReLU(bit_width=3, return_quant_tensor=True)]


def _conv_front(cin: int, k, **conv) -> list[nn.Module]:
    """The CNNs' front: a 4-bit input quantizer, then `_conv_block` (built in this order)."""
    import brevitas.nn as qnn

    return [qnn.QuantIdentity(bit_width=4, return_quant_tensor=True), *_conv_block(cin, k, **conv)]


def depthwise_cnn(seed: int = 0) -> tuple[nn.Module, tuple[int, ...]]:
    """Conv → depthwise conv (groups = channels, VVAU) → linear."""
    import brevitas.nn as qnn

    _seed(seed)
    model = nn.Sequential(
        *_conv_front(2, 3),
        *_conv_block(4, 3, groups=4),
        nn.Flatten(),
        qnn.QuantLinear(4 * 2 * 2, 5, bias=False, weight_bit_width=3),
    )
    return _settle(model, (2, 6, 6)), (2, 6, 6)


def avgpool_cnn(rounding: str, seed: int = 0) -> tuple[nn.Module, tuple[int, ...]]:
    """Conv → Brevitas TruncAvgPool2d with the given rounding ("round" or "floor"), or with
    `trunc_quant=TruncTo8bit` ("to8bit": FLOOR, 8 output bits, MSB-preserving scale)."""
    import brevitas.nn as qnn
    from brevitas.quant import TruncTo8bit

    _seed(seed)
    pool = (qnn.TruncAvgPool2d(2, trunc_quant=TruncTo8bit, return_quant_tensor=True)
            if rounding == "to8bit" else
            qnn.TruncAvgPool2d(2, bit_width=3, float_to_int_impl_type=rounding.upper(),
                               return_quant_tensor=True))
    model = nn.Sequential(
        *_conv_front(2, 3),
        pool,
        nn.Flatten(),
        qnn.QuantLinear(4 * 2 * 2, 5, bias=False, weight_bit_width=3),
    )
    return _settle(model, (2, 6, 6)), (2, 6, 6)


def maxpool_cnn(seed: int = 0) -> tuple[nn.Module, tuple[int, ...]]:
    """Conv → ReLU → max pool → conv → ReLU → linear, CNV's pattern in small: FINN+ has no
    RTL pool, so its HLS pool splits the RTL layers in two runs."""
    import brevitas.nn as qnn

    _seed(seed)
    model = nn.Sequential(
        *_conv_front(2, 3),
        nn.MaxPool2d(2),
        *_conv_block(4, 3),
        nn.Flatten(),
        qnn.QuantLinear(4 * 2 * 2, 5, bias=False, weight_bit_width=3),
    )
    return _settle(model, (2, 10, 10)), (2, 10, 10)


def conv_fc_cnn(seed: int = 0) -> tuple[nn.Module, tuple[int, ...]]:
    """Conv (per-channel weight scales) → BN → ReLU → flatten → linear over a (2, 6, 6)
    input: every layer has an RTL variant, so the whole design is stitched, and its input
    is transposed NCHW → NHWC on the host (two channels change the order)."""
    import brevitas.nn as qnn

    _seed(seed)
    model = nn.Sequential(
        *_conv_front(2, 3, weight_scaling_per_output_channel=True),
        nn.Flatten(),
        qnn.QuantLinear(4 * 4 * 4, 5, bias=False, weight_bit_width=3),
    )
    return _settle(model, (2, 6, 6)), (2, 6, 6)


def kws_cnn(seed: int = 0) -> tuple[nn.Module, tuple[int, ...]]:
    """1-D convolutions over a (1, 1, 64) input with (1, 5) kernels (the keyword-spotting
    shape): the first layer's matrix is 5 wide, so FINN+ folds it to SIMD = MW = 5."""
    import brevitas.nn as qnn

    _seed(seed)
    model = nn.Sequential(
        *_conv_front(1, (1, 5)),
        *_conv_block(4, (1, 5), stride=(1, 2)),
        nn.Flatten(),
        qnn.QuantLinear(4 * 1 * 28, 5, bias=False, weight_bit_width=3),
    )
    return _settle(model, (1, 1, 64)), (1, 1, 64)


class Residual(nn.Module):
    """x → fc1 → relu → (fc2 → relu) + skip → fc3: the Add joins two quantized branches."""

    def __init__(self):
        import brevitas.nn as qnn

        super().__init__()
        self.inp = qnn.QuantIdentity(bit_width=4, return_quant_tensor=True)
        self.fc1 = qnn.QuantLinear(8, 8, bias=False, weight_bit_width=3)
        self.relu1 = qnn.QuantReLU(bit_width=4, return_quant_tensor=True)
        self.fc2 = qnn.QuantLinear(8, 8, bias=False, weight_bit_width=3)
        self.relu2 = qnn.QuantReLU(act_quant=self.relu1.act_quant, return_quant_tensor=True)
        self.join = qnn.QuantIdentity(bit_width=4, return_quant_tensor=True)
        self.fc3 = qnn.QuantLinear(8, 4, bias=False, weight_bit_width=3)

    def forward(self, x):
        a = self.relu1(self.fc1(self.inp(x)))
        b = self.relu2(self.fc2(a))
        return self.fc3(self.join(a + b))


def residual_mlp(seed: int = 0) -> tuple[nn.Module, tuple[int, ...]]:
    _seed(seed)
    return _settle(Residual(), (8,)), (8,)


def binary_weight_mlp(seed: int = 0) -> tuple[nn.Module, tuple[int, ...]]:
    """Bipolar (±1) weights, 2-bit activations: the 1-bit memories of FINN's BNNs."""
    import brevitas.nn as qnn
    from brevitas.quant import SignedBinaryWeightPerTensorConst

    _seed(seed)
    model = nn.Sequential(
        qnn.QuantIdentity(bit_width=2, return_quant_tensor=True),
        qnn.QuantLinear(32, 64, bias=False, weight_quant=SignedBinaryWeightPerTensorConst),
        nn.BatchNorm1d(64),
        qnn.QuantReLU(bit_width=2, return_quant_tensor=True),
        qnn.QuantLinear(64, 10, bias=False, weight_quant=SignedBinaryWeightPerTensorConst),
    )
    return _settle(model, (32,)), (32,)


def softmax_mlp(seed: int = 0, head: nn.Module | None = None) -> tuple[nn.Module,
                                                                     tuple[int, ...]]:
    """A classifier that ends in Softmax (or `head`), as exported classifiers often do."""
    import brevitas.nn as qnn

    _seed(seed)
    model = nn.Sequential(
        qnn.QuantIdentity(bit_width=4, return_quant_tensor=True),
        qnn.QuantLinear(16, 12, bias=False, weight_bit_width=3),
        nn.BatchNorm1d(12),
        qnn.QuantReLU(bit_width=3),
        qnn.QuantLinear(12, 5, bias=False, weight_bit_width=3),
        nn.Softmax(dim=1) if head is None else head,
    )
    return _settle(model, (16,)), (16,)


class Ranked(nn.Module):
    """The Softmax classifier's body, answering with its argmax or its top-2 indices."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.body = softmax_mlp()[0][:-1]

    def forward(self, x):
        y = self.body(x)
        return y.argmax(1, keepdim=True) if self.kind == "argmax" else torch.topk(y, 2)[1]


def ranked_mlp(kind: str) -> tuple[nn.Module, tuple[int, ...]]:
    """`kind`: "argmax" or "topk"."""
    return Ranked(kind).eval(), (16,)


def activation_mlp(act: nn.Module, seed: int = 0) -> tuple[nn.Module, tuple[int, ...]]:
    """Linear (float bias) → `act` (Sigmoid, Tanh, Hardsigmoid, Hardtanh) → 4-bit quantizer
    → Linear."""
    import brevitas.nn as qnn

    _seed(seed)
    model = nn.Sequential(
        qnn.QuantIdentity(bit_width=4, return_quant_tensor=True),
        qnn.QuantLinear(16, 12, bias=True, weight_bit_width=3),
        act,
        qnn.QuantIdentity(bit_width=4, return_quant_tensor=True),
        qnn.QuantLinear(12, 5, bias=False, weight_bit_width=3),
    )
    return _settle(model, (16,)), (16,)


class InputConcat(nn.Module):
    """The quantized input joined with itself (`torch.cat([q, q])`), then a linear layer."""

    def __init__(self):
        import brevitas.nn as qnn

        super().__init__()
        self.inp = qnn.QuantIdentity(bit_width=4)
        self.fc = qnn.QuantLinear(16, 5, bias=False, weight_bit_width=3)

    def forward(self, x):
        q = self.inp(x)
        return self.fc(torch.cat([q, q], dim=1))


def input_concat(seed: int = 0) -> tuple[nn.Module, tuple[int, ...]]:
    _seed(seed)
    return InputConcat().eval(), (8,)


def _settle(model: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    """Give batch norms non-trivial statistics (a few forward passes in training mode)."""
    g = torch.Generator().manual_seed(1)
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.rand((32, *shape), generator=g) * 2 - 1)
    return model.eval()


def export(model: nn.Module, shape: tuple[int, ...], path: Path,
           dynamo: bool | None = None) -> Path:
    """The QONNX file a user would bring: Brevitas' `export_qonnx` with its defaults (torch's
    dynamo exporter), or `dynamo=False` for the TorchScript one of FINN's own examples."""
    import contextlib
    import io

    from brevitas.export import export_qonnx

    kwargs = {} if dynamo is None else {"dynamo": dynamo}
    model.eval()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        export_qonnx(model, torch.zeros((1, *shape)), str(path), **kwargs)
    return path


def build_exported(model: nn.Module, shape: tuple[int, ...], tmp_path: Path, samples: int = 8,
                   dynamo: bool | None = None):
    """Export `model` as a user would (`dynamo` as in `export`) and build it for Pynq-Z1
    (unsigned): (the BuildResult, its equivalence stages by name), every stage already checked
    to agree."""
    from fpgaprint.compiler.build import build_model
    from fpgaprint.compiler.config import BuildConfig

    path = export(model, shape, tmp_path / "m.onnx", dynamo=dynamo)
    res = build_model(str(path), "Pynq-Z1", tmp_path / "o",
                      BuildConfig(equivalence_samples=samples), allow_unsigned=True)
    stages = {r["stage"]: r for r in res.report["equivalence"]}
    assert all(r["ok"] for r in stages.values()), stages
    return res, stages
