"""Package round trip, signature and hash verification, tar archives (real Ed25519)."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import resign
from test_package_support import (
    ALL_FILES,
    CONTENT_FILES,
    EXTRA_FILES,
    POLICY,
    build_package,
    make_meta,
    make_vectors,
)

from fpgaprint.compiler.package import finalize_package, write_selftest
from fpgaprint.core.errors import InputError
from fpgaprint.core.keys import generate_keypair
from fpgaprint.core.manifest import sign_manifest, write_manifest
from fpgaprint.core.package import verify_package


@pytest.fixture(scope="module")
def keypair(tmp_path_factory) -> tuple[Path, Path]:
    return generate_keypair(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def pkg_dir(tmp_path, keypair) -> Path:
    build_package(tmp_path / "pkg", keypair[0])
    return tmp_path / "pkg"


def test_round_trip(pkg_dir, keypair):
    pkg = verify_package(pkg_dir, trusted_key=keypair[1])
    v = pkg.verification
    assert v.signed and v.signer_pinned
    assert pkg.package_id == __import__("hashlib").sha256(
        (pkg_dir / "manifest.json").read_bytes()).hexdigest()
    assert sorted(pkg.manifest["files"]) == CONTENT_FILES
    assert pkg.board == "Pynq-Z1" and pkg.name == "digits-mlp"
    assert pkg.io["input"]["datatype"] == "UINT8"
    assert pkg.dir == pkg_dir and pkg.root != pkg_dir  # read from the verified private copy
    assert pkg.golden_path == pkg.root / "model/golden.onnx"
    assert pkg.golden_path.read_bytes() == (pkg_dir / "model/golden.onnx").read_bytes()
    assert pkg.bitstream_sha256 == __import__("hashlib").sha256(
        (pkg_dir / "hw/top.bit").read_bytes()).hexdigest()
    want = make_vectors()
    got = pkg.vectors()
    for key, arr in zip(("inputs", "golden_raw", "golden_labels", "expected_labels"), want):
        assert got[key].dtype == np.int64
        np.testing.assert_array_equal(got[key], arr)
    assert pkg.policy() == {**POLICY, "count": 6}
    assert pkg.manifest["versions"]["finn-plus"] and pkg.manifest["versions"]["brevitas"]
    assert pkg.manifest["schema"] == "fpgaprint-manifest/1"
    # canonical JSON: re-encoding gives the same bytes
    raw = (pkg_dir / "manifest.json").read_bytes()
    assert json.dumps(json.loads(raw), sort_keys=True, indent=2).encode() + b"\n" == raw


def test_unpinned_signer_is_refused_unless_allowed(pkg_dir):
    """The root of trust is provisioned, never read from the package."""
    with pytest.raises(InputError, match=r"manifest\.sig: signed by key [0-9a-f]{64}, which is "
                                         r"not pinned \(no trusted key is provisioned\)"):
        verify_package(pkg_dir)
    v = verify_package(pkg_dir, allow_unpinned=True).verification
    assert v.signed and not v.signer_pinned and v.trust == "unpinned"
    assert "NOT pinned" in v.signer_note and "--allow-unpinned" in v.warning


def test_package_lists_every_file(pkg_dir):
    assert sorted(p.relative_to(pkg_dir).as_posix()
                  for p in pkg_dir.rglob("*") if p.is_file()) == sorted(ALL_FILES + EXTRA_FILES)


def test_extras_are_outside_the_identity(pkg_dir, keypair):
    """A build report may change (timings, logs); anything else unlisted is refused."""
    before = verify_package(pkg_dir, trusted_key=keypair[1]).package_id
    (pkg_dir / "reports/build.json").write_text('{"steps": [], "seconds": 9.5}\n')
    (pkg_dir / "reports/more.json").write_text("{}\n")
    assert verify_package(pkg_dir, trusted_key=keypair[1]).package_id == before
    assert json.loads((pkg_dir / "manifest.json").read_text())["extras"] == [
        "build.log", "finn/", "model/steps/", "reports/"]
    (pkg_dir / "hw/report.json").write_text("{}\n")
    with pytest.raises(InputError, match=r"unexpected file not listed .*: hw/report\.json"):
        verify_package(pkg_dir, trusted_key=keypair[1])


@pytest.mark.parametrize("where", ["first", "middle", "last"])
@pytest.mark.parametrize("rel", ALL_FILES)
def test_one_changed_byte_is_refused_and_named(pkg_dir, keypair, rel, where):
    p = pkg_dir / rel
    data = bytearray(p.read_bytes())
    i = {"first": 0, "middle": len(data) // 2, "last": len(data) - 1}[where]
    data[i] ^= 0x01
    p.write_bytes(bytes(data))
    for trusted in (None, keypair[1]):
        with pytest.raises(InputError) as e:
            verify_package(pkg_dir, trusted_key=trusted, allow_unpinned=trusted is None)
        assert rel in str(e.value)


def test_missing_file_refused(pkg_dir, keypair):
    (pkg_dir / "hw/top.bit").unlink()
    with pytest.raises(InputError, match=r"missing file hw/top\.bit"):
        verify_package(pkg_dir, trusted_key=keypair[1])


def test_extra_file_refused(pkg_dir, keypair):
    (pkg_dir / "hw/extra.bin").write_bytes(b"x")
    with pytest.raises(InputError, match=r"unexpected file not listed .*: hw/extra\.bin"):
        verify_package(pkg_dir, trusted_key=keypair[1])


def test_symlink_refused(pkg_dir, keypair, tmp_path):
    (tmp_path / "outside").write_text("secret")
    (pkg_dir / "model/link.onnx").symlink_to(tmp_path / "outside")
    with pytest.raises(InputError, match=r"model/link\.onnx is a symbolic link"):
        verify_package(pkg_dir, trusted_key=keypair[1])


def test_missing_manifest_and_signature(pkg_dir, keypair):
    (pkg_dir / "manifest.sig").unlink()
    with pytest.raises(InputError, match=r"missing file manifest\.sig"):
        verify_package(pkg_dir, trusted_key=keypair[1])
    (pkg_dir / "manifest.json").unlink()
    with pytest.raises(InputError, match=r"missing file manifest\.json"):
        verify_package(pkg_dir, trusted_key=keypair[1])


def test_unsigned_refused_unless_allowed(tmp_path, keypair):
    build_package(tmp_path / "pkg", None, allow_unsigned=True)
    assert not (tmp_path / "pkg/manifest.sig").exists()
    with pytest.raises(InputError, match=r"missing file manifest\.sig: package is unsigned"):
        verify_package(tmp_path / "pkg")
    pkg = verify_package(tmp_path / "pkg", allow_unsigned=True)
    assert not pkg.verification.signed and "UNSIGNED" in pkg.verification.signer_note
    with pytest.raises(InputError, match="unsigned and a trusted key was given"):
        verify_package(tmp_path / "pkg", trusted_key=keypair[1], allow_unsigned=True)


def test_bad_signature_refused_even_when_unsigned_allowed(pkg_dir):
    sig = json.loads((pkg_dir / "manifest.sig").read_text())
    sig["signature"] = "00" * 64
    (pkg_dir / "manifest.sig").write_text(json.dumps(sig))
    with pytest.raises(InputError, match="signature does not verify"):
        verify_package(pkg_dir, allow_unsigned=True)


def test_wrong_trusted_key_refused(pkg_dir, tmp_path):
    _, other_pub = generate_keypair(tmp_path / "other")
    with pytest.raises(InputError, match=r"manifest\.sig: signed by key .* not by the trusted"):
        verify_package(pkg_dir, trusted_key=other_pub)


def test_resigned_by_attacker_only_caught_when_pinned(pkg_dir, keypair, tmp_path):
    """Rewriting a file, the manifest and the signature with another key passes the hash and
    signature checks; only pinning the signer catches it."""
    evil_priv, _ = generate_keypair(tmp_path / "evil")
    (pkg_dir / "model/golden.onnx").write_bytes(b"tampered model")
    resign(pkg_dir, evil_priv)
    assert not verify_package(pkg_dir, allow_unpinned=True).verification.signer_pinned
    with pytest.raises(InputError, match="not by the trusted key"):
        verify_package(pkg_dir, trusted_key=keypair[1])


# ---------------------------------------------------------------- the manifest's self-test summary


@pytest.mark.parametrize("field, value, says", [
    ("checks", ["exact", "fingerprint", "onchip"],
     r"selftest/policy\.json says \['exact', 'fingerprint'\]"),
    ("checks", ["fingerprint", "exact"], r"selftest/policy\.json says \['exact', 'fingerprint'\]"),
    ("count", 100, r"selftest/vectors\.npz holds 6 vectors"),
    ("count", None, r"selftest/vectors\.npz holds 6 vectors"),
    ("fingerprint_threshold", 0.95, r"selftest/policy\.json says 0\.8"),
])
def test_a_summary_that_disagrees_with_the_selftest_files_is_refused(pkg_dir, keypair, field,
                                                                     value, says):
    """What `package verify` prints as the self-test (manifest selftest) is what the policy and
    vectors say; a field the summary repeats from the policy must agree too."""
    resign(pkg_dir, keypair[0], edit=lambda m: m["selftest"].__setitem__(field, value))
    with pytest.raises(InputError) as e:
        verify_package(pkg_dir, trusted_key=keypair[1])
    assert re.fullmatch(rf"{re.escape(str(pkg_dir))}: manifest\.json: selftest\.{field} is "
                        rf"{re.escape(repr(value))} but {says}", str(e.value)), str(e.value)


@pytest.mark.parametrize("name", ["x" * 257, "", "a\x1b[2Jb", 7])
def test_a_package_name_is_bounded_printable_text(pkg_dir, keypair, name):
    """Shown on terminals and kept by results databases: 1 to 256 printable characters."""
    resign(pkg_dir, keypair[0], edit=lambda m: m.__setitem__("name", name))
    with pytest.raises(InputError, match=r"manifest\.json: 'name' must be printable text of 1 "
                                         r"to 256 characters"):
        verify_package(pkg_dir, trusted_key=keypair[1])


def test_a_summary_is_an_object_and_may_repeat_policy_fields(pkg_dir, keypair):
    resign(pkg_dir, keypair[0], edit=lambda m: m["selftest"].update(
        fingerprint_threshold=0.8, algorithm="robust"))
    verify_package(pkg_dir, trusted_key=keypair[1])
    resign(pkg_dir, keypair[0], edit=lambda m: m.__setitem__("selftest", ["exact"]))
    with pytest.raises(InputError, match=r"pkg: manifest\.json: 'selftest' must be an object"):
        verify_package(pkg_dir, trusted_key=keypair[1])


def test_a_weak_policy_under_a_strong_summary_is_one_line_exit_2(pkg_dir, keypair, run_cli):
    """Signed, but its summary says exact, fingerprint, onchip while its policy is the
    fingerprint check at threshold 0: it printed OK with the misleading summary."""
    (pkg_dir / "selftest/policy.json").write_text(
        '{"checks": ["fingerprint"], "fingerprint_threshold": 0.0}')
    resign(pkg_dir, keypair[0], edit=lambda m: m["selftest"].update(
        checks=["exact", "fingerprint", "onchip"]))
    code, out, err = run_cli("package", "verify", pkg_dir, "--trusted-key", keypair[1])
    assert code == 2 and out == "", out
    assert err == (f"error: {pkg_dir}: manifest.json: selftest.checks is ['exact', "
                   "'fingerprint', 'onchip'] but selftest/policy.json says ['fingerprint']\n")


def test_unsafe_path_in_manifest_refused(tmp_path):
    build_package(tmp_path / "pkg", None, allow_unsigned=True)
    m = json.loads((tmp_path / "pkg/manifest.json").read_text())
    m["files"]["../outside"] = "0" * 64
    write_manifest(tmp_path / "pkg", m)
    with pytest.raises(InputError, match=r"unsafe file path '\.\./outside'"):
        verify_package(tmp_path / "pkg", allow_unsigned=True)


def test_tar_round_trip(tmp_path, keypair):
    built = build_package(tmp_path / "pkg", keypair[0], tar=True)
    archive = tmp_path / "pkg.tar.gz"
    with tarfile.open(archive) as tar:
        names = sorted(m.name for m in tar.getmembers() if m.isfile())
    assert names == sorted(f"pkg/{f}" for f in ALL_FILES)
    with verify_package(archive, trusted_key=keypair[1]) as pkg:
        extracted = pkg.root
        assert pkg.dir == archive  # what messages name
        assert pkg.package_id == built.package_id
        np.testing.assert_array_equal(pkg.vectors()["golden_raw"], make_vectors()[1])
        assert pkg.golden_path.read_bytes() == (tmp_path / "pkg/model/golden.onnx").read_bytes()
    assert not extracted.exists()


def _tar_with(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for ti, data in members:
            tar.addfile(ti, io.BytesIO(data) if data is not None else None)


@pytest.mark.parametrize("bad", ["abs", "dotdot", "symlink", "hardlink"])
def test_malicious_tar_member_rejected(tmp_path, bad):
    archive = tmp_path / "evil.tar.gz"
    ok = tarfile.TarInfo("pkg/manifest.json")
    ok.size = 2
    if bad in ("abs", "dotdot"):
        name = "/tmp/fpgaprint-evil" if bad == "abs" else "pkg/../../escaped"
        evil = tarfile.TarInfo(name)
        evil.size = 4
        members = [(ok, b"{}"), (evil, b"evil")]
    else:
        evil = tarfile.TarInfo("pkg/model/golden.onnx")
        evil.type = tarfile.SYMTYPE if bad == "symlink" else tarfile.LNKTYPE
        evil.linkname = "/etc/passwd"
        members = [(ok, b"{}"), (evil, None)]
    _tar_with(archive, members)
    with pytest.raises(InputError) as e:
        verify_package(archive, allow_unpinned=True)
    assert repr(evil.name) in str(e.value)
    assert not (tmp_path.parent / "escaped").exists()
    assert not Path("/tmp/fpgaprint-evil").exists()


@pytest.mark.parametrize("bad, message", [
    ("same-size", r"bad\.tar\.gz: file changed: selftest/policy\.json"),
    ("longer", r"selftest/policy\.json is (\d+) B in the archive, the manifest says \d+ B "
               r"\(refused before extraction\)"),
])
def test_tampered_tar_refused(tmp_path, keypair, bad, message):
    build_package(tmp_path / "pkg", keypair[0], tar=True)
    src = tmp_path / "pkg.tar.gz"
    out = tmp_path / "bad.tar.gz"
    with tarfile.open(src) as tin, tarfile.open(out, "w:gz") as tout:
        for m in tin.getmembers():
            data = tin.extractfile(m).read() if m.isfile() else None
            if m.name == "pkg/selftest/policy.json":
                data = data + b" " if bad == "longer" else data.replace(b"0.", b"1.", 1)
                m.size = len(data)
            tout.addfile(m, io.BytesIO(data) if data is not None else None)
    with pytest.raises(InputError, match=message):
        verify_package(out, trusted_key=keypair[1])


def test_not_a_package(tmp_path):
    with pytest.raises(InputError, match="package not found"):
        verify_package(tmp_path / "nope")
    (tmp_path / "junk.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(InputError, match="not a readable package archive"):
        verify_package(tmp_path / "junk.tar.gz")


def test_default_key_location(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with pytest.raises(InputError, match=r"\.config/fpgaprint/signing\.key: no signing key"):
        build_package(tmp_path / "pkg", None)
    assert not (tmp_path / "pkg/manifest.json").exists()
    priv, pub = generate_keypair()
    assert priv == tmp_path / "home/.config/fpgaprint/signing.key"
    build_package(tmp_path / "pkg", None)
    assert verify_package(tmp_path / "pkg", trusted_key=pub).verification.signer_pinned


def test_refinalize_replaces_stale_signature(tmp_path, keypair):
    build_package(tmp_path / "pkg", keypair[0])
    build_package(tmp_path / "pkg", None, allow_unsigned=True)
    assert not (tmp_path / "pkg/manifest.sig").exists()
    verify_package(tmp_path / "pkg", allow_unsigned=True)


# ---------------------------------------------------------------- bad input when building


def test_write_selftest_validates(tmp_path):
    inputs, raw, gl, el = make_vectors()
    with pytest.raises(InputError, match="selftest inputs: dtype float64 is not an integer"):
        write_selftest(tmp_path, inputs.astype(float), raw, gl, el, dict(POLICY))
    with pytest.raises(InputError, match=r"golden_raw: expected shape \(6, raw\)"):
        write_selftest(tmp_path, inputs, raw[:5], gl, el, dict(POLICY))
    with pytest.raises(InputError, match=r"expected_labels: expected shape \(6,\)"):
        write_selftest(tmp_path, inputs, raw, gl, el[:, None], dict(POLICY))
    with pytest.raises(InputError, match="fingerprint_threshold"):
        write_selftest(tmp_path, inputs, raw, gl, el, {"checks": ["fingerprint"]})
    with pytest.raises(InputError, match="'checks' must be"):
        write_selftest(tmp_path, inputs, raw, gl, el, {"checks": ["psychic"]})
    with pytest.raises(InputError, match="'count' is 7 but there are 6"):
        write_selftest(tmp_path, inputs, raw, gl, el, {**POLICY, "count": 7})
    assert not (tmp_path / "selftest").exists()


def test_finalize_checks_vectors_against_io(tmp_path):
    with pytest.raises(InputError, match="golden_raw has 10 values per vector, io.raw_output"):
        build_package(tmp_path / "a", None, allow_unsigned=True, meta=make_meta(raw=12))
    assert not (tmp_path / "a/manifest.json").exists()
    with pytest.raises(InputError, match=r"selftest inputs: value 255 outside input datatype "
                                         r"UINT4 \[0, 15\]"):
        build_package(tmp_path / "b", None, allow_unsigned=True, meta=make_meta(input_dt="UINT4"))
    with pytest.raises(InputError, match="not an integer type"):
        build_package(tmp_path / "c", None, allow_unsigned=True,
                      meta=make_meta(raw_dt="FLOAT32"))
    meta = make_meta()
    del meta["io"]["input"]["datatype"]
    with pytest.raises(InputError, match=r"io\.input\.datatype: missing"):
        build_package(tmp_path / "d", None, allow_unsigned=True, meta=meta)


def test_finalize_requires_golden_model(tmp_path):
    out = tmp_path / "pkg"
    write_selftest(out, *make_vectors(), dict(POLICY))
    with pytest.raises(InputError, match=r"missing file model/golden\.onnx"):
        finalize_package(out, make_meta(), allow_unsigned=True)


class _Zeros(io.RawIOBase):
    """`n` zero bytes as a stream (a bomb member without holding it in memory)."""

    def __init__(self, n: int):
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        k = min(len(b), self.left)
        b[:k] = bytes(k)
        self.left -= k
        return k


def _bomb(src: Path, out: Path, member: str, size: int, first: bool) -> None:
    """`src` re-packed with `member` replaced (or added) as `size` zero bytes."""
    with tarfile.open(src) as tin, tarfile.open(out, "w:gz", compresslevel=1) as tout:
        bomb = tarfile.TarInfo(member)
        bomb.size = size
        if first:
            tout.addfile(bomb, _Zeros(size))
        for m in tin.getmembers():
            if m.name != member:
                tout.addfile(m, tin.extractfile(m) if m.isfile() else None)
        if not first:
            tout.addfile(bomb, _Zeros(size))


@pytest.mark.parametrize("member, first", [
    ("pkg/model/golden.onnx", True), ("pkg/model/golden.onnx", False),
    ("pkg/hw/extra.bin", False),
])
def test_tar_bomb_is_refused_before_it_is_written(tmp_path, keypair, member, first):
    """A 64 MiB member compressed to ~64 kB: refused at its header, in a process that may not
    write any file beyond 8 MiB."""
    build_package(tmp_path / "pkg", keypair[0], tar=True)
    archive = tmp_path / "bomb.tar.gz"
    _bomb(tmp_path / "pkg.tar.gz", archive, member, 64 << 20, first)
    assert archive.stat().st_size < 1 << 20
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (8 << 20, 8 << 20))\n"
        "from fpgaprint.core.errors import InputError\n"
        "from fpgaprint.core.package import verify_package\n"
        "try:\n"
        f"    verify_package({str(archive)!r}, trusted_key={str(keypair[1])!r})\n"
        "except InputError as e:\n"
        "    print(e)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    inner = member.removeprefix("pkg/")
    if inner == "model/golden.onnx":
        assert f"{inner} is {64 << 20} B in the archive, the manifest says" in r.stdout
    else:
        assert f"unexpected file not listed in manifest.json: {member}" in r.stdout
    assert "refused before extraction" in r.stdout


def test_archive_over_the_overall_cap_is_refused(tmp_path, keypair):
    build_package(tmp_path / "pkg", keypair[0], tar=True)
    with pytest.raises(InputError, match=r"members declare more than 4096 B \(refused before "
                                         r"extraction\)"):
        verify_package(tmp_path / "pkg.tar.gz", trusted_key=keypair[1], max_bytes=4096)


def test_archive_is_extracted_only_after_its_signature_verifies(tmp_path, keypair):
    """A re-signed archive is refused from its manifest, before any file is extracted."""
    build_package(tmp_path / "pkg", keypair[0], tar=True)
    evil, _ = generate_keypair(tmp_path / "evil")
    sign_manifest(tmp_path / "pkg", evil)
    from fpgaprint.compiler.package import write_tar

    write_tar(tmp_path / "pkg")
    written = []
    real_open = open

    def spy(file, mode="r", *a, **kw):
        if "x" in mode or "w" in mode:
            written.append(str(file))
        return real_open(file, mode, *a, **kw)

    import builtins

    builtins.open = spy
    try:
        with pytest.raises(InputError, match="not by the trusted key"):
            verify_package(tmp_path / "pkg.tar.gz", trusted_key=keypair[1])
    finally:
        builtins.open = real_open
    assert written == []
