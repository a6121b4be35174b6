"""The compiler's named steps: each a function (ModelWrapper, BuildContext) -> ModelWrapper
that calls FINN+/QONNX transformations. `STEPS` is the ordered flow."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import numpy as np
from onnx import TensorProto, helper

from fpgaprint.core.errors import UnsupportedModelError

# ONNX/QONNX ops the front end accepts (anything else is named in an error before FINN runs).
SUPPORTED_OPS = {
    "Quant", "BipolarQuant", "Trunc", "MatMul", "Gemm", "Conv", "Add", "Sub", "Mul", "Div",
    "Relu", "BatchNormalization", "MaxPool", "AveragePool", "GlobalAveragePool", "Reshape",
    "Flatten", "Transpose", "Identity", "Constant", "Shape", "Gather", "Unsqueeze", "Squeeze",
    "Concat", "Pad", "MultiThreshold", "TopK", "Sign", "Cast", "Clip",
}
HW_DOMAIN = "finn.custom_op.fpgadataflow"
# host-side ops the dataflow partition may leave outside the accelerator
HOST_OPS = {"Mul", "Add", "Reshape", "Transpose", "Flatten", "TopK", "Identity"}


@dataclass
class BuildContext:
    """What steps need besides the model: the config, the board, where to write."""

    config: object  # BuildConfig
    board: object  # hw_targets.boards.Board
    out: object  # Path
    log: Callable[[str], None]
    report: dict


def check_supported_ops(model) -> None:
    """Name the first node whose op the compiler cannot map."""
    for node in model.graph.node:
        if node.op_type not in SUPPORTED_OPS:
            raise UnsupportedModelError(
                f"unsupported operator {node.op_type} at node {node.name or '(unnamed)'} "
                f"(inputs {list(node.input)}); supported: {', '.join(sorted(SUPPORTED_OPS))}"
            )


def step_qonnx_to_finn(model, ctx):
    """QONNX clean-up, then conversion of Quant nodes into FINN-ONNX (MultiThreshold)."""
    from finn.transformation.qonnx.convert_qonnx_to_finn import ConvertQONNXtoFINN
    from qonnx.util.cleanup import cleanup_model

    model = cleanup_model(model)
    return model.transform(ConvertQONNXtoFINN())


def step_tidy_up(model, ctx):
    from qonnx.transformation.fold_constants import FoldConstants
    from qonnx.transformation.general import (
        GiveReadableTensorNames,
        GiveUniqueNodeNames,
        RemoveStaticGraphInputs,
    )
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    for t in (InferShapes(), FoldConstants(), GiveUniqueNodeNames(), GiveReadableTensorNames(),
              InferDataTypes(), RemoveStaticGraphInputs()):
        model = model.transform(t)
    return model


def step_input_grid(model, ctx):
    """Make the accelerator input integers on the grid: prepend Mul(1/qmax), annotate UINT."""
    from qonnx.core.datatype import DataType
    from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueNodeNames
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    bits = ctx.config.input_bits
    g = model.graph
    old = g.input[0]
    shape = [d.dim_value for d in old.type.tensor_type.shape.dim]
    new = helper.make_tensor_value_info("grid_in", TensorProto.FLOAT, shape)
    scale = np.float32(1.0 / ((1 << bits) - 1))
    g.initializer.append(helper.make_tensor("grid_scale", TensorProto.FLOAT, [], [scale]))
    g.node.insert(0, helper.make_node("Mul", ["grid_in", "grid_scale"], [old.name],
                                      name="InputGrid"))
    g.input.remove(old)
    g.input.insert(0, new)
    g.value_info.append(old)
    for t in (InferShapes(), GiveUniqueNodeNames(), GiveReadableTensorNames()):
        model = model.transform(t)
    model.set_tensor_datatype(model.graph.input[0].name, DataType[f"UINT{bits}"])
    return model.transform(InferDataTypes())


def step_streamline(model, ctx):
    """Move and collapse scales/biases into thresholds (FINN's Streamline, arXiv:1709.04060)."""
    import finn.transformation.streamline.absorb as absorb
    from finn.transformation.streamline import Streamline
    from finn.transformation.streamline.reorder import MakeMaxPoolNHWC
    from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds
    from qonnx.transformation.bipolar_to_xnor import ConvertBipolarMatMulToXnorPopcount
    from qonnx.transformation.general import RemoveUnusedTensors
    from qonnx.transformation.infer_data_layouts import InferDataLayouts
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.lower_convs_to_matmul import LowerConvsToMatMul

    model = model.transform(absorb.AbsorbScalarBiasIntoMultiThreshold())
    model = model.transform(Streamline())
    if model.get_nodes_by_op_type("Conv"):
        model = model.transform(LowerConvsToMatMul())
        model = model.transform(MakeMaxPoolNHWC())
        model = model.transform(absorb.AbsorbTransposeIntoMultiThreshold())
        model = model.transform(MakeMaxPoolNHWC())
        model = model.transform(absorb.AbsorbConsecutiveTransposes())
    model = model.transform(ConvertBipolarMatMulToXnorPopcount())
    model = model.transform(Streamline())
    model = model.transform(RoundAndClipThresholds())
    model = model.transform(InferDataTypes())
    model = model.transform(InferDataLayouts())
    return model.transform(RemoveUnusedTensors())


def step_convert_to_hw(model, ctx):
    """Map layers onto FINN HW layers: MVAU, Thresholding, ConvolutionInputGenerator, Pool…"""
    import finn.transformation.streamline.absorb as absorb
    from finn.transformation.fpgadataflow.convert_to_hw.binary_matrix_vector_activation import (
        InferBinaryMatrixVectorActivation,
    )
    from finn.transformation.fpgadataflow.convert_to_hw.conv_inp_gen import InferConvInpGen
    from finn.transformation.fpgadataflow.convert_to_hw.label_select import InferLabelSelectLayer
    from finn.transformation.fpgadataflow.convert_to_hw.pool import InferPool
    from finn.transformation.fpgadataflow.convert_to_hw.quantized_matrix_vector_activation import (
        InferQuantizedMatrixVectorActivation,
    )
    from finn.transformation.fpgadataflow.convert_to_hw.thresholding import InferThresholdingLayer
    from finn.transformation.move_reshape import RemoveCNVtoFCFlatten
    from qonnx.transformation.general import GiveUniqueNodeNames
    from qonnx.transformation.infer_data_layouts import InferDataLayouts
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    from fpgaprint.compiler.rtlsim.impl import standalone_thresholds

    if standalone_thresholds(ctx.config):  # also implied by impl_style rtl/auto
        model = model.transform(InferThresholdingLayer())
    for t in (InferBinaryMatrixVectorActivation(), InferQuantizedMatrixVectorActivation(),
              InferLabelSelectLayer(), InferThresholdingLayer(), InferPool(), InferConvInpGen(),
              RemoveCNVtoFCFlatten(), absorb.AbsorbConsecutiveTransposes(),
              GiveUniqueNodeNames(), InferDataLayouts(), InferDataTypes(), InferShapes()):
        model = model.transform(t)
    _check_mapped(model)
    return model


def _check_mapped(model) -> None:
    """Every node is a HW layer, or a host-side op before/after the accelerator."""
    nodes = list(model.graph.node)
    hw_idx = [i for i, n in enumerate(nodes) if n.domain.startswith(HW_DOMAIN)]
    if not hw_idx:
        raise UnsupportedModelError("no layer could be mapped onto FINN HW layers")
    for i, n in enumerate(nodes):
        inside = hw_idx[0] < i < hw_idx[-1]
        if n.domain.startswith(HW_DOMAIN):
            continue
        if inside or n.op_type not in HOST_OPS:
            raise UnsupportedModelError(
                f"operator {n.op_type} at node {n.name} could not be mapped onto a FINN HW "
                f"layer{' and sits between HW layers' if inside else ''}"
            )


def step_minimize_bit_width(model, ctx):
    """Smallest weight and accumulator datatypes that hold the trained values (FINN+)."""
    from finn.transformation.fpgadataflow.minimize_accumulator_width import (
        MinimizeAccumulatorWidth,
    )
    from finn.transformation.fpgadataflow.minimize_weight_bit_width import MinimizeWeightBitWidth
    from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds
    from qonnx.transformation.infer_datatypes import InferDataTypes

    model = model.transform(MinimizeWeightBitWidth())
    model = model.transform(MinimizeAccumulatorWidth())
    model = model.transform(RoundAndClipThresholds())
    return model.transform(InferDataTypes())


def step_dataflow_partition(model, ctx):
    """Split the HW layers into a StreamingDataflowPartition; return the accelerator graph.

    The parent graph (host-side ops around the partition) is saved as model/dataflow_parent.onnx;
    the steps after this one work on the accelerator graph alone."""
    from finn.transformation.fpgadataflow.create_dataflow_partition import (
        CreateDataflowPartition,
    )

    pdir = ctx.out / "finn" / "partitions"
    pdir.mkdir(parents=True, exist_ok=True)
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    parent = model.transform(CreateDataflowPartition(partition_model_dir=str(pdir)))
    parts = parent.get_nodes_by_op_type("StreamingDataflowPartition")
    if len(parts) != 1:
        raise UnsupportedModelError(
            f"expected one dataflow partition, got {len(parts)}: host-side ops split the HW layers"
        )
    parent.save(str(ctx.out / "model" / "dataflow_parent.onnx"))
    return ModelWrapper(getCustomOp(parts[0]).get_nodeattr("model"))


def step_specialize_layers(model, ctx):
    """Choose RTL/HLS implementations of each HW layer for the board's FPGA part."""
    from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
    from qonnx.transformation.general import GiveUniqueNodeNames
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    from fpgaprint.compiler.rtlsim.impl import prefer

    model = prefer(model, ctx.config.impl_style)  # impl_style: each layer's preferred variant
    model = model.transform(SpecializeLayers(ctx.board.part))
    for t in (GiveUniqueNodeNames(), InferShapes(), InferDataTypes()):
        model = model.transform(t)
    return model


FPS_LADDER = (100_000, 50_000, 20_000, 10_000, 5_000, 2_000, 1_000, 500, 200, 100)


def _fold(model, ctx, fps: int):
    from finn.transformation.fpgadataflow.set_folding import SetFolding

    clock_ns = ctx.config.clock_ns or ctx.board.clock_ns
    cycles = max(1, int(1e9 / clock_ns / fps))
    return model.transform(SetFolding(cycles, mvau_wwidth_max=ctx.config.mvau_wwidth_max))


def _fits(model, ctx) -> bool:
    from finn.analysis.fpgadataflow.res_estimation import res_estimation

    from fpgaprint.core.boards import check_resources

    total: dict[str, float] = {}
    for res in model.analysis(partial(res_estimation, fpgapart=ctx.board.part)).values():
        for k, v in res.items():
            if isinstance(v, (int, float)):
                total[k] = total.get(k, 0.0) + float(v)
    return not any(lv == "fail" for lv, _ in
                   check_resources(ctx.board, total, ctx.config.resource_warn))


def step_folding(model, ctx):
    """Set PE/SIMD: a FINN folding JSON if given, else SetFolding for `target_fps`, else the
    fastest FPS on a ladder (100k down to 100) whose estimate fits the board."""
    from finn.transformation.general import ApplyConfig
    from qonnx.transformation.general import GiveUniqueNodeNames

    model = model.transform(GiveUniqueNodeNames())
    if ctx.config.folding_config:
        ctx.report["folding"] = {"source": ctx.config.folding_config}
        return model.transform(ApplyConfig(ctx.config.folding_config))
    if ctx.config.target_fps:
        ctx.report["folding"] = {"target_fps": ctx.config.target_fps}
        return _fold(model, ctx, ctx.config.target_fps)
    for fps in FPS_LADDER:
        folded = _fold(model, ctx, fps)
        if _fits(folded, ctx):
            ctx.report["folding"] = {"target_fps": fps, "chosen": "fastest that fits"}
            return folded
    ctx.report["folding"] = {"target_fps": FPS_LADDER[-1], "chosen": "slowest tried"}
    return folded


def step_minimize_hw_widths(model, ctx):
    """Re-run FINN+'s width minimisation on the specialized, folded accelerator."""
    return step_minimize_bit_width(model, ctx)


def step_estimates(model, ctx):
    """FINN's resource and cycle estimates, totalled and checked against the board."""
    from finn.analysis.fpgadataflow.exp_cycles_per_layer import exp_cycles_per_layer
    from finn.analysis.fpgadataflow.res_estimation import res_estimation

    per_layer = model.analysis(partial(res_estimation, fpgapart=ctx.board.part))
    cycles = model.analysis(exp_cycles_per_layer)
    total: dict[str, float] = {}
    for res in per_layer.values():
        for k, v in res.items():
            if isinstance(v, (int, float)):
                total[k] = total.get(k, 0.0) + float(v)
    clock_ns = ctx.config.clock_ns or ctx.board.clock_ns
    worst = max(cycles.values()) if cycles else 0
    ctx.report["estimates"] = {
        "resources_per_layer": {k: {kk: float(vv) for kk, vv in v.items()
                                    if isinstance(vv, (int, float))} for k, v in per_layer.items()},
        "resources_total": total,
        "cycles_per_layer": {k: int(v) for k, v in cycles.items()},
        "max_cycles": int(worst),
        "clock_ns": clock_ns,
        "estimated_fps": (1e9 / (worst * clock_ns)) if worst else None,
    }
    return model


def step_codegen(model, ctx):
    """Generate each layer's RTL/HLS sources (FINN+'s PrepareIP); no vendor tool needed."""
    from finn.transformation.fpgadataflow.prepare_ip import PrepareIP

    clock_ns = ctx.config.clock_ns or ctx.board.clock_ns
    return model.transform(PrepareIP(ctx.board.part, clock_ns))


@dataclass(frozen=True)
class Step:
    name: str
    fn: Callable
    config_keys: tuple[str, ...] = ()
    executable: bool = True  # python-exec works on the result (before specialization)


STEPS: list[Step] = [
    Step("qonnx_to_finn", step_qonnx_to_finn),
    Step("tidy_up", step_tidy_up),
    Step("input_grid", step_input_grid, ("input_bits",)),
    Step("streamline", step_streamline),
    Step("convert_to_hw", step_convert_to_hw, ("standalone_thresholds", "impl_style")),
    Step("minimize_bit_width", step_minimize_bit_width),
    Step("dataflow_partition", step_dataflow_partition, (), False),  # checked via its parent
    Step("specialize_layers", step_specialize_layers, ("impl_style",), False),
    Step("folding", step_folding, ("target_fps", "folding_config", "mvau_wwidth_max",
                                   "resource_warn", "clock_ns"), False),
    Step("minimize_hw_widths", step_minimize_hw_widths, (), False),
    Step("estimates", step_estimates, ("clock_ns",), False),
    Step("codegen", step_codegen, ("clock_ns",), False),
]
GOLDEN_AFTER = "minimize_bit_width"
