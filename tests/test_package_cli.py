"""`fpgaprint keys generate` and `fpgaprint package verify` through the real entry point."""

from __future__ import annotations

import pytest
from test_package_support import build_package

from fpgaprint.cli import main


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(argv)
    out, err = capsys.readouterr()
    return e.value.code, out, err


def test_keys_generate_then_verify(tmp_path, capsys):
    code, out, _ = run(["keys", "generate", "--out", str(tmp_path / "k")], capsys)
    assert code == 0
    assert f"private key  {tmp_path / 'k/signing.key'}" in out
    code, _, err = run(["keys", "generate", "--out", str(tmp_path / "k")], capsys)
    assert code == 2 and "already exists" in err

    pkg = build_package(tmp_path / "pkg", tmp_path / "k/signing.key", tar=True)
    code, out, _ = run(["package", "verify", str(tmp_path / "pkg"),
                        "--trusted-key", str(tmp_path / "k/signing.pub")], capsys)
    assert code == 0
    assert f"id         {pkg.package_id}" in out
    assert "signed by the trusted key" in out and out.rstrip().endswith("OK")

    code, out, _ = run(["package", "verify", str(tmp_path / "pkg.tar.gz")], capsys)
    assert code == 0 and "signer NOT pinned" in out


def test_keys_generate_default_location(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    code, out, _ = run(["keys", "generate"], capsys)
    assert code == 0
    assert (tmp_path / ".config/fpgaprint/signing.key").is_file()


def test_verify_failures_exit_2_naming_the_file(tmp_path, capsys):
    build_package(tmp_path / "pkg", None, allow_unsigned=True)
    code, out, err = run(["package", "verify", str(tmp_path / "pkg")], capsys)
    assert code == 2 and "missing file manifest.sig" in err and "OK" not in out
    code, out, _ = run(["package", "verify", str(tmp_path / "pkg"), "--allow-unsigned"], capsys)
    assert code == 0 and "UNSIGNED" in out

    (tmp_path / "pkg/selftest/vectors.npz").write_bytes(b"tampered")
    code, _, err = run(["package", "verify", str(tmp_path / "pkg"), "--allow-unsigned"], capsys)
    assert code == 2 and "file changed: selftest/vectors.npz" in err

    code, _, err = run(["package", "verify", str(tmp_path / "missing")], capsys)
    assert code == 2 and "package not found" in err
