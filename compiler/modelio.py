"""Model checkpoints: save zoo models with their provenance, load any supported model file.

Model files are untrusted and never unpickled: fpgaprint's checkpoints hold only tensors and
plain values (a state dict and metadata) and load with `torch.load(weights_only=True)`. A file
that needs unpickling (a whole pickled nn.Module) is refused with a message saying so, since
unpickling runs whatever code the file carries; such models come in as QONNX exports.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import torch
import torch.nn as nn

from fpgaprint.compiler.checkpoint import Checkpoint
from fpgaprint.core.atomic import atomic_file
from fpgaprint.core.errors import InputError

FORMAT = "fpgaprint-checkpoint/1"
MODEL_FORMATS = "a QONNX .onnx, a checkpoint written by `fpgaprint train` (.pt) or zoo:NAME"


def save(ckpt: Checkpoint, path: str | Path) -> None:
    """Save a zoo model by state dict (rebuildable from the zoo) with plain metadata; loads
    without unpickling. Other models are not saved as pickles: export them to QONNX."""
    if not ckpt.zoo:
        raise InputError(f"{path}: only zoo models are saved as checkpoints (a whole module "
                         "would need unpickling to load); export other models to QONNX")
    payload = {
        "format": FORMAT,
        "kind": ckpt.kind,
        "input_shape": list(ckpt.input_shape),
        "num_classes": ckpt.num_classes,
        "zoo": ckpt.zoo,
        "meta": ckpt.meta,
        "state_dict": ckpt.model.state_dict(),
    }
    with atomic_file(path) as f:
        torch.save(payload, f)


def load(path: str | Path) -> Checkpoint:
    """Load an fpgaprint checkpoint (no unpickling)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such model file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        why = str(e).strip().splitlines()
        detail = next((w for w in why if "Unsupported global" in w), why[0] if why else "")
        raise InputError(
            f"{path}: loading this file needs unpickling, which runs code from it "
            f"({detail.strip()[:160]}); fpgaprint never unpickles a model file: give a "
            "checkpoint written by `fpgaprint train` or a QONNX export") from None
    except Exception:  # torch raises many types, with its internals, for a non-checkpoint
        raise InputError(f"{path}: not a model file (expected {MODEL_FORMATS})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise InputError(f"{path}: not an fpgaprint checkpoint")
    if not obj.get("zoo"):
        raise InputError(f"{path}: an fpgaprint checkpoint without a zoo model")
    from fpgaprint.compiler.zoo import get_entry

    entry = get_entry(str(obj["zoo"]))  # the architecture and shape come from the zoo
    model = entry.build()
    try:
        model.load_state_dict(obj["state_dict"])
    except (KeyError, RuntimeError, TypeError) as e:
        raise InputError(f"{path}: state dict does not fit zoo:{entry.name} "
                         f"({str(e).splitlines()[0][:200]})") from None
    ncls = obj.get("num_classes")
    if not isinstance(ncls, int) or isinstance(ncls, bool) or not 1 <= ncls <= 100_000:
        raise InputError(f"{path}: num_classes {ncls!r} is not a class count")
    meta = obj.get("meta", {})
    return Checkpoint(model.eval(), entry.kind, tuple(entry.input_shape), ncls, entry.name,
                      meta if isinstance(meta, dict) else {})


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def state_sha256(model: nn.Module) -> str:
    """SHA-256 of a module's state dict contents: names, dtypes, shapes and values.

    Independent of the file it was saved in, so re-saving a model keeps its hash.
    """
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update((t.float() if t.dtype == torch.bfloat16 else t).numpy().tobytes())
        else:
            h.update(repr(value).encode())
    return h.hexdigest()
