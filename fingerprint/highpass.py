"""The LTRC high-pass filter, in the frequency domain as in the paper: a radial mask on the 2-D
discrete Fourier transform of each image channel.

Flat inputs whose length is a square (digits: 64 = 8x8) are treated as square images; other
flat inputs as a 1 x L image. The mask is symmetric in frequency, so the filtered image is real
and the filter is a linear orthogonal projection.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

Projector = Callable[[torch.Tensor], torch.Tensor]


def image_shape(input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The (…, H, W) view of an input: flat squares as H x W, other flat inputs as 1 x L."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 1:
        side = math.isqrt(shape[0])
        return (side, side) if side * side == shape[0] else (1, shape[0])
    return shape


def fft_mask(h: int, w: int, cutoff: float) -> torch.Tensor:
    """1 where the normalized radial frequency is at least `cutoff` (0 keeps all, 1 none)."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.fftfreq(w)[None, :]
    r = np.sqrt(fy**2 + fx**2) / math.sqrt(0.5)
    return torch.from_numpy((r >= cutoff).astype(np.float32))


def highpass(input_shape: tuple[int, ...], cutoff: float = 0.35) -> Projector:
    """x -> IFFT2(mask * FFT2(x)) per channel, for a batch of inputs of `input_shape`."""
    img = image_shape(input_shape)
    mask = fft_mask(img[-2], img[-1], cutoff)

    def project(x: torch.Tensor) -> torch.Tensor:
        xi = x.reshape((len(x), *img))
        return torch.fft.ifft2(torch.fft.fft2(xi) * mask).real.reshape(x.shape)

    return project
