"""A model with what the compiler needs to know about it (the zoo makes them, `modelio`
saves and loads them)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn as nn


@dataclass
class Checkpoint:
    """A PyTorch/Brevitas model with what the compiler needs to know about it."""

    model: nn.Module
    kind: str  # "float" or "brevitas"
    input_shape: tuple[int, ...]
    num_classes: int
    zoo: str | None = None
    meta: dict = field(default_factory=dict)
