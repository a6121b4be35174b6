"""Data sets shipped with the installed packages (no downloads)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fpgaprint.core.grid import InputGrid


@dataclass
class Dataset:
    """A split data set: inputs in [0, 1] with the model's input shape (without batch)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    input_shape: tuple[int, ...]
    num_classes: int


def load_digits(seed: int = 0, test_fraction: float = 0.25,
                grid: InputGrid | None = None) -> Dataset:
    """sklearn's 8x8 digits (1,797 real images, values 0..16), scaled to [0, 1] on the grid."""
    from sklearn.datasets import load_digits as _load
    from sklearn.model_selection import train_test_split

    grid = grid or InputGrid()
    d = _load()
    x = grid.project(d.data.astype(np.float32) / 16.0)
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y
    )
    return Dataset("digits", xtr, ytr, xte, yte, (64,), 10)


def upsample_digits(ds: Dataset, shape: tuple[int, ...]) -> Dataset:
    """Digits resized to another topology's input (28x28 for TFC, 3x32x32 for CNV)."""
    import torch
    import torch.nn.functional as F

    def resize(x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(x.reshape(-1, 1, 8, 8))
        h, w = shape[-2], shape[-1]
        t = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)
        if len(shape) == 3 and shape[0] > 1:
            t = t.repeat(1, shape[0], 1, 1)
        return InputGrid().project(t.reshape((-1, *shape)).numpy().clip(0, 1))

    return Dataset(
        f"digits{'x'.join(map(str, shape))}",
        resize(ds.x_train),
        ds.y_train,
        resize(ds.x_test),
        ds.y_test,
        tuple(shape),
        ds.num_classes,
    )
