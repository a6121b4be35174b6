"""Brevitas' truncated average pools in forms FINN+'s `qonnx_to_finn` converts exactly.

Brevitas exports `TruncAvgPool2d` as AveragePool → Trunc (QONNX Trunc v2: input scale,
input bit width, output scale, output bit width). FINN+ 1.6 turns the pair into
Div → QuantAvgPool2d → Mul(output scale), whose right shift is `accumulator bits − output
bits`, clamped at 0. With `trunc_quant=TruncTo8bit` (MSB-preserving scaling) the output has
more bits than the sum (e.g. a 2×2 pool of 3-bit values: a 5-bit sum, 8 output bits): the
Trunc shifts left, the output scale is the input scale / 2^(8 − 5), and FINN+'s clamped shift
drops the left shift while keeping the smaller scale, so its result is 2^3 times too small
(docs/thresholds.md). A left shift loses nothing: such a Trunc is the identity on its grid,
and is rewritten with its input's bit width and scale, which FINN+ converts exactly.
"""

from __future__ import annotations

import numpy as np

from fpgaprint.compiler.monotonic import _const, add_constant


def widening_truncs(model, log) -> list[str]:
    """Rewrite each Trunc whose output has more bits than its input (a lossless left shift)
    to output bits = input bits and output scale = input scale. Returns the nodes changed."""
    from fpgaprint.compiler.usernodes import user_node

    done = []
    for node in model.graph.node:
        if node.op_type != "Trunc" or len(node.input) < 6:
            continue  # Trunc v1 has no output scale: FINN+ converts it as written
        scale, _, in_bits, out_scale, out_bits = (_const(model, t) for t in node.input[1:6])
        if any(v is None or v.size != 1 for v in (scale, in_bits, out_scale, out_bits)):
            continue
        if float(out_bits) <= float(in_bits):
            continue
        for k, value in ((4, scale), (5, in_bits)):
            name = f"{node.name}_unshifted_{k}"
            add_constant(model, name, np.asarray(value).reshape(
                model.get_initializer(node.input[k]).shape))
            node.input[k] = name
        who = user_node(model, node)
        log(f"{who}: output widened from {int(in_bits)} to {int(out_bits)} bits (a lossless "
            f"left shift) kept at {int(in_bits)} bits for FINN+'s average pool")
        done.append(who)
    return done
