"""Front end: any accepted model (QONNX file, checkpoint, zoo name) → a QONNX file.

Returns the torch reference (when there is one) for the equivalence check, plus data for
calibration and equivalence samples when the model comes with a data set.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fpgaprint.core.errors import InputError

QUANT_OPS = {"Quant", "BipolarQuant", "Trunc", "MultiThreshold"}


@dataclass
class FrontEnd:
    qonnx_path: Path
    source: str
    source_sha256: str
    input_shape: tuple[int, ...]
    torch_model: object | None = None  # Brevitas module computing what the QONNX computes
    float_model: object | None = None  # the pre-trained model (fingerprint source)
    data: object | None = None  # compiler.data.Dataset
    notes: list[str] = field(default_factory=list)


def check_onnx_file(path: Path):
    """Load and sanity-check a user's ONNX file: readable, quantized, supported ops."""
    import onnx

    from fpgaprint.compiler.steps import check_supported_ops

    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        proto = onnx.load(str(path))
    except Exception as e:
        raise InputError(f"{path}: not an ONNX model ({type(e).__name__}: {e})") from e
    if not proto.graph.node:
        raise InputError(f"{path}: the ONNX graph has no nodes")
    ops = {n.op_type for n in proto.graph.node}
    if not ops & QUANT_OPS:
        raise InputError(
            f"{path}: no Quant nodes — this ONNX model is not quantized (QONNX). Export a "
            "Brevitas model with brevitas.export.export_qonnx, or give the float PyTorch "
            "checkpoint and let fpgaprint quantize it"
        )
    from qonnx.core.modelwrapper import ModelWrapper

    model = ModelWrapper(proto)
    check_supported_ops(model)
    return model


def resolve(spec: str, config, workdir: Path, log) -> FrontEnd:
    """Bring the model named by `spec` into QONNX at workdir/qonnx.onnx."""
    from fpgaprint.compiler import modelio, zoo

    workdir.mkdir(parents=True, exist_ok=True)
    dst = workdir / "qonnx.onnx"
    if spec.startswith("zoo:"):
        entry = zoo.get_entry(spec)
        log(f"training {entry.name} (seed {config.seed}): {entry.description}")
        ckpt = zoo.make(entry.name, seed=config.seed, epochs=config.zoo_epochs)
        return _from_checkpoint(ckpt, spec, modelio.state_sha256(ckpt.model), config, dst, log)
    path = Path(spec)
    if not path.exists():
        raise InputError(f"{path}: no such model file")
    if path.suffix == ".onnx":
        model = check_onnx_file(path)
        shutil.copyfile(path, dst)
        shape = tuple(model.get_tensor_shape(model.graph.input[0].name)[1:])
        return FrontEnd(dst, str(path), modelio.file_sha256(path), shape)
    ckpt = modelio.load(path)
    return _from_checkpoint(ckpt, str(path), modelio.state_sha256(ckpt.model), config, dst, log)


def _from_checkpoint(ckpt, source, sha, config, dst: Path, log) -> FrontEnd:
    from fpgaprint.compiler import quantize, zoo

    data = zoo.get_entry(ckpt.zoo).data(config.seed) if ckpt.zoo else None
    float_model = ckpt.model
    if ckpt.kind == "float":
        if data is None:
            calib = np.random.default_rng(config.seed).random(
                (config.calibration_samples, *ckpt.input_shape), dtype=np.float32)
            log("no data set with this model: calibrating PTQ on uniform inputs")
        else:
            calib = data.x_train[: config.calibration_samples]
        qmodel = quantize.quantize_ptq(ckpt.model, calib.reshape((-1, *ckpt.input_shape)),
                                       config.weight_bits, config.act_bits)
        log(f"PTQ: {config.weight_bits}-bit weights, {config.act_bits}-bit activations, "
            f"{len(calib)} calibration samples")
        if config.qat:
            if data is None:
                raise InputError("--qat needs training data: only zoo models carry a data set")
            quantize.finetune_qat(qmodel, data, config.qat_epochs, 1e-3, config.seed)
            log(f"QAT: {config.qat_epochs} epochs")
    else:
        qmodel = ckpt.model
    export_qonnx(qmodel, ckpt.input_shape, dst)
    return FrontEnd(dst, source, sha, tuple(ckpt.input_shape), qmodel.eval(), float_model, data)


def export_qonnx(module, input_shape, dst: Path) -> None:
    """Brevitas → QONNX, quietly (the exporter prints its progress)."""
    import contextlib
    import io

    import torch
    from brevitas.export import export_qonnx as _export

    module.eval()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        _export(module, torch.zeros((1, *input_shape)), str(dst))
