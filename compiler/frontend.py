"""Front end: any accepted model (QONNX file, checkpoint, zoo name) → a QONNX file.

Returns the torch reference (when there is one) for the equivalence check, plus data for
calibration and equivalence samples when the model comes with a data set.
"""

from __future__ import annotations

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
    grid: object = None  # core.grid.InputGrid: the accelerator's input integers
    torch_model: object | None = None  # Brevitas module computing what the QONNX computes
    float_model: object | None = None  # the pre-trained model (fingerprint source)
    data: object | None = None  # compiler.data.Dataset
    notes: list[str] = field(default_factory=list)


MAX_ONNX_BYTES = 2 << 30  # protobuf's limit for one file


def check_onnx_file(path: Path):
    """Load and sanity-check a user's ONNX file (external data included, from beside it):
    readable, quantized, supported ops, shapes known (inferred where the exporter left them
    out). Returns (model, source SHA-256): the file's, or with external data that of the
    self-contained model as given."""
    import hashlib

    import onnx

    from fpgaprint.compiler.steps import check_supported_ops

    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file, not an ONNX model")
    data = path.read_bytes()
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as e:
        raise InputError(f"{path}: not an ONNX model ({type(e).__name__}: {e})") from e
    if _load_external_data(proto, path):
        data = proto.SerializeToString()
    sha = hashlib.sha256(data).hexdigest()
    del data  # up to 2 GB: not held through shape inference
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
    try:
        return with_shapes(model), sha
    except Exception as e:
        raise InputError(f"{path}: tensor shapes cannot be inferred ({type(e).__name__}: "
                         f"{e})") from e


def _load_external_data(proto, path: Path) -> bool:
    """Bring tensors stored beside the model (`.onnx.data`) into it; each location must be a
    file in the model's own folder. Whether there were any."""
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    external = [t for t in _all_tensors(proto) if uses_external_data(t)]
    if not external:
        return False
    base = path.parent.resolve()
    total = 0
    for t in external:
        loc = next((e.value for e in t.external_data if e.key == "location"), "")
        f = (base / loc).resolve()
        if not loc or f.parent != base:
            raise InputError(f"{path}: tensor {t.name} points to external data {loc!r} "
                             "outside the model's folder")
        if not f.is_file():
            raise InputError(f"{path}: tensor {t.name} needs its external data file {loc}, "
                             "which is missing (copy it beside the model)")
        total += f.stat().st_size
    if total > MAX_ONNX_BYTES:
        raise InputError(f"{path}: {total} bytes of external data; at most {MAX_ONNX_BYTES} "
                         "fit one QONNX file")
    try:
        load_external_data_for_model(proto, str(base))
    except Exception as e:
        raise InputError(f"{path}: external data unreadable ({type(e).__name__}: {e})") from e
    return True


def _all_tensors(proto):
    from onnx.external_data_helper import _get_all_tensors

    return list(_get_all_tensors(proto))


def resolve(spec: str, config, workdir: Path, log, progress=None) -> FrontEnd:
    """Bring the model named by `spec` into QONNX at workdir/qonnx.onnx (`progress`: a
    `fpgaprint.core.progress.Progress` for training and QAT epochs)."""
    from fpgaprint.compiler import modelio, zoo

    workdir.mkdir(parents=True, exist_ok=True)
    dst = workdir / "qonnx.onnx"
    if spec.startswith("zoo:"):
        entry = zoo.get_entry(spec)
        log(f"training {entry.name} (seed {config.seed}): {entry.description}")
        ckpt = zoo.make(entry.name, seed=config.seed, epochs=config.zoo_epochs,
                        progress=progress)
        return _from_checkpoint(ckpt, spec, modelio.state_sha256(ckpt.model), config, dst, log,
                                progress)
    path = Path(spec)
    if not path.exists():
        raise InputError(f"{path}: no such model file")
    if path.suffix == ".onnx":
        model, sha = check_onnx_file(path)
        model.save(str(dst))  # one self-contained file, external data included
        shape = tuple(model.get_tensor_shape(model.graph.input[0].name)[1:])
        return FrontEnd(dst, str(path), sha, shape, _grid(model, config))
    ckpt = modelio.load(path)
    return _from_checkpoint(ckpt, str(path), modelio.state_sha256(ckpt.model), config, dst, log,
                            progress)


def _from_checkpoint(ckpt, source, sha, config, dst: Path, log, progress=None) -> FrontEnd:
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
            quantize.finetune_qat(qmodel, data, config.qat_epochs, 1e-3, config.seed, progress)
            log(f"QAT: {config.qat_epochs} epochs")
    else:
        qmodel = ckpt.model
    grid = _grid(export_qonnx(qmodel, ckpt.input_shape, dst), config)
    return FrontEnd(dst, source, sha, tuple(ckpt.input_shape), grid, qmodel.eval(),
                    float_model, data)


def _grid(model, config):
    from fpgaprint.compiler.steps import grid_of

    return grid_of(model, config.input_bits)


def module_grid(module, input_shape, input_bits: int = 8):
    """The input grid of a torch/Brevitas module: its input quantizer's, else the default."""
    import tempfile

    from fpgaprint.core.grid import InputGrid

    if not any(type(m).__module__.startswith("brevitas") for m in module.modules()):
        return InputGrid(input_bits)
    with tempfile.TemporaryDirectory(prefix="fpgaprint-grid-") as d:
        from fpgaprint.compiler.steps import grid_of

        return grid_of(export_qonnx(module, tuple(input_shape), Path(d) / "m.onnx"), input_bits)


def export_qonnx(module, input_shape, dst: Path):
    """Brevitas → QONNX at `dst`, quietly (the exporter prints its progress); the model as
    saved (a qonnx ModelWrapper).

    Brevitas' TorchScript exporter, the flow FINN+ is tested with: about 0.05 s per model,
    where torch's dynamo exporter (Brevitas' default since torch 2.9) takes 0.8 s and more."""
    import contextlib
    import io

    import torch
    from brevitas.export import export_qonnx as _export
    from qonnx.core.modelwrapper import ModelWrapper

    module.eval()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        _export(module, torch.zeros((1, *input_shape)), str(dst), dynamo=False)
    # one self-contained file: an exporter may put the tensors beside it (.onnx.data)
    model = with_shapes(ModelWrapper(str(dst)))
    model.save(str(dst))
    Path(f"{dst}.data").unlink(missing_ok=True)
    return model


def with_shapes(model):
    """`model` with every tensor's shape annotated, names untouched (the TorchScript exporter
    leaves them out, and running the graph vector by vector needs them)."""
    from qonnx.transformation.infer_shapes import InferShapes

    from fpgaprint.compiler import qonnx_fixes

    qonnx_fixes.install()  # before anything renames this model's tensors
    return model.transform(InferShapes(), cleanup=False)
