"""Build configuration: defaults, YAML file, CLI overrides (CLI wins)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import yaml

from fpgaprint.core.errors import InputError


@dataclass
class BuildConfig:
    weight_bits: int = 4            # PTQ/QAT of float models
    act_bits: int = 4
    input_bits: int = 8             # accelerator input grid: UINT<input_bits>, x = q / (2^b - 1)
    qat: bool = False               # QAT fine-tune after PTQ (needs data)
    qat_epochs: int = 10
    calibration_samples: int = 512
    target_fps: int | None = None   # folding target; default: fully folded within clock budget
    folding_config: str | None = None  # FINN folding JSON (overrides target_fps)
    mvau_wwidth_max: int = 36
    clock_ns: float | None = None   # default: the board's clock
    standalone_thresholds: bool = False
    impl_style: str = "auto"        # rtl | hls | auto (compiler/rtlsim/impl.py)
    equivalence_samples: int = 32
    seed: int = 0
    zoo_epochs: int | None = None   # zoo:NAME models: override the entry's training epochs
    resource_warn: float = 0.8

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides) -> "BuildConfig":
        """Defaults, then the YAML file, then non-None overrides; unknown keys are errors."""
        values: dict = {}
        if path is not None:
            p = Path(path)
            if not p.is_file():
                raise InputError(f"{p}: no such config file")
            try:
                values = yaml.safe_load(p.read_text()) or {}
            except yaml.YAMLError as e:
                raise InputError(f"{p}: not valid YAML ({e})") from e
            if not isinstance(values, dict):
                raise InputError(f"{p}: expected a mapping of build options")
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name: f for f in fields(cls)}
        bad = sorted(set(values) - set(known))
        if bad:
            where = f" in {path}" if path else ""
            raise InputError(
                f"unknown config key(s) {', '.join(bad)}{where}; valid keys: {', '.join(known)}"
            )
        cfg = cls(**values)
        from fpgaprint.compiler.rtlsim.impl import check_style

        check_style(cfg.impl_style)  # impl_style: one of rtl, hls, auto
        for name in ("weight_bits", "act_bits", "input_bits"):
            v = getattr(cfg, name)
            if not isinstance(v, int) or not 1 <= v <= 16:
                raise InputError(f"config {name}={v!r}: expected an integer from 1 to 16")
        return cfg

    def as_dict(self) -> dict:
        return asdict(self)
