"""Model checkpoints: save zoo models with their provenance, load any supported model file.

Model files are untrusted: nothing is unpickled. fpgaprint's checkpoints hold only tensors
and plain values (a state dict and metadata) and load with `torch.load(weights_only=True)`.
A file that needs unpickling (a whole pickled nn.Module) is refused with a message saying so,
unless unpickling is allowed explicitly (`--trust-pickle`, `allow_pickle`, both in
`fpgaprint.core.cliopts`): unpickling runs whatever code the file carries.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import torch
import torch.nn as nn

from fpgaprint.compiler.checkpoint import Checkpoint
from fpgaprint.core.atomic import atomic_file
from fpgaprint.core.cliopts import allow_pickle, pickle_allowed  # noqa: F401 (re-exported)
from fpgaprint.core.errors import InputError

FORMAT = "fpgaprint-checkpoint/1"
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


def _unpickle(path: Path):
    """The whole pickle (only after the user allowed it)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise InputError(f"{path}: not a PyTorch checkpoint ({type(e).__name__}: "
                         f"{str(e)[:200]})") from None


def _is_brevitas(model: nn.Module) -> bool:
    return any(type(m).__module__.startswith("brevitas.nn") for m in model.modules())


def load(path: str | Path) -> Checkpoint:
    """Load an fpgaprint checkpoint (no unpickling), or, when allowed, a whole pickled
    nn.Module saved with torch.save."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such model file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not pickle_allowed():
            why = str(e).strip().splitlines()
            detail = next((w for w in why if "Unsupported global" in w), why[0] if why else "")
            raise InputError(
                f"{path}: loading this file needs unpickling, which runs code from it "
                f"({detail.strip()[:160]}); give a checkpoint written by `fpgaprint train` or "
                "a QONNX export, or pass --trust-pickle if you trust the file") from None
        obj = _unpickle(path)
    except Exception as e:  # torch raises many types for a non-checkpoint
        raise InputError(f"{path}: not a PyTorch checkpoint ({type(e).__name__}: "
                         f"{str(e)[:200]})") from None
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
        try:
            model.load_state_dict(obj["state_dict"])
        except (KeyError, RuntimeError, TypeError) as e:
            raise InputError(f"{path}: state dict does not fit zoo:{obj['zoo']} "
                             f"({str(e).splitlines()[0][:200]})") from None
    elif isinstance(obj.get("module"), nn.Module):
        model = obj["module"]  # an old whole-module checkpoint, unpickled by permission
    else:
        raise InputError(f"{path}: an fpgaprint checkpoint without a zoo model or module")
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
