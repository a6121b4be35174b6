"""The accelerator's stream data, written once: FINN's `io_shape_dict` (datatypes and normal,
folded and packed shapes of the input and output streams), folding of row-major vectors and
FINN's bit packing of the stream words (SIMD and byte order reversed, as the FINN+ driver's DMA
and the AXI streams of a stitched design expect). Used by the PYNQ driver path and by RTL
simulation of the stitched accelerator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fpgaprint.core.errors import InputError

HW_DOMAIN = "finn.custom_op.fpgadataflow"
SHAPES = ("ishape_normal", "ishape_folded", "ishape_packed",
          "oshape_normal", "oshape_folded", "oshape_packed")  # io_shape_dict's shape keys


def _packing():
    """FINN's packing functions: the board's finn-plus-driver copy, else finn-plus's own."""
    try:
        from finn_plus_driver import packing
    except ImportError:
        try:
            from finn.util import data_packing as packing
        except ImportError:
            raise InputError("neither finn-plus-driver nor finn-plus is installed: FINN's data "
                             "packing is needed to drive the accelerator") from None
    return packing


def datatype(name: Any):
    """A qonnx DataType from `UINT8` or the driver's `DataType['UINT8']` notation."""
    from qonnx.core.datatype import DataType

    if not isinstance(name, str):
        return name
    text = name.strip()
    if text.startswith("DataType["):
        text = text[len("DataType["):].rstrip("]").strip("'\"")
    try:
        return DataType[text]
    except KeyError:
        raise InputError(f"unknown FINN datatype {name!r}") from None


@dataclass(frozen=True)
class DriverIO:
    """One input and one output of the accelerator as the driver's io_shape_dict states them
    (shapes with batch 1 in the first dimension)."""

    idt: str
    odt: str
    ishape_normal: tuple[int, ...]
    ishape_folded: tuple[int, ...]
    ishape_packed: tuple[int, ...]
    oshape_normal: tuple[int, ...]
    oshape_folded: tuple[int, ...]
    oshape_packed: tuple[int, ...]

    @classmethod
    def from_io_shape_dict(cls, d: dict[str, Any], where: str = "io_shape_dict") -> "DriverIO":
        try:
            if len(d["idt"]) != 1 or len(d["odt"]) != 1:
                raise InputError(f"{where}: {len(d['idt'])} inputs and {len(d['odt'])} outputs;"
                                 " the pynq backend drives accelerators with one of each")
            fields = {k: tuple(int(v) for v in d[k][0]) for k in SHAPES}
            return cls(datatype(d["idt"][0]).name, datatype(d["odt"][0]).name, **fields)
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise InputError(f"{where}: not a FINN io_shape_dict ({type(e).__name__}: {e})") \
                from None

    def to_io_shape_dict(self) -> dict[str, Any]:
        """This input and output as FINN's io_shape_dict (what `from_io_shape_dict` reads;
        JSON-ready)."""
        return {"idt": [f"DataType['{self.idt}']"], "odt": [f"DataType['{self.odt}']"],
                **{k: [list(getattr(self, k))] for k in SHAPES}}

    def batched(self, name: str, batch: int) -> tuple[int, ...]:
        """Shape `name` (e.g. "ishape_folded") for a batch of `batch`."""
        return (batch, *getattr(self, name)[1:])


def fold_input(x: np.ndarray, io: DriverIO) -> np.ndarray:
    """(B, ...) inputs in row-major order -> the driver's folded input shape for batch B."""
    b = x.shape[0]
    if x[0].size != int(np.prod(io.ishape_normal[1:])):
        raise InputError(f"input of {x[0].size} values per vector does not fit the "
                         f"accelerator input {io.ishape_normal}")
    return np.asarray(x).reshape(io.batched("ishape_folded", b))


def pack_input(folded: np.ndarray, io: DriverIO) -> np.ndarray:
    """Folded inputs -> uint8 buffer of the driver's packed shape (FINN packing, SIMD and
    byte order reversed as the accelerator's DMA expects)."""
    packed = _packing().finnpy_to_packed_bytearray(
        folded.astype(np.float32), datatype(io.idt), reverse_inner=True, reverse_endian=True)
    want = io.batched("ishape_packed", folded.shape[0])
    if tuple(packed.shape) != want:
        raise InputError(f"packed input has shape {packed.shape}, the driver expects {want}")
    return np.ascontiguousarray(packed, dtype=np.uint8)


def unpack_output(packed: np.ndarray, io: DriverIO) -> np.ndarray:
    """uint8 output buffer -> folded outputs (float32 carrying integers)."""
    b = packed.shape[0]
    return _packing().packed_bytearray_to_finnpy(
        np.ascontiguousarray(packed, dtype=np.uint8), datatype(io.odt),
        io.batched("oshape_folded", b), reverse_inner=True, reverse_endian=True)


def unfold_output(folded: np.ndarray, io: DriverIO) -> np.ndarray:
    """Folded outputs -> raw int64 (B, R)."""
    b = folded.shape[0]
    return np.rint(folded).astype(np.int64).reshape(io.batched("oshape_normal", b)).reshape(b, -1)

def io_shape_dict(model) -> dict[str, Any]:
    """FINN's io_shape_dict of an accelerator graph (HW layers only, one input and output):
    shapes from the first and last layer, packed shapes by packing a dummy tensor, as
    FINN+'s `get_driver_shapes` derives them (JSON-ready, batch 1)."""
    from qonnx.custom_op.registry import getCustomOp
    from qonnx.util.basic import gen_finn_dt_tensor

    hw = [n for n in model.graph.node if n.domain.startswith(HW_DOMAIN)]
    if not hw or len(model.graph.input) != 1 or len(model.graph.output) != 1:
        raise InputError("io_shape_dict: expected an accelerator graph with one input and "
                         "one output")
    first, last = getCustomOp(hw[0]), getCustomOp(hw[-1])
    idt, odt = first.get_input_datatype(), last.get_output_datatype()
    ifold = tuple(int(d) for d in first.get_folded_input_shape())
    ofold = tuple(int(d) for d in last.get_folded_output_shape())
    pack = _packing().finnpy_to_packed_bytearray
    return {
        "idt": [f"DataType['{idt.name}']"], "odt": [f"DataType['{odt.name}']"],
        "ishape_normal": [[int(d) for d in first.get_normal_input_shape()]],
        "ishape_folded": [list(ifold)],
        "ishape_packed": [[int(d) for d in pack(gen_finn_dt_tensor(idt, ifold), idt).shape]],
        "oshape_normal": [[int(d) for d in last.get_normal_output_shape()]],
        "oshape_folded": [list(ofold)],
        "oshape_packed": [[int(d) for d in pack(gen_finn_dt_tensor(odt, ofold), odt).shape]],
    }


def pack_output(raw: np.ndarray, io: DriverIO) -> np.ndarray:
    """Raw outputs (B, R) -> the uint8 words the accelerator streams out (the inverse of
    `unpack_output` after `unfold_output`)."""
    b = raw.shape[0]
    folded = np.asarray(raw).reshape(io.batched("oshape_folded", b)).astype(np.float32)
    packed = _packing().finnpy_to_packed_bytearray(
        folded, datatype(io.odt), reverse_inner=True, reverse_endian=True)
    return np.ascontiguousarray(packed, dtype=np.uint8)
