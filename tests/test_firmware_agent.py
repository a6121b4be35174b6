"""The C reference agent (firmware/): compiled with gcc (C99, -Werror) against the package's
headers and the Verilator HAL, served on a pty pair against the package's own RTL (the stitched
digits-mlp accelerator inside its on-chip self-test top), and judged by `fpgaprint verify` run
as a subprocess: PASS as built, FAIL with one bit flipped in an MVAU weight image."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import serial
from cagent_helpers import bist_library, build_agent, served_agent
from conftest import first_changing_flip, run_fpgaprint

from fpgaprint.core.errors import InputError, LinkError
from fpgaprint.core.golden import GoldenModel
from fpgaprint.core.package import verify_package
from fpgaprint.harness.client import BoardClient
from fpgaprint.hw_targets import cagent
from fpgaprint.hw_targets import protocol as P

MODEL = "digits-mlp"
WEIGHTS = "MVAU_2/weights"


@pytest.fixture(scope="module")
def fw_package(make_package, shared_dir) -> Path:
    """A signed digits-mlp package with its stitched RTL and on-chip self-test (exact)."""
    return make_package(MODEL, shared_dir / "pkg-fw-digits", threshold=0.5, bist="exact")


@pytest.fixture(scope="module")
def agent(fw_package, keypair, tmp_path_factory):
    """(agent binary, Verilated BIST top library) for the package."""
    out = tmp_path_factory.mktemp("c-agent")
    with verify_package(fw_package, trusted_key=keypair[1]) as pkg:
        binary = build_agent(pkg, out)
    return binary, bist_library(fw_package / "hw" / "rtl")


def _verify(port: str, pkg: Path, pub: Path, report: Path):
    res = run_fpgaprint("verify", "--port", port, "--package", pkg, "--trusted-key", pub,
                        "--json", report)
    rep = json.loads(report.read_text())
    return res, rep, {c["name"]: c for c in rep["verdict"]["checks"]}


def test_c_agent_on_a_pty_passes_verify(fw_package, keypair, agent, tmp_path):
    binary, library = agent
    with served_agent(binary, library, fw_package / "hw" / "rtl", serial="C-AGENT-7") as port:
        res, rep, checks = _verify(port, fw_package, keypair[1], tmp_path / "good.json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert rep["status"] == "PASS"
    assert {name: c["status"] for name, c in checks.items()} == {
        "identity": "PASS", "exact": "PASS", "fingerprint": "PASS", "onchip": "PASS"}
    assert rep["identity"]["serial"] == "C-AGENT-7" and rep["identity"]["backend"] == "firmware"
    st = rep["board_selftest"]
    assert st["bist_source"] == "rtl" and st["passed"] and st["exact_mismatches"] == 0
    assert st["count"] == len(np.load(fw_package / "selftest" / "vectors.npz")["inputs"])


def test_c_agent_with_a_flipped_weight_bit_fails_verify(fw_package, keypair, agent, tmp_path):
    from fpgaprint.compiler.rtlsim.design import StitchedDesign, memory_images, write_memories
    from fpgaprint.core.package import load_vectors
    from fpgaprint.hw_targets.faults import FaultSpec, apply_memory_faults

    binary, library = agent
    golden = GoldenModel(fw_package / "model" / "golden.onnx")
    flip, changed = first_changing_flip(golden, load_vectors(fw_package)["inputs"], WEIGHTS, 5)
    design = StitchedDesign(fw_package / "hw" / "rtl")
    mems = memory_images(design, golden)
    values, _ = apply_memory_faults(mems, FaultSpec(flips=[flip]))
    run_dir = tmp_path / "rtl"
    bits = write_memories(design, run_dir, values)
    shutil.copytree(design.dir / "bist", run_dir / "bist")
    assert len(bits) == 1 and bits[0]["file"].endswith(".dat")  # one bit of one weight image
    with served_agent(binary, library, run_dir) as port:
        res, rep, checks = _verify(port, fw_package, keypair[1], tmp_path / "bad.json")
    assert res.returncode == 1, res.stdout + res.stderr
    assert rep["status"] == "FAIL"
    assert checks["identity"]["status"] == "PASS"
    assert checks["exact"]["status"] == "FAIL" and checks["exact"]["failed"] == len(changed)
    assert checks["onchip"]["status"] == "FAIL"
    assert checks["onchip"]["extra"]["first_fail"] == changed[0]


def _frames(port: serial.Serial, want: int, timeout: float = 30.0) -> list:
    """The next `want` frames (or damaged-chunk errors) from the agent."""
    dec, out = P.FrameDecoder(), []
    deadline = time.monotonic() + timeout
    while len(out) < want and time.monotonic() < deadline:
        out += dec.feed(port.read(port.in_waiting or 1))
    assert len(out) == want, out
    return out


def _ask(port: serial.Serial, mtype: int, payload: bytes, seq: int, version: int = 1):
    port.write(P.encode_frame(P.Frame(mtype, seq, payload, version=version)))
    (frame,) = _frames(port, 1)
    assert isinstance(frame, P.Frame) and frame.is_response and frame.seq == seq
    return frame


def _error(frame: P.Frame) -> tuple[str, str]:
    assert frame.type == P.MsgType.ERROR, frame.describe()
    code, message = P.unpack_error(frame.payload)
    return P.error_name(code), message


def test_c_agent_speaks_the_wire_protocol(fw_package, keypair, agent):
    """Raw outputs and labels equal the golden model's, CHALLENGE answers are bound to their
    nonce; malformed requests get the ERROR the protocol names; READ slices, RESET and BOOT
    as docs/protocol.md says."""
    from fpgaprint.core.package import load_vectors

    binary, library = agent
    vec = load_vectors(fw_package)
    x = np.asarray(vec["inputs"], dtype=np.int64)
    with served_agent(binary, library, fw_package / "hw" / "rtl") as port:
        with BoardClient(port) as client:
            hello = client.hello()
            with verify_package(fw_package, trusted_key=keypair[1]) as pkg:
                assert hello["package_id"] == pkg.package_id
            assert hello["max_payload"] == 4096 and hello["protocol"] == 1
            raw, labels = client.infer(x)
            np.testing.assert_array_equal(raw, vec["golden_raw"])
            np.testing.assert_array_equal(labels, vec["golden_labels"])
            # CHALLENGE: the client checks every answer's SHA-256 binding to nonce and inputs
            order = np.random.default_rng(0).permutation(len(x))
            raw_c, labels_c = client.challenge(os.urandom(16), x[order])
            np.testing.assert_array_equal(raw_c, vec["golden_raw"][order])
            np.testing.assert_array_equal(labels_c, vec["golden_labels"][order])
            sliced = client._read(P.MsgType.INFO, b"", None)  # READ in 48-byte slices
            assert P.unpack_json(sliced)["package_id"] == hello["package_id"]
            with pytest.raises(LinkError, match="BAD_PAYLOAD.*63 values per vector"):
                client.infer(x[:2, :63])
        with serial.Serial(port, 115200, timeout=0.1) as s:
            s.write(P.DELIMITER)
            s.reset_input_buffer()
            wrong = x[:1].copy()
            wrong[0, 5] = 256
            assert _error(_ask(s, P.MsgType.INFER, P.pack_infer_request(wrong), 11)) == (
                "BAD_PAYLOAD", "inputs: value 256 outside UINT8 (0..255)")
            assert _error(_ask(s, P.MsgType.HELLO, P.pack_hello(2, 3), 12))[0] == "BAD_VERSION"
            assert _error(_ask(s, P.MsgType.INFO, b"", 13, version=2))[0] == "BAD_VERSION"
            assert _error(_ask(s, 0x08, b"", 14))[0] == "UNKNOWN_COMMAND"
            short_nonce = b"\x07" + bytes(7) + P.pack_array(x[:1])
            assert _error(_ask(s, P.MsgType.CHALLENGE, short_nonce, 19)) == (
                "BAD_PAYLOAD", "nonce must be 8..64 B")
            read_infer = bytes((P.MsgType.INFER,)) + P.pack_read_request(P.MsgType.HELLO, 0,
                                                                          48)[1:]
            assert _error(_ask(s, P.MsgType.READ, read_infer, 15))[0] == "BAD_PAYLOAD"
            good = bytearray(P.encode_frame(P.Frame(P.MsgType.INFO, 16, b"")))
            good[3] ^= 0x40  # damaged in transit: BAD_CRC (or BAD_FRAME), sequence 0
            s.write(bytes(good))
            (damaged,) = _frames(s, 1)
            assert damaged.seq == 0 and _error(damaged)[0] in ("BAD_CRC", "BAD_FRAME")
            answer = _ask(s, P.MsgType.INFO, b"", 17)
            assert P.unpack_json(answer.payload)["errors"] >= 8
            reset = _ask(s, P.MsgType.RESET, b"", 18)
            assert reset.type == P.MsgType.RESET and reset.payload == b""
            (boot,) = _frames(s, 1, timeout=60)
            assert boot.type == P.MsgType.BOOT and boot.flags & P.Flag.UNSOLICITED
            assert P.unpack_json(boot.payload)["boot"] == 2


def test_c_agent_answers_a_flood_of_damaged_frames_at_most_window_times_per_delivery(
        fw_package, agent):
    """2,000 damaged chunks in one write earn a few answers (at most `window` per read of the
    line), not 2,000: the others are counted as dropped, and the board serves the next
    request."""
    binary, library = agent
    with served_agent(binary, library, fw_package / "hw" / "rtl") as port, \
            serial.Serial(port, 115200, timeout=0.1) as s:
        s.write(P.DELIMITER)
        s.reset_input_buffer()
        s.write(b"\x01\x00" * 2000)
        s.write(P.encode_frame(P.Frame(P.MsgType.INFO, 5, b"")))
        dec, frames = P.FrameDecoder(), []
        deadline = time.monotonic() + 30
        while not any(f.seq == 5 for f in frames) and time.monotonic() < deadline:
            frames += [f for f in dec.feed(s.read(s.in_waiting or 1)) if isinstance(f, P.Frame)]
        info = next(f for f in frames if f.seq == 5)
    refused = [f for f in frames if f.seq == 0 and f.type == P.MsgType.ERROR]  # not BOOT
    assert all(_error(f)[0] == "BAD_FRAME" for f in refused)
    assert 1 <= len(refused) <= 16, len(refused)  # window 4, the line read in a few pieces
    info = P.unpack_json(info.payload)
    assert info["window"] == 4 and info["dropped"] == 2000 - len(refused)


def test_agent_object_needs_only_the_hal(agent):
    """The agent itself calls nothing but the HAL (and the compiler's memset/memcpy): no heap,
    no stdio, no operating system."""
    binary, _ = agent
    undefined = subprocess.run(["nm", "-u", str(binary.parent / "fpgaprint_agent.o")],
                               capture_output=True, text=True, check=True).stdout.split()
    names = {u for u in undefined if u != "U"}
    assert names and all(n.startswith("fpa_hal_") or n in ("memset", "memcpy") for n in names), \
        names
    assert {"fpa_hal_stream", "fpa_hal_bist_read", "fpa_hal_write"} <= names


def test_agent_header_needs_a_stitched_design(digits_package, keypair, tmp_path):
    with verify_package(digits_package, trusted_key=keypair[1]) as pkg:
        with pytest.raises(InputError, match="no stitched RTL"):
            cagent.render(pkg)
    out = subprocess.run([sys.executable, "-m",
                          "fpgaprint.hw_targets.cagent", str(digits_package),
                          str(tmp_path / "h.h"), "--trusted-key", str(keypair[1])],
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "no stitched RTL" in out.stderr and not (tmp_path / "h.h").exists()


def test_agent_header_tail_steps_and_refusals(fw_package, keypair, tmp_path):
    """The tail the agent computes is the golden graph's own (constants bit for bit); an op it
    cannot compute is refused naming the node."""
    from types import SimpleNamespace

    from onnx import helper
    from qonnx.core.modelwrapper import ModelWrapper

    with verify_package(fw_package, trusted_key=keypair[1]) as pkg:
        steps = cagent.tail_steps(pkg)
        io, model = pkg.io, ModelWrapper(str(pkg.golden_path))
    tail = [n for n in model.graph.node if not n.domain]
    assert [op for op, _ in steps] == [{"Mul": "FPA_TAIL_MUL", "Add": "FPA_TAIL_ADD"}[n.op_type]
                                       for n in tail]
    for (_, values), node in zip(steps, tail):
        const = model.get_initializer(node.input[1]).astype(np.float32)
        np.testing.assert_array_equal(np.float32(values),
                                      np.broadcast_to(const, (1, len(values))).ravel())
    last = model.graph.node[-1]
    out = last.output[0]
    last.output[0] = "before_softmax"
    model.graph.node.append(helper.make_node("Softmax", ["before_softmax"], [out],
                                             name="Softmax_0"))
    bad = tmp_path / "golden.onnx"
    model.save(str(bad))
    with pytest.raises(InputError, match="Softmax node 'Softmax_0'"):
        cagent.tail_steps(SimpleNamespace(io=io, golden_path=bad))


@pytest.mark.parametrize("window", [{"base": "0x43C10000", "high": "0x43C10FFF"}, None])
def test_agent_header_gives_the_hal_the_signed_bist_window(fw_package, keypair, tmp_path,
                                                          window):
    """A bare-metal HAL reads the BIST at FPA_BIST_BASE, which the header takes from the signed
    manifest's bitstream.bist (a stand-in bitfile: Vivado is not installed); a package whose
    bitstream records no window defines none. Checked by compiling the header with gcc."""
    from conftest import resign

    from fpgaprint.core.manifest import sha256_file

    pkg_dir = tmp_path / "pkg"
    shutil.copytree(fw_package, pkg_dir)
    (pkg_dir / "hw" / "finn-accel.bit").write_bytes(b"stand-in bitfile")

    def edit(m: dict) -> None:
        m["bitstream"] = {"path": "hw/finn-accel.bit", "present": True,
                          "sha256": sha256_file(pkg_dir / "hw" / "finn-accel.bit"),
                          **({"bist": {"instance": "StreamingDataflowPartition_1",
                                       "interface": "s_axi_bist", **window}} if window else {})}

    resign(pkg_dir, keypair[0], edit)
    with verify_package(pkg_dir, trusted_key=keypair[1]) as pkg:
        header = cagent.write(pkg, tmp_path / cagent.HEADER)
    probe = tmp_path / "probe.c"
    probe.write_text('#include <stdio.h>\n#include "fpgaprint_agent_package.h"\n'
                     "int main(void) {\n#ifdef FPA_BIST_BASE\n"
                     'printf("%llx %llx\\n", (unsigned long long)FPA_BIST_BASE, '
                     "(unsigned long long)FPA_BIST_SIZE);\n#else\n"
                     'printf("none\\n");\n#endif\nreturn FPA_HAS_BIST ? 0 : 1;\n}\n')
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Werror", "-I", str(header.parent), "-o",
                    str(tmp_path / "probe"), str(probe)], check=True)
    out = subprocess.run([str(tmp_path / "probe")], capture_output=True, text=True, check=True)
    assert out.stdout.split() == (["43c10000", "1000"] if window else ["none"])
