"""The PYNQ backend: the package's bitfile on a PYNQ board, driven by the FINN+ driver.

The overlay (finn-plus-driver, which needs `pynq`) moves packed buffers by DMA; this module
prepares them: host-side reshapes before the accelerator, folding to the driver's
`io_shape_dict` shapes, FINN's bit packing (reversed SIMD and endianness, as the FINN+ driver
packs), and after the accelerator unpacking, unfolding and the host-side tail of the golden
graph (e.g. the final scale and bias) for the labels. The data functions need no board.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np

from fpgaprint.core.errors import InputError, LinkError
from fpgaprint.core.golden import HW_DOMAIN, INPUT_OPS, accelerator_inputs
from fpgaprint.core.package import Package
from fpgaprint.core.streams import (  # noqa: F401  (the driver data path, re-exported)
    DriverIO,
    datatype,
    fold_input,
    pack_input,
    unfold_output,
    unpack_output,
)
from fpgaprint.hw_targets.backends.base import Backend, check_inputs, machine_serial, register

SETTINGS = ("hw/settings.json", "hw/driver/settings.json")


class HostGraph:
    """The host-side parts of the golden graph around the accelerator: the head (reshapes and
    transposes, `core.golden.INPUT_OPS`) and the tail that turns raw outputs into final
    outputs."""

    def __init__(self, golden_path: Path, raw_output: str, tail_only: bool = False):
        """`tail_only`: only the tail is used, any host-side head is allowed."""
        from qonnx.core.modelwrapper import ModelWrapper

        self.model = ModelWrapper(str(golden_path))
        nodes = list(self.model.graph.node)
        hw = [i for i, n in enumerate(nodes) if n.domain.startswith(HW_DOMAIN)]
        if not hw:
            raise InputError(f"{golden_path}: no FINN HW layers")
        bad = [] if tail_only else [n for n in nodes[:hw[0]] if n.op_type not in INPUT_OPS]
        if bad:
            raise InputError(f"{golden_path}: host-side {bad[0].op_type} node {bad[0].name!r} "
                             "before the accelerator; a board applies only "
                             f"{', '.join(INPUT_OPS)} there")
        producer = self.model.find_producer(raw_output)
        if producer is None or nodes.index(producer) != hw[-1]:
            raise InputError(f"{golden_path}: raw output {raw_output!r} is not produced by the "
                             "last HW layer")
        from fpgaprint.core.golden import host_ops_of, scores_tensor

        host_ops_of(self.model, raw_output)  # only the host ops of the closed table
        self.raw_output = raw_output
        self.output = self.model.graph.output[0].name
        self.scores = scores_tensor(self.model, raw_output)  # what the label is the argmax of
        self.tail = nodes[hw[-1] + 1:]

    def head(self, x: np.ndarray) -> np.ndarray:
        """Checked inputs (B, *input) as the accelerator reads them, (B, values)."""
        return accelerator_inputs(self.model, x)

    def final(self, raw: np.ndarray, name: str | None = None) -> np.ndarray:
        """Final outputs (B, C) float32 from raw accelerator outputs (B, R) (or the tail's
        tensor `name`)."""
        from fpgaprint.core.golden import run_tail

        return run_tail(self.model, self.raw_output, raw, name or self.output)

    def labels(self, raw: np.ndarray) -> np.ndarray:
        return self.final(raw, self.scores).argmax(axis=1).astype(np.int64)


def find_hw_files(package: Package) -> tuple[Path, Path]:
    """(bitfile, settings.json) of the package's hw/ folder."""
    bit_rel = (package.manifest.get("bitstream") or {}).get("path")
    bit = package.path(bit_rel) if bit_rel else None
    if bit is None:
        bits = sorted(package.path("hw").glob("*.bit")) if package.path("hw").is_dir() else []
        bit = bits[0] if len(bits) == 1 else None
    if bit is None or not bit.is_file():
        raise InputError(f"{package.dir}: no bitfile in hw/ (the package was built without "
                         "Vivado; only the virtual backend can run it)")
    for rel in SETTINGS:
        if package.path(rel).is_file():
            return bit, package.path(rel)
    raise InputError(f"{package.dir}: no FINN+ driver settings ({' or '.join(SETTINGS)})")


def load_driver_settings(path: Path) -> dict[str, Any]:
    try:
        info = json.loads(path.read_text())["driver_information"]
        info["io_shape_dict"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path}: not a FINN+ driver settings file ({e})") from None
    return info


