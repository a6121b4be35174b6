"""A verified package is read from a private copy of the bytes that were verified: a package
folder changed on disk while or after it is verified (a shared folder, a USB stick) changes
nothing that decides a verdict."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat

import numpy as np
import pytest
from conftest import in_process_board
from test_package_support import POLICY, build_package, make_vectors

import fpgaprint.core.package as pkgmod
from fpgaprint.core.errors import InputError
from fpgaprint.core.package import describe, verify_package

WEAK = '{"checks": ["boundary"], "boundary_count": 1}'  # what the attacker swaps in


def _tamper(pkg_dir) -> None:
    """Every file a verdict reads, and the manifest, rewritten on disk."""
    (pkg_dir / "selftest/policy.json").write_text(WEAK)
    zeros = {k: np.zeros_like(a) for k, a in zip(
        ("inputs", "golden_raw", "golden_labels", "expected_labels"), make_vectors())}
    np.savez(pkg_dir / "selftest/vectors.npz", **zeros)
    for rel in ("model/golden.onnx", "hw/top.bit", "firmware/selftest_vectors.h"):
        (pkg_dir / rel).write_bytes(b"swapped")
    (pkg_dir / "manifest.json").write_text('{"schema": "fpgaprint-manifest/1", "files": {}}')


def test_a_folder_changed_after_verification_changes_nothing(tmp_path, keypair):
    pkg_dir = tmp_path / "pkg"
    build_package(pkg_dir, keypair[0])
    before = {p.relative_to(pkg_dir).as_posix(): p.read_bytes()
              for p in pkg_dir.rglob("*") if p.is_file()}
    pkg = verify_package(pkg_dir, trusted_key=keypair[1])
    _tamper(pkg_dir)
    assert pkg.policy() == {**POLICY, "count": 6}
    for key, want in zip(("inputs", "golden_raw", "golden_labels", "expected_labels"),
                         make_vectors()):
        np.testing.assert_array_equal(pkg.vectors()[key], want)
    for rel in ("model/golden.onnx", "hw/top.bit", "firmware/selftest_vectors.h"):
        assert pkg.path(rel).read_bytes() == before[rel]
    assert pkg.golden_path.read_bytes() == before["model/golden.onnx"]
    manifest = (pkg.root / "manifest.json").read_bytes()
    assert manifest == before["manifest.json"]
    assert hashlib.sha256(manifest).hexdigest() == pkg.package_id
    assert pkg.dir == pkg_dir and describe(pkg)[0] == f"package    {pkg_dir}"
    private = pkg.root.parent
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert sorted(p.relative_to(pkg.root).as_posix() for p in pkg.root.rglob("*")
                  if p.is_file()) == sorted(set(before) - {"reports/build.json"})
    pkg.close()
    assert not private.exists() and pkg_dir.is_dir()


def test_a_file_swapped_between_its_hash_and_its_use_is_not_used(tmp_path, keypair,
                                                                monkeypatch):
    """The policy swapped right after the files were hashed: the package holds the one that
    was hashed (before, the self-test checks and every later reader took the swapped one)."""
    pkg_dir = tmp_path / "pkg"
    build_package(pkg_dir, keypair[0])
    verify_manifest = pkgmod.verify_manifest

    def then_swap(root, **kw):
        v = verify_manifest(root, **kw)
        (root / "selftest/policy.json").write_text(WEAK)
        return v

    monkeypatch.setattr(pkgmod, "verify_manifest", then_swap)
    with verify_package(pkg_dir, trusted_key=keypair[1]) as pkg:
        assert pkg.policy() == {**POLICY, "count": 6}
    assert (pkg_dir / "selftest/policy.json").read_text() == WEAK


class RawOffByOne:
    """A board whose every raw output is wrong (lowest bit flipped) and whose labels are
    right: FAIL under the signed policy's exact check."""

    def __init__(self, backend):
        self.backend = backend

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def infer(self, x):
        raw, labels = self.backend.infer(x)
        return np.asarray(raw) ^ 1, labels


