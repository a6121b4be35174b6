"""The PYNQ backend's data path without a board: folding and FINN packing of inputs and
outputs for the digits/TFC accelerators, checked against FINN's own packing and an
independent bit-level reference; the board itself is replaced by `BoardDouble` (a test double
for the PYNQ board and FINN+ driver overlay, which cannot exist here)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fpgaprint.core.errors import InputError
from fpgaprint.core.golden import GoldenModel
from fpgaprint.core.package import verify_package
from fpgaprint.hw_targets.backends import open_backend
from fpgaprint.hw_targets.backends.pynq import (
    DriverIO,
    HostGraph,
    PynqBackend,
    datatype,
    fold_input,
    pack_input,
    unfold_output,
    unpack_output,
)


def io_shape_dict(c) -> dict:
    """The driver's io_shape_dict for a compiled accelerator, from FINN's HW layer shapes."""
    from finn.util.data_packing import finnpy_to_packed_bytearray
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp
    from qonnx.util.basic import gen_finn_dt_tensor

    path = sorted((c.out / "model" / "steps").glob("*_folding.onnx"))[0]
    model = ModelWrapper(str(path))
    hw = [n for n in model.graph.node if n.domain.startswith("finn.custom_op.fpgadataflow")]
    first, last = getCustomOp(hw[0]), getCustomOp(hw[-1])
    idt, odt = first.get_input_datatype(), last.get_output_datatype()
    ifold, ofold = first.get_folded_input_shape(), last.get_folded_output_shape()
    return {
        "idt": [f"DataType['{idt.name}']"], "odt": [f"DataType['{odt.name}']"],
        "ishape_normal": [list(first.get_normal_input_shape())], "ishape_folded": [list(ifold)],
        "ishape_packed": [list(finnpy_to_packed_bytearray(gen_finn_dt_tensor(idt, ifold),
                                                          idt).shape)],
        "oshape_normal": [list(last.get_normal_output_shape())], "oshape_folded": [list(ofold)],
        "oshape_packed": [list(finnpy_to_packed_bytearray(gen_finn_dt_tensor(odt, ofold),
                                                          odt).shape)],
        "idma_names": ["idma0"], "odma_names": ["odma0"], "num_inputs": 1, "num_outputs": 1,
    }


# ---------------------------------------------------------------- independent reference


def ref_pack(folded: np.ndarray, dt_name: str) -> np.ndarray:
    """Element k of the innermost dimension at bits [k*w, (k+1)*w) of a little-endian word."""
    dt = datatype(dt_name)
    w = dt.bitwidth()
    rows = np.asarray(folded, dtype=np.int64).reshape(-1, folded.shape[-1])
    nbytes = (w * folded.shape[-1] + 7) // 8
    out = [sum((int(v) & ((1 << w) - 1)) << (k * w) for k, v in enumerate(row))
           .to_bytes(nbytes, "little") for row in rows]
    return np.frombuffer(b"".join(out), dtype=np.uint8).reshape(*folded.shape[:-1], nbytes)


def ref_unpack(packed: np.ndarray, dt_name: str, folded_shape: tuple[int, ...]) -> np.ndarray:
    dt = datatype(dt_name)
    w, simd = dt.bitwidth(), folded_shape[-1]
    rows = packed.reshape(-1, packed.shape[-1])
    vals = []
    for row in rows:
        word = int.from_bytes(row.tobytes(), "little")
        for k in range(simd):
            v = word >> (k * w) & ((1 << w) - 1)
            vals.append(v - (1 << w) if dt.signed() and v >= 1 << (w - 1) else v)
    return np.array(vals, dtype=np.int64).reshape(folded_shape)


def full_range(dt_name: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    dt = datatype(dt_name)
    x = np.random.default_rng(seed).integers(int(dt.min()), int(dt.max()) + 1, shape)
    x.reshape(-1)[:2] = [int(dt.min()), int(dt.max())]
    return x


class BoardDouble:
    """Stands in for a PYNQ board running the bitfile through the FINN+ driver overlay: DMA
    buffers are numpy arrays, the accelerator is the golden model, and the buffers are decoded
    and encoded with the independent reference packer."""

    def __init__(self, golden: GoldenModel, io: DriverIO, corrupt_output_byte: int | None = None):
        self.golden, self.io, self.corrupt = golden, io, corrupt_output_byte
        self.executions = 0
        self.batch_size = 1

    @property
    def batch_size(self) -> int:
        return self._batch

    @batch_size.setter
    def batch_size(self, b: int) -> None:
        self._batch = b
        self.ibuf = np.zeros(self.io.batched("ishape_packed", b), dtype=np.uint8)
        self.obuf = np.zeros(self.io.batched("oshape_packed", b), dtype=np.uint8)

    def copy_input_data_to_device(self, data: np.ndarray, ind: int = 0) -> None:
        np.copyto(self.ibuf, data)

    def execute_on_buffers(self, asynch: bool = False, batch_size: int | None = None) -> None:
        b = self._batch
        x = ref_unpack(self.ibuf, self.io.idt, self.io.batched("ishape_folded", b))
        raw = self.golden.run(x.reshape(b, -1))[0]
        self.obuf[...] = ref_pack(raw.reshape(self.io.batched("oshape_folded", b)), self.io.odt)
        if self.corrupt is not None:
            self.obuf.reshape(-1)[self.corrupt] ^= 0x01
        self.executions += 1

    def copy_output_data_from_device(self, data: np.ndarray, ind: int = 0) -> None:
        np.copyto(data, self.obuf)


# ---------------------------------------------------------------- digits shapes


@pytest.fixture(scope="module")
def digits_io(digits_build) -> DriverIO:
    return DriverIO.from_io_shape_dict(io_shape_dict(digits_build))


@pytest.fixture(scope="module")
def package(digits_package, keypair):
    return verify_package(digits_package, trusted_key=keypair[1])


def test_digits_driver_shapes(digits_io, digits_build):
    io = digits_build.io
    assert (digits_io.idt, digits_io.odt) == (io["input"]["datatype"],
                                              io["raw_output"]["datatype"])
    assert digits_io.ishape_normal == (1, 64) and digits_io.oshape_normal == (1, 10)
    assert np.prod(digits_io.ishape_folded) == 64 and np.prod(digits_io.oshape_folded) == 10
    assert digits_io.batched("ishape_packed", 5)[0] == 5


def check_input_packing(io: DriverIO, x: np.ndarray) -> None:
    from finn.util.data_packing import packed_bytearray_to_finnpy

    packed = pack_input(fold_input(x, io), io)
    b = x.shape[0]
    assert packed.dtype == np.uint8 and packed.shape == io.batched("ishape_packed", b)
    folded = io.batched("ishape_folded", b)
    np.testing.assert_array_equal(packed, ref_pack(x.reshape(folded), io.idt))
    back = packed_bytearray_to_finnpy(packed, datatype(io.idt), folded, reverse_inner=True,
                                      reverse_endian=True)
    np.testing.assert_array_equal(back.reshape(x.shape), x)
    if io.idt == "UINT8":  # one byte per element, element order kept
        np.testing.assert_array_equal(packed.reshape(b, -1), x.reshape(b, -1))


def check_output_unpacking(io: DriverIO, raw: np.ndarray) -> None:
    from finn.util.data_packing import finnpy_to_packed_bytearray

    b = raw.shape[0]
    folded = raw.reshape(io.batched("oshape_folded", b))
    finn_packed = finnpy_to_packed_bytearray(folded.astype(np.float32), datatype(io.odt),
                                             reverse_inner=True, reverse_endian=True)
    np.testing.assert_array_equal(finn_packed, ref_pack(folded, io.odt))
    assert finn_packed.shape == io.batched("oshape_packed", b)
    got = unfold_output(unpack_output(finn_packed, io), io)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, raw.reshape(b, -1))


@pytest.mark.parametrize("batch", [1, 7])
def test_digits_input_packing(digits_io, batch):
    check_input_packing(digits_io, full_range(digits_io.idt, (batch, 64), seed=batch))


@pytest.mark.parametrize("batch", [1, 7])
def test_digits_output_unpacking(digits_io, batch):
    check_output_unpacking(digits_io, full_range(digits_io.odt, (batch, 10), seed=batch))


def test_fold_input_refuses_wrong_size(digits_io):
    with pytest.raises(InputError, match="does not fit the accelerator input"):
        fold_input(np.zeros((2, 63)), digits_io)


def test_host_tail_gives_the_golden_labels(package):
    v = package.vectors()
    host = HostGraph(package.golden_path, package.io["raw_output"]["name"])
    assert [n.op_type for n in host.tail] == ["Mul", "Add"]
    np.testing.assert_array_equal(host.labels(v["golden_raw"]), v["golden_labels"])
    _, logits, _ = GoldenModel(package.golden_path).run(v["inputs"][:4])
    np.testing.assert_allclose(host.final(v["golden_raw"][:4]), logits, rtol=0, atol=1e-6)


def test_backend_on_board_double_is_bit_exact(package, digits_io):
    double = BoardDouble(GoldenModel(package.golden_path), digits_io)
    board = PynqBackend(package, serial="PYNQ-1", overlay=double, io=digits_io)
    v = package.vectors()
    raw, labels = board.infer(v["inputs"])
    np.testing.assert_array_equal(raw, v["golden_raw"])
    np.testing.assert_array_equal(labels, v["golden_labels"])
    st = board.selftest()
    assert st["passed"] and st["exact_mismatches"] == 0 and st["count"] == len(v["inputs"])
    assert board.identity()["backend"] == "pynq" and board.identity()["serial"] == "PYNQ-1"
    board.infer(v["inputs"][:3])
    assert double.batch_size == 3 and double.executions == 3


def test_a_board_without_a_given_serial_is_named_by_its_mac_address(package, digits_io,
                                                                     monkeypatch):
    """Boards flashed from one SD image share their host name (and the agent's process id at
    boot): their MAC address tells them apart; with no interface, the per-process default."""
    import uuid

    double = BoardDouble(GoldenModel(package.golden_path), digits_io)
    monkeypatch.setattr(uuid, "getnode", lambda: 0x00183E0A0B0C)
    board = PynqBackend(package, overlay=double, io=digits_io)
    assert board.identity()["serial"] == "MAC-00183E0A0B0C"
    monkeypatch.setattr(uuid, "getnode", lambda: 0x01183E0A0B0C)  # made up: multicast bit set
    assert PynqBackend(package, overlay=double, io=digits_io).serial.startswith("VB-")
    assert PynqBackend(package, "SN-7", overlay=double, io=digits_io).serial == "SN-7"


def test_backend_sees_a_corrupted_output_word(package, digits_io):
    double = BoardDouble(GoldenModel(package.golden_path), digits_io, corrupt_output_byte=0)
    board = PynqBackend(package, overlay=double, io=digits_io)
    v = package.vectors()
    raw, _ = board.infer(v["inputs"][:4])
    wrong = np.argwhere(raw != v["golden_raw"][:4])
    assert wrong.tolist() == [[0, 0]]  # byte 0 holds the low bits of vector 0, output 0
    assert raw[0, 0] ^ v["golden_raw"][0, 0] == 1
    assert not board.selftest()["passed"]


# ---------------------------------------------------------------- package and board errors


def test_pynq_needs_a_board(tmp_path, make_package, keypair, digits_build):
    settings = {"driver_information": {"driver_type": "FINNDMAOverlay", "platform": "zynq-iodma",
                                       "io_shape_dict": io_shape_dict(digits_build)}}
    pkg = make_package("digits-mlp", tmp_path / "pkg",
                       hw={"top.bit": b"\x00bitfile", "settings.json":
                           json.dumps(settings).encode()})
    with pytest.raises(InputError, match="'pynq' package is not installed here"):
        open_backend(pkg, backend="pynq", trusted_key=keypair[1])


def test_bad_driver_settings(tmp_path, make_package, keypair):
    bad = {"driver_information": {"io_shape_dict": {"idt": ["DataType['UINT8']"]}}}
    pkg = make_package("digits-mlp", tmp_path / "pkg",
                       hw={"top.bit": b"\x00", "settings.json": json.dumps(bad).encode()})
    with pytest.raises(InputError, match=r"hw/settings.json: not a FINN io_shape_dict"):
        open_backend(pkg, backend="pynq", trusted_key=keypair[1])
    with pytest.raises(InputError, match="unknown FINN datatype"):
        datatype("DataType['FOO8']")


# ---------------------------------------------------------------- TFC shapes


@pytest.mark.slow
def test_tfc_packing_round_trip(compiled):
    tfc = compiled("tfc-w2a2")
    io = DriverIO.from_io_shape_dict(io_shape_dict(tfc))
    assert (io.idt, io.odt) == (tfc.io["input"]["datatype"], tfc.io["raw_output"]["datatype"])
    assert io.ishape_normal == (1, 784) and io.oshape_normal == (1, 10)
    check_input_packing(io, full_range(io.idt, (3, 1, 28, 28), seed=1))
    check_output_unpacking(io, full_range(io.odt, (3, 10), seed=2))


@pytest.mark.slow
def test_tfc_backend_on_board_double(tmp_path, compiled, make_package, keypair):
    io = DriverIO.from_io_shape_dict(io_shape_dict(compiled("tfc-w2a2")))
    pkg = verify_package(make_package("tfc-w2a2", tmp_path / "tfc", threshold=0.5),
                         trusted_key=keypair[1])
    board = PynqBackend(pkg, overlay=BoardDouble(GoldenModel(pkg.golden_path), io), io=io)
    v = pkg.vectors()
    raw, labels = board.infer(v["inputs"])
    np.testing.assert_array_equal(raw, v["golden_raw"])
    np.testing.assert_array_equal(labels, v["golden_labels"])
