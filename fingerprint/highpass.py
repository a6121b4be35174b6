"""High-pass projections of inputs: FFT masks for images, a 2-D DCT for flat square inputs.

Flat inputs whose length is a square (digits: 64 = 8x8) are treated as square images and
filtered in the orthonormal DCT-II basis (scipy.fft); other flat inputs use a 1-D DCT.
Image-shaped inputs (C, H, W) or (H, W) use a radial mask on torch.fft.fft2.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

Projector = Callable[[torch.Tensor], torch.Tensor]


def _radius(sizes: tuple[int, ...]) -> np.ndarray:
    """Normalized frequency radius in [0, 1] of each DCT coefficient of a grid."""
    axes = np.meshgrid(*[np.arange(n) / max(1, n - 1) for n in sizes], indexing="ij")
    return np.sqrt(sum(a**2 for a in axes)) / math.sqrt(len(sizes))


def dct_highpass_matrix(sizes: tuple[int, ...], cutoff: float) -> np.ndarray:
    """Symmetric projector P = D^T M D onto DCT coefficients with radius >= cutoff."""
    from scipy.fft import dctn

    n = int(np.prod(sizes))
    eye = np.eye(n).reshape((n, *sizes))
    basis = dctn(eye, type=2, norm="ortho", axes=tuple(range(1, len(sizes) + 1))).reshape(n, n)
    keep = (_radius(sizes) >= cutoff).reshape(-1).astype(np.float64)
    # rows of `basis` are the images of unit vectors: basis = D^T
    return (basis * keep) @ basis.T


def fft_mask(h: int, w: int, cutoff: float) -> torch.Tensor:
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    r = np.sqrt(fy**2 + fx**2) / math.sqrt(0.5)
    return torch.from_numpy((r >= cutoff).astype(np.float32))


def highpass(input_shape: tuple[int, ...], cutoff: float = 0.5) -> Projector:
    """A linear projector removing frequencies below `cutoff` (0 = keep all, 1 = keep none)."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 1:
        side = math.isqrt(shape[0])
        sizes = (side, side) if side * side == shape[0] else (shape[0],)
        p = torch.from_numpy(dct_highpass_matrix(sizes, cutoff).astype(np.float32))
        return lambda x: x.reshape(len(x), -1) @ p
    mask = fft_mask(shape[-2], shape[-1], cutoff)

    def project(x: torch.Tensor) -> torch.Tensor:
        return torch.fft.ifft2(torch.fft.fft2(x) * mask).real

    return project
