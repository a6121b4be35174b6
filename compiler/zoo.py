"""The model zoo: the embedded default (digits-mlp) and FINN's reference topologies.

Every zoo model takes inputs in [0, 1] of its `input_shape` and returns class logits.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from fpgaprint.compiler.checkpoint import Checkpoint
from fpgaprint.compiler.data import Dataset, load_digits, upsample_digits
from fpgaprint.core.errors import InputError
from fpgaprint.core.progress import Progress


def digits_mlp(hidden: tuple[int, ...] = (64, 32), num_classes: int = 10) -> nn.Module:
    """Float MLP for 8x8 digits: Linear-BN-ReLU blocks and a linear classifier."""
    layers: list[nn.Module] = []
    width = 64
    for h in hidden:
        layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def _bnn_pynq(name: str) -> nn.Module:
    from brevitas_examples.bnn_pynq.models import model_with_cfg

    model, _ = model_with_cfg(name, pretrained=False)
    return model


@dataclass(frozen=True)
class ZooEntry:
    name: str
    kind: str  # "float" or "brevitas"
    input_shape: tuple[int, ...]
    build: Callable[[], nn.Module]
    data: Callable[[int], Dataset]
    epochs: int
    lr: float
    description: str


def _digits(seed: int) -> Dataset:
    return load_digits(seed=seed)


ZOO: dict[str, ZooEntry] = {
    "digits-mlp": ZooEntry(
        "digits-mlp", "float", (64,), digits_mlp, _digits, 60, 1e-2,
        "float MLP 64-64-32-10, trained on sklearn digits (8x8)",
    ),
    "tfc-w2a2": ZooEntry(
        "tfc-w2a2", "brevitas", (1, 28, 28), lambda: _bnn_pynq("TFC_2W2A"),
        lambda s: upsample_digits(load_digits(seed=s), (1, 28, 28)), 20, 1e-2,
        "FINN TFC (3x64, 2-bit weights/activations), trained on digits resized to 28x28",
    ),
    "lfc-w1a2": ZooEntry(
        "lfc-w1a2", "brevitas", (1, 28, 28), lambda: _bnn_pynq("LFC_1W2A"),
        lambda s: upsample_digits(load_digits(seed=s), (1, 28, 28)), 2, 1e-2,
        "FINN LFC (3x1024, bipolar weights, 2-bit activations), on digits resized to 28x28",
    ),
    "cnv-w2a2": ZooEntry(
        "cnv-w2a2", "brevitas", (3, 32, 32), lambda: _bnn_pynq("CNV_2W2A"),
        lambda s: upsample_digits(load_digits(seed=s), (3, 32, 32)), 2, 1e-2,
        "FINN CNV (6 conv + 3 FC, 2-bit), trained briefly on digits resized to 3x32x32",
    ),
}


def get_entry(name: str) -> ZooEntry:
    key = name.removeprefix("zoo:")
    if key not in ZOO:
        raise InputError(f"unknown zoo model {name!r}; available: {', '.join(sorted(ZOO))}")
    return ZOO[key]


TRAIN_THREADS = 1  # a fixed thread count: float sums, hence weights, depend on it


@contextlib.contextmanager
def deterministic_torch(threads: int = TRAIN_THREADS):
    """Deterministic algorithms on a fixed number of threads, restored afterwards.

    The same seed then gives the same weights on one machine, whatever the caller's thread
    setting. Another CPU may still round differently: never expect trained numbers to carry
    across machines."""
    before = torch.get_num_threads()
    was = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        torch.use_deterministic_algorithms(was)


def train(
    model: nn.Module, ds: Dataset, epochs: int, lr: float, seed: int = 0, batch: int = 64,
    progress: Progress | None = None, name: str = "train",
) -> nn.Module:
    """Plain Adam training with cross-entropy; deterministic for a seed on one machine.
    `progress` shows task `name` advancing per epoch."""
    with deterministic_torch(), (progress or Progress(None)).task(name, epochs) as task:
        return _train(model, ds, epochs, lr, seed, batch, task)


def _train(model, ds, epochs, lr, seed, batch, task) -> nn.Module:
    torch.manual_seed(seed)
    x = torch.from_numpy(ds.x_train.reshape((-1, *ds.input_shape))).float()
    y = torch.from_numpy(ds.y_train).long()
    # foreach: the same steps as one tensor at a time, in fewer calls
    opt = torch.optim.Adam(model.parameters(), lr=lr, foreach=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, epochs))
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        total = 0.0
        for i in range(0, len(x), batch):
            idx = perm[i : i + batch]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        sched.step()
        task.update(completed=epoch + 1, detail=f"loss {total / len(x):.3f}", line=False)
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, input_shape: tuple[int, ...]) -> float:
    model.eval()
    logits = model(torch.from_numpy(x.reshape((-1, *input_shape))).float())
    return float((logits.argmax(1).numpy() == y).mean())


# zoo models trained in this process: (name, seed, epochs) -> (Checkpoint, torch's RNG state
# after training). Training is deterministic on one machine, so `make` trains each model once
# per process (a matrix building one zoo model for several boards, an evaluation training its
# source again) and hands out copies.
_TRAINED: dict[tuple[str, int, int], tuple[Checkpoint, torch.Tensor]] = {}


def make(name: str, seed: int = 0, epochs: int | None = None,
         progress: Progress | None = None):
    """Build and train a zoo model deterministically; returns a Checkpoint (the caller's own
    copy)."""
    entry = get_entry(name)
    epochs = entry.epochs if epochs is None else epochs
    key = (entry.name, seed, epochs)
    if key not in _TRAINED:
        torch.manual_seed(seed)
        ds = entry.data(seed)
        model = entry.build()
        train(model, ds, epochs, entry.lr, seed=seed, progress=progress,
              name=f"train {entry.name}")
        acc = accuracy(model, ds.x_test, ds.y_test, ds.input_shape)
        _TRAINED[key] = (Checkpoint(model, entry.kind, entry.input_shape, ds.num_classes,
                                    entry.name, {"seed": seed, "test_accuracy": acc,
                                                 "data": ds.name,
                                                 "description": entry.description}),
                         torch.get_rng_state())
    ckpt, rng = _TRAINED[key]
    torch.set_rng_state(rng)  # as if it had been trained just now
    return copy.deepcopy(ckpt)
