"""Model checkpoints: save zoo models with their provenance, load any supported model file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn as nn

from fpgaprint.compiler.checkpoint import Checkpoint
from fpgaprint.core.atomic import atomic_file
from fpgaprint.core.errors import InputError

FORMAT = "fpgaprint-checkpoint/1"


def save(ckpt: Checkpoint, path: str | Path) -> None:
    """Save a zoo model by state dict (rebuildable), anything else as a whole module."""
    payload = {
        "format": FORMAT,
        "kind": ckpt.kind,
        "input_shape": list(ckpt.input_shape),
        "num_classes": ckpt.num_classes,
        "zoo": ckpt.zoo,
        "meta": ckpt.meta,
    }
    if ckpt.zoo:
        payload["state_dict"] = ckpt.model.state_dict()
    else:
        payload["module"] = ckpt.model
    with atomic_file(path) as f:
        torch.save(payload, f)


def _is_brevitas(model: nn.Module) -> bool:
    return any(type(m).__module__.startswith("brevitas.nn") for m in model.modules())


def load(path: str | Path) -> Checkpoint:
    """Load an fpgaprint checkpoint, or a whole pickled nn.Module saved with torch.save."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such model file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises many types for a non-checkpoint
        raise InputError(f"{path}: not a PyTorch checkpoint ({type(e).__name__}: {e})") from e
    if isinstance(obj, nn.Module):
        shape = getattr(obj, "input_shape", None)
        if shape is None:
            raise InputError(
                f"{path}: a bare nn.Module needs an `input_shape` attribute "
                "(the input shape without batch); save it with fpgaprint's checkpoint format"
            )
        ncls = int(getattr(obj, "num_classes", 10))
        return Checkpoint(obj.eval(), "brevitas" if _is_brevitas(obj) else "float",
                          tuple(shape), ncls)
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise InputError(f"{path}: not an fpgaprint checkpoint nor a pickled nn.Module")
    if obj.get("zoo"):
        from fpgaprint.compiler.zoo import get_entry

        model = get_entry(obj["zoo"]).build()
        model.load_state_dict(obj["state_dict"])
    else:
        model = obj["module"]
    return Checkpoint(model.eval(), obj["kind"], tuple(obj["input_shape"]), obj["num_classes"],
                      obj.get("zoo"), obj.get("meta", {}))


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
