"""The virtual board on a real compiled digits-mlp package: bit-exact answers, memory faults
against the equally modified golden model, swapped model, replay, package verification."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from fpgaprint.core.errors import InputError
from fpgaprint.core.golden import GoldenModel
from fpgaprint.core.package import verify_package
from fpgaprint.core.words import flip
from fpgaprint.hw_targets.backends import open_backend
from fpgaprint.hw_targets.backends.virtual import VirtualBackend
from fpgaprint.hw_targets.faults import FaultSpec


@pytest.fixture(scope="module")
def pkg_dir(digits_package) -> Path:
    return digits_package


@pytest.fixture(scope="module")
def package(pkg_dir, keypair):
    return verify_package(pkg_dir, trusted_key=keypair[1])


@pytest.fixture(scope="module")
def board(package) -> VirtualBackend:
    return VirtualBackend(package, serial="SN-0001")


@pytest.fixture(scope="module")
def golden(package) -> GoldenModel:
    return GoldenModel(package.golden_path)


def random_inputs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 64))


def test_answers_equal_golden_for_every_embedded_vector(board, package, golden):
    v = package.vectors()
    raw, labels = board.infer(v["inputs"])
    assert raw.dtype == np.int64 and labels.dtype == np.int64
    np.testing.assert_array_equal(raw, v["golden_raw"])
    np.testing.assert_array_equal(labels, v["golden_labels"])
    # and equal to one FINN execution per vector, i.e. batching changes nothing
    ref_raw, ref_logits, ref_labels = golden.run(v["inputs"], batch=False)
    np.testing.assert_array_equal(raw, ref_raw)
    np.testing.assert_array_equal(labels, ref_labels)
    assert labels.tolist() == ref_logits.argmax(axis=1).tolist()


@pytest.mark.parametrize("n", [1, 3, 65])
def test_golden_batching_is_bit_identical(golden, n):
    x = random_inputs(n, seed=n)
    assert golden.batchable
    for a, b in zip(golden.run(x), golden.run(x, batch=False)):
        assert a.shape[0] == n
        np.testing.assert_array_equal(a, b)


def test_golden_without_batching_support_runs_per_vector(package, monkeypatch):
    import fpgaprint.core.golden as golden_module

    monkeypatch.setattr(golden_module, "ROWWISE_OPS", {"MVAU"})
    g = GoldenModel(package.golden_path)
    assert not g.batchable
    v = package.vectors()
    raw, _, labels = g.run(v["inputs"][:5])
    np.testing.assert_array_equal(raw, v["golden_raw"][:5])
    np.testing.assert_array_equal(labels, v["golden_labels"][:5])


def test_selftest_passes_and_counts(board, package):
    st = board.selftest()
    v = package.vectors()
    assert st["passed"] is True
    assert st["count"] == len(v["inputs"]) and st["exact_mismatches"] == 0
    assert st["label_matches"] == int(np.sum(v["golden_labels"] == v["expected_labels"]))
    assert st["seconds"] >= 0


def test_identity(board, package):
    ident = board.identity()
    assert ident == {"board": "Pynq-Z1", "serial": "SN-0001", "package_id": package.package_id,
                     "bitstream_sha256": None, "backend": "virtual", "name": "digits-mlp"}
    assert VirtualBackend(package).identity()["serial"].startswith("VB-")
    assert board.fault_log() == []


def test_bad_inputs_are_refused(board):
    with pytest.raises(InputError, match="outside UINT8"):
        board.infer(np.full((2, 64), 256))
    with pytest.raises(InputError, match=r"does not fit the accelerator input \(B, 64\)"):
        board.infer(np.zeros((2, 63), dtype=np.int64))
    with pytest.raises(InputError, match="non-integer"):
        board.infer(np.full((1, 64), 0.5))
    raw, _ = board.infer(np.zeros((1, 8, 8), dtype=np.uint8))  # rows may come reshaped
    assert raw.shape == (1, 10)


# ---------------------------------------------------------------- memory faults


def test_sign_bit_flip_in_last_layer_changes_what_golden_predicts(package, golden, board):
    mem = golden.memories()["MVAU_2/weights"]
    assert (mem.datatype, mem.bits, mem.signed) == ("INT4", 4, True)
    index = int(np.argmax(np.abs(mem.values).reshape(-1)))  # a weight that matters
    faulty = VirtualBackend(package, FaultSpec(flips=[("MVAU_2/weights", index, 3)]))
    x = np.concatenate([package.vectors()["inputs"], random_inputs(16)])
    raw, labels = faulty.infer(x)
    want_raw, _, want_labels = golden.flipped([("MVAU_2", index, 3)]).run(x)
    np.testing.assert_array_equal(raw, want_raw)
    np.testing.assert_array_equal(labels, want_labels)
    clean_raw, _ = board.infer(x)
    changed = np.any(raw != clean_raw, axis=1)
    assert changed.any()
    # only the output column fed by that weight can change
    col = index % mem.values.shape[1]
    diff_cols = np.nonzero(np.any(raw != clean_raw, axis=0))[0].tolist()
    assert diff_cols == [col]
    old = int(mem.values.reshape(-1)[index])
    assert faulty.fault_log() == [{
        "kind": "flip", "memory": "MVAU_2/weights", "layer": "MVAU_2", "tensor": mem.tensor,
        "datatype": "INT4", "index": index, "bit": 3, "old": old,
        "new": flip(old, 3, "INT4"), "effective": True}]
    assert int(faulty.memories()["MVAU_2/weights"].values.reshape(-1)[index]) == \
        flip(old, 3, "INT4")
    assert not faulty.selftest()["passed"]


def test_random_flips_are_reproducible_and_logged(package, golden):
    mems = golden.memories()
    a = VirtualBackend(package, FaultSpec(flip_bits=6, seed=7)).fault_log()
    b = VirtualBackend(package, FaultSpec(flip_bits=6, seed=7)).fault_log()
    c = VirtualBackend(package, FaultSpec(flip_bits=6, seed=8)).fault_log()
    assert a == b and a != c and len(a) == 6
    assert len({(e["memory"], e["index"], e["bit"]) for e in a}) == 6  # distinct bits
    faulty = VirtualBackend(package, FaultSpec(flip_bits=6, seed=7))
    now = faulty.memories()
    for e in a:
        img = mems[e["memory"]]
        assert e["kind"] == "random_flip" and e["seed"] == 7
        assert e["datatype"] == img.datatype and 0 <= e["bit"] < img.bits
        assert e["old"] == int(img.values.reshape(-1)[e["index"]])
        assert e["new"] == flip(e["old"], e["bit"], img.datatype)
        assert int(now[e["memory"]].values.reshape(-1)[e["index"]]) == e["new"]
    # the faulty board computes what the golden model with the same flips computes
    x = package.vectors()["inputs"][:16]
    flipped = golden.flipped([(e["memory"], e["index"], e["bit"]) for e in a])
    want = flipped.run(x, batch=False)[0]
    np.testing.assert_array_equal(faulty.infer(x)[0], want)


def test_random_flips_cover_every_memory(package, golden):
    log = VirtualBackend(package, FaultSpec(flip_bits=400, seed=1)).fault_log()
    hit = {e["memory"] for e in log}
    assert hit == set(golden.memories())  # thresholds as well as weights


def test_stuck_at_semantics(package, golden):
    img = golden.memories()["Thresholding_0/thresholds"]
    flat = img.values.reshape(-1)
    index = 5
    word = int(flat[index]) & ((1 << img.bits) - 1)
    bit = next(b for b in range(img.bits - 1) if not word >> b & 1)  # a bit that reads 0
    spec = FaultSpec.from_strings(stuck_at=[f"Thresholding_0/thresholds:{index}:{bit}:1",
                                            f"Thresholding_0/thresholds:{index}:{bit + 1}:"
                                            f"{word >> (bit + 1) & 1}"])
    board = VirtualBackend(package, spec)
    log = board.fault_log()
    assert [e["effective"] for e in log] == [True, False]
    assert log[0]["new"] == flip(int(flat[index]), bit, img.datatype)
    assert log[1]["old"] == log[1]["new"] == log[0]["new"]
    stored = int(board.memories()["Thresholding_0/thresholds"].values.reshape(-1)[index])
    assert (stored & ((1 << img.bits) - 1)) >> bit & 1 == 1
    # a stuck bit wins over a flip of the same bit
    key = "Thresholding_0/thresholds"
    both = VirtualBackend(package, FaultSpec(flips=[(key, index, bit)],
                                             stuck_at=[(key, index, bit, 0)]))
    kinds = [(e["kind"], e["new"]) for e in both.fault_log()]
    assert kinds == [("flip", log[0]["new"]), ("stuck_at", int(flat[index]))]
    x = package.vectors()["inputs"]
    np.testing.assert_array_equal(both.infer(x)[0], package.vectors()["golden_raw"])


# ---------------------------------------------------------------- swap and replay


def test_swapped_model_answers_like_the_other_model(package, golden, tmp_path, make_package):
    other = golden.flipped([("MVAU_1/weights", i, 3) for i in range(0, 2048, 7)])
    other.model.save(str(tmp_path / "other.onnx"))
    other_pkg = make_package("digits-mlp", tmp_path / "other-pkg",
                             golden_from=tmp_path / "other.onnx")
    x = np.concatenate([package.vectors()["inputs"], random_inputs(8, seed=3)])
    want_raw, _, want_labels = other.run(x)
    for target in (other_pkg, tmp_path / "other.onnx"):
        swapped = VirtualBackend(package, FaultSpec(swap_model=str(target)))
        raw, labels = swapped.infer(x)
        np.testing.assert_array_equal(raw, want_raw)
        np.testing.assert_array_equal(labels, want_labels)
        assert swapped.identity()["package_id"] == package.package_id  # it still claims to be
        assert not swapped.selftest()["passed"]
    assert np.any(want_raw != golden.run(x)[0])


def test_swap_model_errors(package, tmp_path):
    with pytest.raises(InputError, match="no such package directory"):
        VirtualBackend(package, FaultSpec(swap_model=str(tmp_path / "missing.onnx")))
    with pytest.raises(InputError, match="no model/golden.onnx"):
        VirtualBackend(package, FaultSpec(swap_model=str(tmp_path)))
    qonnx = package.dir.parent / "build-digits-mlp" / "model" / "qonnx.onnx"
    with pytest.raises(InputError, match="not a golden model"):
        VirtualBackend(package, FaultSpec(swap_model=str(qonnx)))


def test_replay_returns_stored_answers_positionally(package, golden):
    v = package.vectors()
    n = len(v["inputs"])
    board = VirtualBackend(package, FaultSpec(replay=True))
    x = random_inputs(n + 3, seed=11)
    raw, labels = board.infer(x)
    idx = np.arange(n + 3) % n
    np.testing.assert_array_equal(raw, v["golden_raw"][idx])
    np.testing.assert_array_equal(labels, v["golden_labels"][idx])
    assert board.selftest()["passed"]  # the stored set cannot expose a replaying board
    assert np.any(raw != golden.run(x)[0])  # fresh vectors do


# ---------------------------------------------------------------- bad fault options


@pytest.mark.parametrize("text", ["MVAU_0", "MVAU_0:1", ":1:2", "MVAU_0:x:1", "MVAU_0:1:-1",
                                  "MVAU_0:1.5:2"])
def test_bad_flip_strings(text):
    with pytest.raises(InputError) as e:
        FaultSpec.from_strings(flips=[text])
    assert repr(text) in str(e.value)


@pytest.mark.parametrize("text", ["MVAU_0:1:2", "MVAU_0:1:2:2", "MVAU_0:1:2:x", "MVAU_0:a:2:1"])
def test_bad_stuck_at_strings(text):
    with pytest.raises(InputError) as e:
        FaultSpec.from_strings(stuck_at=[text])
    assert repr(text) in str(e.value)


def test_fault_strings_parse():
    spec = FaultSpec.from_strings(flip_bits=2, seed=3, flips=["MVAU_2/weights:5:3"],
                                  stuck_at=["MVAU_0:7:1:0"])
    assert spec.flips == [("MVAU_2/weights", 5, 3)]
    assert spec.stuck_at == [("MVAU_0", 7, 1, 0)]
    assert "stuck-at-0 MVAU_0:7:1" in spec.describe()
    assert FaultSpec().describe() == "no faults" and not FaultSpec().active


@pytest.mark.parametrize("spec, message", [
    (FaultSpec(flips=[("MVAU_2/weights", 640, 0)]), r"index out of range for MVAU_2/weights"),
    (FaultSpec(flips=[("MVAU_2", 0, 4)]), r"bit out of range for MVAU_2/weights \(INT4"),
    (FaultSpec(stuck_at=[("MVAU_9", 0, 0, 1)]), r"no memory 'MVAU_9'; memories: MVAU_0/weights"),
    (FaultSpec(flip_bits=10**7), r"cannot flip 10000000 distinct bits"),
])
def test_faults_outside_the_memories(package, spec, message):
    with pytest.raises(InputError, match=message):
        VirtualBackend(package, spec)


def test_replay_excludes_other_faults():
    with pytest.raises(InputError, match="replay cannot be combined"):
        FaultSpec(replay=True, flip_bits=1)
    with pytest.raises(InputError, match="flip_bits must be an integer >= 0"):
        FaultSpec(flip_bits=-1)


# ---------------------------------------------------------------- open_backend


def test_open_backend_verifies_and_pins(pkg_dir, package, keypair):
    b = open_backend(pkg_dir, trusted_key=keypair[1], serial="X1")
    assert b.identity()["package_id"] == package.package_id
    assert b.identity()["serial"] == "X1"


def test_tampered_package_is_refused(pkg_dir, tmp_path, keypair):
    bad = tmp_path / "pkg"
    shutil.copytree(pkg_dir, bad)
    p = bad / "model" / "golden.onnx"
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))
    with pytest.raises(InputError, match="model/golden.onnx"):
        open_backend(bad, trusted_key=keypair[1])


def test_foreign_signer_is_refused(pkg_dir, tmp_path):
    from fpgaprint.core.keys import generate_keypair

    _, other_pub = generate_keypair(tmp_path / "other")
    with pytest.raises(InputError, match="manifest.sig: signed by key .* not by the trusted key"):
        open_backend(pkg_dir, trusted_key=other_pub)


def test_unknown_backend_and_faults_on_pynq(pkg_dir, keypair):
    with pytest.raises(InputError,
                       match="unknown backend 'fpga'; valid backends: virtual, pynq, rtlsim"):
        open_backend(pkg_dir, backend="fpga")
    with pytest.raises(InputError, match=r"fault injection needs a backend that supports it "
                                         r"\(virtual, rtlsim\), not 'pynq'"):
        open_backend(pkg_dir, backend="pynq", faults=FaultSpec(replay=True))
    with pytest.raises(InputError, match="no bitfile in hw/"):
        open_backend(pkg_dir, backend="pynq", trusted_key=keypair[1])
    with pytest.raises(InputError, match="which is not pinned"):
        open_backend(pkg_dir, backend="virtual")
