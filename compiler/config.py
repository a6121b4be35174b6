"""Build configuration: defaults, YAML file, CLI overrides (CLI wins), type-checked by pydantic.

FINN+'s own key names are accepted where they mean the same thing (`synth_clk_period_ns` for
`clock_ns`, `folding_config_file` for `folding_config`); `finn_config` turns a config and a
board into FINN+'s `DataflowBuildConfig` for the FINN+ steps the build calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from fpgaprint.core.errors import InputError

# FINN+ DataflowBuildConfig key -> fpgaprint key (same meaning)
FINN_ALIASES = {
    "synth_clk_period_ns": "clock_ns",
    "folding_config_file": "folding_config",
}


def _alias(name: str) -> AliasChoices:
    finn = [k for k, v in FINN_ALIASES.items() if v == name]
    return AliasChoices(name, *finn)


class BistOptions(BaseModel):
    """The on-chip self-test generated from the package's vectors (`bist:` in build.yaml)."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)

    mode: Literal["exact", "signature"] = Field(
        "exact", description="exact: the ROM holds every golden output word (per-vector "
        "FAIL_COUNT and FIRST_FAIL); signature: only their CRC-32 (fewer ROM bits)")


class BuildConfig(BaseModel):
    """Every value is checked on construction and assignment; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True,
                              populate_by_name=True, frozen=False)

    weight_bits: int = Field(4, ge=1, le=16, description="PTQ/QAT weight bits (float models)")
    act_bits: int = Field(4, ge=1, le=16, description="PTQ/QAT activation bits")
    input_bits: int = Field(8, ge=1, le=16, description="input grid of float models without an "
                            "input quantizer: UINT<input_bits>, x = q / (2^b - 1)")
    qat: bool = False
    qat_epochs: int = Field(10, ge=1, le=10_000)
    calibration_samples: int = Field(512, ge=1, le=1_000_000)
    target_fps: int | None = Field(None, ge=1, description="folding target (FINN+ target_fps)")
    folding_config: str | None = Field(None, validation_alias=_alias("folding_config"),
                                       description="FINN folding JSON (overrides target_fps)")
    mvau_wwidth_max: int = Field(36, ge=1, le=8192)
    clock_ns: float | None = Field(None, gt=0, le=1000,
                                   validation_alias=_alias("clock_ns"),
                                   description="default: the board's clock")
    standalone_thresholds: bool = False
    impl_style: Literal["auto", "rtl", "hls"] = Field(
        "auto", description="FINN+ RTL or HLS variant of each layer: auto = RTL where FINN+ "
        "has one (implies standalone thresholds), rtl = fail on any HLS layer, hls")
    auto_fifo_depths: bool = Field(
        True, description="FINN+ key: size the FIFOs by simulating the stitched design "
        "(auto_fifo_strategy); false: depths from fifo_config_file, else the layers' "
        "inFIFODepths/outFIFODepths (a folding config may set them)")
    auto_fifo_strategy: Literal["distributed_sim", "force_minimal_fifos"] = Field(
        "distributed_sim", description="FINN+ key: distributed_sim = FIFO depths from the "
        "occupancy of the stitched design in a Verilator simulation at full rate; "
        "force_minimal_fifos = every FIFO at FINN+'s minimal depth")
    fifo_config_file: str | None = Field(
        None, description="FINN+ FIFO config JSON ({\"fifo_depths\": {FIFO: depth}}, as "
        "reports/fifo_depths.json writes it), applied with auto_fifo_depths false")
    rtlsim_node_by_node: Literal["uncovered", "all"] = Field(
        "uncovered", description="RTL layers simulated one by one on Verilator: uncovered = "
        "those outside a stitched design or a stitched segment of a design HLS layers split "
        "(whose simulations cover their layers), and every layer of a stitched design or "
        "segment that differs from the golden model, to name the layer; all = every RTL "
        "layer one by one (no segments) as well as the stitched design")
    large_fifo_mem_style: Literal["auto", "block", "distributed", "ultra"] = Field(
        "auto", description="FINN+ key: memory of the FIFOs fifo.sv would back with BRAM/URAM")
    equivalence_samples: int = Field(32, ge=1, le=100_000)
    seed: int = Field(0, ge=0, le=2**32 - 1)
    zoo_epochs: int | None = Field(None, ge=0, le=10_000,
                                   description="zoo:NAME models: override the training epochs")
    resource_warn: float = Field(0.8, gt=0, le=1)
    bist: BistOptions = Field(default_factory=BistOptions,
                              description="on-chip self-test options (bist.mode)")

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides) -> "BuildConfig":
        """Defaults, then the YAML file, then non-None overrides (keys or FINN+ aliases)."""
        values: dict = {}
        where = ""
        if path is not None:
            p = Path(path)
            where = f" in {p}"
            if not p.is_file():
                raise InputError(f"{p}: no such config file")
            try:
                values = yaml.safe_load(p.read_text()) or {}
            except (yaml.YAMLError, UnicodeDecodeError) as e:
                raise InputError(f"{p}: not valid YAML ({e})") from e
            if not isinstance(values, dict):
                raise InputError(f"{p}: expected a mapping of build options")
            values = {FINN_ALIASES.get(k, k): v for k, v in values.items()}
        values.update({FINN_ALIASES.get(k, k): v for k, v in overrides.items() if v is not None})
        bad = sorted(str(k) for k in values if k not in cls.model_fields)
        if bad:
            raise InputError(
                f"unknown config key(s) {', '.join(bad)}{where}; valid keys: "
                f"{', '.join(cls.model_fields)} (FINN+ names: {', '.join(FINN_ALIASES)})")
        return cls.checked(where, **values)

    @classmethod
    def checked(cls, where: str = "", **values) -> "BuildConfig":
        try:
            return cls(**values)
        except ValidationError as e:
            raise InputError(describe(e, where)) from None

    def as_dict(self) -> dict:
        return self.model_dump()


_TYPES = {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false",
          "string_type": "a string", "int_parsing": "an integer", "float_parsing": "a number"}


def describe(err: ValidationError, where: str = "") -> str:
    """One line naming the first bad key, its value and what was expected."""
    e = err.errors()[0]
    key = ".".join(str(x) for x in e["loc"] if not isinstance(x, int)) or "?"
    field = BuildConfig.model_fields.get(key.split(".")[0])
    expected = _TYPES.get(e["type"])
    if expected is None:
        expected = e["msg"][0].lower() + e["msg"][1:]
        expected = expected.removeprefix("input should be ")
    else:
        optional = field is not None and field.default is None
        expected += " (or null)" if optional else ""
    return f"config {key}={e.get('input')!r}{where}: expected {expected}"


def finn_config(config: BuildConfig, board, output_dir: str | Path, **extra: Any):
    """FINN+'s DataflowBuildConfig for `config` on `board` (what FINN+'s steps read)."""
    from finn.builder import build_dataflow_config as bc

    from fpgaprint.compiler.rtlsim.impl import standalone_thresholds

    values = dict(
        output_dir=str(output_dir),
        synth_clk_period_ns=float(config.clock_ns or board.clock_ns),
        board=board.finn_board,
        fpga_part=board.part,
        shell_flow_type=(bc.ShellFlowType.VIVADO_ZYNQ if board.platform == "zynq"
                         else bc.ShellFlowType.VITIS_ALVEO),
        generate_outputs=[bc.DataflowOutputType.ESTIMATE_REPORTS],
        folding_config_file=config.folding_config,
        target_fps=config.target_fps,
        mvau_wwidth_max=config.mvau_wwidth_max,
        standalone_thresholds=standalone_thresholds(config),  # implied by impl_style rtl/auto
        minimize_bit_width=True,
        auto_fifo_depths=config.auto_fifo_depths,
        auto_fifo_strategy=bc.AutoFIFOSizingMethod(config.auto_fifo_strategy),
        fifo_config_file=Path(config.fifo_config_file) if config.fifo_config_file else None,
        large_fifo_mem_style=bc.LargeFIFOMemStyle(config.large_fifo_mem_style),
    )
    values.update(extra)
    return bc.DataflowBuildConfig(**values)
