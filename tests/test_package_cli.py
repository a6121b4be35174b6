"""`fpgaprint keys generate` and `fpgaprint package verify` through the real entry point."""

from __future__ import annotations

import pytest
from test_package_support import build_package


def test_keys_generate_then_verify(tmp_path, run_cli):
    code, out, _ = run_cli("keys", "generate", "--out", str(tmp_path / "k"))
    assert code == 0
    assert f"private key  {tmp_path / 'k/signing.key'}" in out
    code, _, err = run_cli("keys", "generate", "--out", str(tmp_path / "k"))
    assert code == 2 and "already exists" in err

    pkg = build_package(tmp_path / "pkg", tmp_path / "k/signing.key", tar=True)
    code, out, _ = run_cli("package", "verify", str(tmp_path / "pkg"),
                           "--trusted-key", str(tmp_path / "k/signing.pub"))
    assert code == 0
    assert f"id         {pkg.package_id}" in out
    assert "signed by the trusted key" in out and out.rstrip().endswith("OK")

    code, out, err = run_cli("package", "verify", str(tmp_path / "pkg.tar.gz"))
    assert code == 2 and "which is not pinned (no trusted key is provisioned)" in err
    assert "OK" not in out
    code, out, err = run_cli("package", "verify", str(tmp_path / "pkg.tar.gz"),
                             "--allow-unpinned")
    assert code == 0 and "signer NOT pinned" in out
    assert err.startswith("warning: package signer ") and "is NOT pinned" in err


def test_keys_trust_pins_the_signer_for_every_command(tmp_path, run_cli, monkeypatch):
    """`keys trust` provisions the root of trust once; the package never supplies it."""
    store = tmp_path / "store"
    monkeypatch.setenv("FPGAPRINT_TRUST_STORE", str(store))
    run_cli("keys", "generate", "--out", str(tmp_path / "k"))
    run_cli("keys", "generate", "--out", str(tmp_path / "other"))
    build_package(tmp_path / "pkg", tmp_path / "k/signing.key")
    code, out, _ = run_cli("keys", "trust", str(tmp_path / "k/signing.pub"))
    hex_key = out.split()[1]
    assert code == 0 and (store / f"{hex_key[:16]}.pub").is_file()
    code, out, err = run_cli("package", "verify", str(tmp_path / "pkg"))
    assert code == 0 and f"signed by the trusted key {hex_key} (trust store" in out
    assert err == ""
    code, out, _ = run_cli("keys", "list")
    assert hex_key in out
    # an explicit --trusted-key replaces the store for that command
    code, _, err = run_cli("package", "verify", str(tmp_path / "pkg"), "--trusted-key",
                           str(tmp_path / "other/signing.pub"))
    assert code == 2 and "not by the trusted key" in err
    code, out, _ = run_cli("keys", "untrust", hex_key[:12])
    assert code == 0 and not list(store.iterdir())
    code, _, err = run_cli("package", "verify", str(tmp_path / "pkg"))
    assert code == 2 and "not pinned" in err


def test_trusted_keys_from_the_environment(tmp_path, run_cli, monkeypatch):
    run_cli("keys", "generate", "--out", str(tmp_path / "k"))
    build_package(tmp_path / "pkg", tmp_path / "k/signing.key")
    from fpgaprint.core.keys import load_public_key, public_key_hex

    hex_key = public_key_hex(load_public_key(tmp_path / "k/signing.pub"))
    for value in (hex_key, str(tmp_path / "k/signing.pub")):
        monkeypatch.setenv("FPGAPRINT_TRUSTED_KEYS", value)
        code, out, _ = run_cli("package", "verify", str(tmp_path / "pkg"))
        assert code == 0 and "(FPGAPRINT_TRUSTED_KEYS)" in out
    monkeypatch.setenv("FPGAPRINT_TRUSTED_KEYS", "zz" * 32)
    code, _, err = run_cli("package", "verify", str(tmp_path / "pkg"))
    assert code == 2 and "zzzz" in err and err.count("\n") == 1


def test_trusted_keys_from_the_config_file(tmp_path, run_cli, monkeypatch):
    run_cli("keys", "generate", "--out", str(tmp_path / "k"))
    build_package(tmp_path / "pkg", tmp_path / "k/signing.key")
    config = tmp_path / "trust.toml"
    monkeypatch.setenv("FPGAPRINT_TRUST_CONFIG", str(config))
    config.write_text('trusted_keys = ["k/signing.pub"]\n')  # relative to the config file
    code, out, _ = run_cli("package", "verify", str(tmp_path / "pkg"))
    assert code == 0 and f"(trust config {config})" in out
    for text, message in (('trusted_keys = "k"\n', "expected only trusted_keys"),
                          ('keys = []\n', "not 'keys'"), ("[[[", "not a readable trust config"),
                          ('trusted_keys = ["nope.pub"]\n', "nope.pub: public key not found")):
        config.write_text(text)
        code, _, err = run_cli("package", "verify", str(tmp_path / "pkg"))
        assert code == 2 and str(config) in err and message in err, err


@pytest.mark.parametrize("argv, message", [
    (["keys", "trust", "{tmp}/nope.pub"], "nope.pub: public key not found"),
    (["keys", "trust", "{tmp}"], "cannot read public key"),
    (["keys", "untrust", "abc"], "give at least 8 hex digits"),
    (["keys", "generate", "--out", "{tmp}/file/k"], "is a file, not a folder"),
    (["package", "verify", "{tmp}/pkg", "--trusted-key", "{tmp}"], "--trusted-key"),
    (["package", "verify", "{tmp}/pkg", "--trusted-key", "{tmp}/none.pub"],
     "--trusted-key {tmp}/none.pub: public key not found"),
])
def test_keys_and_package_inputs_are_checked(tmp_path, run_cli, argv, message):
    (tmp_path / "file").write_text("x")
    build_package(tmp_path / "pkg", None, allow_unsigned=True)
    code, out, err = run_cli(*(a.format(tmp=tmp_path) for a in argv))
    assert code == 2 and message.format(tmp=tmp_path) in err
    assert err.count("\n") == 1, err


def test_signature_that_is_a_folder_is_named(tmp_path, run_cli):
    build_package(tmp_path / "pkg", None, allow_unsigned=True)
    (tmp_path / "pkg/manifest.sig").mkdir()
    code, _, err = run_cli("package", "verify", str(tmp_path / "pkg"))
    assert code == 2 and "manifest.sig is a folder, not a signature" in err


def test_keys_generate_default_location(tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    code, out, _ = run_cli("keys", "generate")
    assert code == 0
    assert (tmp_path / ".config/fpgaprint/signing.key").is_file()


def test_verify_failures_exit_2_naming_the_file(tmp_path, run_cli):
    build_package(tmp_path / "pkg", None, allow_unsigned=True)
    code, out, err = run_cli("package", "verify", str(tmp_path / "pkg"))
    assert code == 2 and "missing file manifest.sig" in err and "OK" not in out
    code, out, _ = run_cli("package", "verify", str(tmp_path / "pkg"), "--allow-unsigned")
    assert code == 0 and "UNSIGNED" in out

    (tmp_path / "pkg/selftest/vectors.npz").write_bytes(b"tampered")
    code, _, err = run_cli("package", "verify", str(tmp_path / "pkg"), "--allow-unsigned")
    assert code == 2 and "file changed: selftest/vectors.npz" in err

    code, _, err = run_cli("package", "verify", str(tmp_path / "missing"))
    assert code == 2 and "package not found" in err