def load_overlay(bitfile: Path, settings: Path, info: dict[str, Any]):
    """The FINN+ driver's overlay for the bitfile (flashes the FPGA). Needs pynq and
    finn-plus-driver, which exist only on a PYNQ board image."""
    try:
        import pynq  # noqa: F401
    except ImportError:
        raise InputError("the pynq backend runs on a PYNQ board: the 'pynq' package is not "
                         "installed here (use the virtual backend)") from None
    try:
        from finn_plus_driver import get_driver_class
    except ImportError:
        raise InputError("the pynq backend needs the FINN+ driver: 'finn-plus-driver' is not "
                         "installed on this board") from None
    kwargs = copy.deepcopy(info)
    driver_type = kwargs.pop("driver_type", "FINNDMAOverlay")
    kwargs.setdefault("runtime_weight_dir", str(settings.parent / "runtime_weights"))
    kwargs.setdefault("mlo_weight_dir", str(settings.parent / "mlo_weights"))
    try:
        return get_driver_class(driver_type)(str(bitfile), **kwargs)
    except Exception as e:
        raise LinkError(f"loading {bitfile.name} on the board failed: {type(e).__name__}: {e}") \
            from e


@register("pynq")
class PynqBackend(Backend):
    """A PYNQ board running the package's bitfile. `overlay` replaces the
    FINN+ driver overlay (anything with its batch_size / copy_input_data_to_device /
    execute_on_buffers / copy_output_data_from_device interface). Without `serial`, the
    board's MAC address names it (`machine_serial`): boards of one image share a host name."""

    def __init__(self, package: Package, serial: str | None = None, overlay: Any = None,
                 io: DriverIO | None = None):
        super().__init__(package, serial or machine_serial())
        pio = package.io
        self.host = HostGraph(package.golden_path, pio["raw_output"]["name"])
        if overlay is None or io is None:
            bitfile, settings = find_hw_files(package)
            info = load_driver_settings(settings)
            io = io or DriverIO.from_io_shape_dict(info["io_shape_dict"], str(settings))
            overlay = overlay if overlay is not None else load_overlay(bitfile, settings, info)
        self.io = io
        self.overlay = overlay

    def accelerate(self, x: np.ndarray) -> np.ndarray:
        """Raw accelerator outputs int64 (B, R) for checked inputs (B, *input_shape)."""
        b = x.shape[0]
        packed = pack_input(fold_input(self.host.head(x), self.io), self.io)
        if getattr(self.overlay, "batch_size", None) != b:
            self.overlay.batch_size = b
        out = np.empty(self.io.batched("oshape_packed", b), dtype=np.uint8)
        self.overlay.copy_input_data_to_device(packed, 0)
        self.overlay.execute_on_buffers()
        self.overlay.copy_output_data_from_device(out, 0)
        return unfold_output(unpack_output(out, self.io), self.io)

    def infer(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = check_inputs(x, self.input_shape, self.input_datatype)
        raw = self.accelerate(x)
        return raw, self.host.labels(raw)

    bist_source = "mmio"
    BIST_WAIT_S = 2.0  # longest wait for the power-on self-test's DONE

    def bist_mmio(self) -> Any:
        """The BIST's AXI-lite slave (anything with PYNQ's `read(offset)` / `write(offset,
        value)`) at the window the signed package records, never where the bitstream's own
        names suggest: the overlay's IP whose `phys_addr` is the window's base, else
        `pynq.MMIO` over the window; None when the package records no window (or, without
        pynq, no IP is there)."""
        window = self.package.bist_window()
        if window is None:
            return None
        base, size = window
        ip_dict = getattr(self.overlay, "ip_dict", None) or {}
        for name in sorted(ip_dict):
            info = ip_dict[name]
            if isinstance(info, dict) and info.get("phys_addr") == base:
                ip = self.overlay
                for part in str(name).split("/"):  # a hierarchy's IP: overlay.hier.ip
                    ip = getattr(ip, part, None)
                if ip is not None:
                    return ip
        try:
            from pynq import MMIO
        except ImportError:
            return None
        return MMIO(base, size)

    def bist_registers(self, raw: np.ndarray) -> dict[str, int] | None:
        """The on-chip self-test's registers read through the FINN+ driver's MMIO, waiting
        (bounded) for DONE; None when the bitstream has no BIST. Untested without a board."""
        import time as _time

        from fpgaprint.core.bist import OFFSETS, RECORD_OFFSETS, STATUS_BITS

        mmio = self.bist_mmio()
        if mmio is None:
            return None
        end = _time.monotonic() + self.BIST_WAIT_S
        while not int(mmio.read(OFFSETS["STATUS"])) >> STATUS_BITS["DONE"] & 1:
            if _time.monotonic() > end:
                break  # reported as not done: the onchip check has no verdict
            _time.sleep(0.001)
        return {k: int(mmio.read(offset)) & 0xFFFFFFFF for k, offset in RECORD_OFFSETS.items()}

    def reset(self) -> None:
        """Re-arm the accelerator: reallocating the DMA buffers drops any stale data."""
        self.overlay.batch_size = getattr(self.overlay, "batch_size", 1) or 1
