"""The trust store and trust.toml as a careful user handles them: untrust names where a key
still comes from, links and broken entries are skipped by name, private keys are refused."""

from __future__ import annotations

import os

import pytest

from fpgaprint.core.keys import generate_keypair, load_public_key, public_key_hex


@pytest.fixture
def signed(tmp_path, monkeypatch):
    """(package dir, signer's public key, its hex, an empty trust store, a trust.toml path),
    with the store and config of this test in the environment."""
    from test_package_support import build_package

    priv, pub = generate_keypair(tmp_path / "k")
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    build_package(pkg, priv)
    store, conf = tmp_path / "store", tmp_path / "conf" / "trust.toml"
    store.mkdir()
    conf.parent.mkdir()
    monkeypatch.setenv("FPGAPRINT_TRUST_STORE", str(store))
    monkeypatch.setenv("FPGAPRINT_TRUST_CONFIG", str(conf))
    return pkg, pub, public_key_hex(load_public_key(pub)), store, conf


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line]


def test_untrust_of_a_key_from_trust_toml_names_the_entry_and_keeps_it(signed, run_cli):
    _, pub, hex_key, store, conf = signed
    (conf.parent / "release.pub").write_bytes(pub.read_bytes())
    conf.write_text('trusted_keys = ["release.pub"]\n')
    code, out, _ = run_cli("keys", "list")
    assert code == 0 and f"{hex_key}  trust config {conf}" in out
    code, out, err = run_cli("keys", "untrust", hex_key[:12])
    assert code == 2 and out == ""
    assert _lines(err) == [f"error: {hex_key[:16]}… is still trusted: {conf} lists it as "
                           "'release.pub'; remove that entry from trusted_keys"]
    assert conf.read_text() == 'trusted_keys = ["release.pub"]\n'
    # also in the store: the store's copy goes, the config's entry is still named
    run_cli("keys", "trust", pub)
    code, out, err = run_cli("keys", "untrust", hex_key[:12])
    assert code == 2 and _lines(out) == [f"removed      {store / (hex_key[:16] + '.pub')}"]
    assert "lists it as 'release.pub'" in err and not list(store.iterdir())
    conf.write_text("trusted_keys = []\n")
    code, _, err = run_cli("keys", "untrust", hex_key[:12])
    assert code == 2 and f"no trusted key starts with {hex_key[:12]}" in err


def test_untrust_of_a_key_from_the_environment_names_the_variable(signed, run_cli,
                                                                  monkeypatch):
    _, _, hex_key, _, _ = signed
    monkeypatch.setenv("FPGAPRINT_TRUSTED_KEYS", hex_key.upper())
    code, _, err = run_cli("keys", "untrust", hex_key[:8])
    assert code == 2 and _lines(err) == [
        f"error: {hex_key[:16]}… is still trusted: $FPGAPRINT_TRUSTED_KEYS lists it as "
        f"'{hex_key.upper()}'; remove it from that variable"]


def test_a_symlink_in_the_store_is_never_followed(signed, run_cli, tmp_path):
    """A link to a key file pins nothing, whatever its target holds now."""
    pkg, pub, hex_key, store, _ = signed
    os.symlink(pub, store / "release.pub")
    code, out, err = run_cli("package", "verify", pkg)
    assert code == 2 and "OK" not in out
    assert (f"warning: trust store entry skipped: {store / 'release.pub'}: is a symbolic link "
            "(store a copy: fpgaprint keys trust FILE)") in _lines(err)
    assert f"signed by key {hex_key}, which is not pinned" in err
    # `keys trust` of the same file stores a copy, which pins
    (store / "release.pub").unlink()
    assert run_cli("keys", "trust", pub)[0] == 0
    assert not any(p.is_symlink() for p in store.iterdir())
    assert run_cli("package", "verify", pkg)[0] == 0


def test_a_broken_entry_is_named_and_skipped_and_the_other_keys_still_count(signed, run_cli,
                                                                            tmp_path):
    pkg, pub, hex_key, store, _ = signed
    assert run_cli("keys", "trust", pub)[0] == 0
    os.symlink(tmp_path / "gone.pub", store / "dangling.pub")
    (store / "junk.pub").write_text("not a key\n")
    (store / "release.pem").write_bytes(pub.read_bytes())
    code, out, err = run_cli("package", "verify", pkg)
    assert code == 0 and out.rstrip().endswith("OK")
    warnings = [line for line in _lines(err) if line.startswith("warning: trust store")]
    assert warnings == [
        f"warning: trust store entry {store / 'release.pem'} ignored: not a .pub file "
        "(fpgaprint keys trust FILE adds a key)",
        f"warning: trust store entry skipped: {store / 'dangling.pub'}: is a symbolic link "
        "(store a copy: fpgaprint keys trust FILE)",
        f"warning: trust store entry skipped: {store / 'junk.pub'}: not a PEM public key "
        + warnings[2].split("not a PEM public key ", 1)[1]]
    code, out, _ = run_cli("keys", "list")
    assert code == 0 and [line.split()[0] for line in _lines(out)[1:]] == [hex_key]


def test_a_private_key_in_the_store_pins_nothing(signed, run_cli, tmp_path):
    pkg, _, hex_key, store, _ = signed
    (store / "signing.pub").write_bytes((tmp_path / "k" / "signing.key").read_bytes())
    code, _, err = run_cli("package", "verify", pkg)
    assert code == 2 and f"{store / 'signing.pub'}: is a private key" in err
    assert f"signed by key {hex_key}, which is not pinned" in err


def test_keys_trust_refuses_a_private_key_file(signed, run_cli, tmp_path):
    _, _, _, store, _ = signed
    priv = tmp_path / "k" / "signing.key"
    code, out, err = run_cli("keys", "trust", priv)
    assert code == 2 and out == "" and not list(store.iterdir())
    assert _lines(err) == [f"error: {priv}: is a private key; trust its public key (e.g. "
                           "signing.pub) instead"]