def test_a_policy_swapped_on_disk_cannot_turn_a_fail_into_a_pass(
        run_cli, digits_package, keypair, tmp_path, monkeypatch):
    """The attack: the package folder's policy.json swapped for a weak one once the package
    has verified. The verdict is the signed policy's: FAIL (it was PASS)."""
    pkg_dir = shutil.copytree(digits_package, tmp_path / "pkg")
    real = pkgmod.verify_package

    def then_swap(*a, **kw):
        pkg = real(*a, **kw)
        (pkg_dir / "selftest/policy.json").write_text(WEAK)
        return pkg

    with in_process_board(digits_package, keypair[1], wrap=RawOffByOne, pty=True) as link:
        monkeypatch.setattr(pkgmod, "verify_package", then_swap)
        code, out, err = run_cli("verify", "--port", link.url, "--package", pkg_dir,
                                 "--trusted-key", keypair[1], "--json", tmp_path / "r.json")
    assert (pkg_dir / "selftest/policy.json").read_text() == WEAK  # the swap happened
    assert code == 1 and "verdict: FAIL" in out, out + err
    checks = json.loads((tmp_path / "r.json").read_text())["verdict"]["checks"]
    assert [(c["name"], c["status"]) for c in checks][1:] == [("exact", "FAIL"),
                                                              ("fingerprint", "PASS")]


def test_messages_name_the_package_the_user_gave_not_the_private_copy(tmp_path, keypair):
    pkg_dir = tmp_path / "pkg"
    build_package(pkg_dir, keypair[0], tar=True)  # its golden.onnx is not a model
    for given in (pkg_dir, tmp_path / "pkg.tar.gz"):
        with verify_package(given, trusted_key=keypair[1]) as pkg:
            with pytest.raises(InputError) as e:
                pkg.golden()
            assert str(e.value).startswith(f"{given}/model/golden.onnx: not an ONNX model")
        with pytest.raises(InputError) as e, verify_package(given, trusted_key=keypair[1]) as pkg:
            raise InputError(f"{pkg.path('hw/top.bit')}: a later reader's complaint")
        assert str(e.value) == f"{given}/hw/top.bit: a later reader's complaint"
    (pkg_dir / "selftest/policy.json").write_text(WEAK)
    with pytest.raises(InputError) as e:
        verify_package(pkg_dir, trusted_key=keypair[1])
    assert str(e.value).startswith(f"{pkg_dir}: file changed: selftest/policy.json (")


@pytest.mark.parametrize("kind", ["link", "fifo", "folder"])
def test_a_listed_file_that_is_no_longer_a_regular_file_is_missing(tmp_path, keypair, kind):
    """Opened without following a link and only when regular (a fifo never blocks it)."""
    pkg_dir = tmp_path / "pkg"
    build_package(pkg_dir, keypair[0])
    bit = pkg_dir / "hw/top.bit"
    shutil.move(bit, tmp_path / "top.bit")
    if kind == "link":
        bit.symlink_to(tmp_path / "top.bit")  # the same bytes, through a link
    elif kind == "fifo":
        os.mkfifo(bit)
    else:
        bit.mkdir()
    with pytest.raises(InputError, match=r"pkg: missing file hw/top\.bit \(listed in "):
        verify_package(pkg_dir, trusted_key=keypair[1])


def test_copies_of_ended_processes_are_removed_and_no_others(tmp_path, keypair, monkeypatch):
    """A verify killed outright cannot delete its copy (a package may be GiBs): the next one
    removes the copies of this user's ended processes, never one of a running process."""
    import subprocess
    import sys
    import tempfile

    pkg_dir = tmp_path / "pkg"
    build_package(pkg_dir, keypair[0])
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True).stdout.strip()
    stale = tmp / f"fpgaprint-pkg-{ended}-a1b2"
    (stale / "package").mkdir(parents=True)
    (stale / "package" / "big.bin").write_bytes(b"x" * 1000)
    running = [tmp / f"fpgaprint-pkg-{os.getpid()}-c3d4", tmp / "fpgaprint-pkg-1-e5f6"]
    other = [tmp / "fpgaprint-pkg-x-g7", tmp / "unrelated-1-h8"]
    for d in running + other:
        d.mkdir()
    with verify_package(pkg_dir, trusted_key=keypair[1]) as pkg:
        assert pkg.root.parent.name.startswith(f"fpgaprint-pkg-{os.getpid()}-")
        assert not stale.exists() and all(d.is_dir() for d in running + other)
