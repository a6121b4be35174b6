"""Ed25519 key files: generation, permissions, loading, bad key files."""

from __future__ import annotations

import stat

import pytest

from fpgaprint.core.errors import InputError
from fpgaprint.core.keys import (
    generate_keypair,
    load_private_key,
    load_public_key,
    public_key_hex,
)


def test_generate_writes_private_key_0600_and_matching_public_key(tmp_path):
    priv, pub = generate_keypair(tmp_path / "k")
    assert (priv.name, pub.name) == ("signing.key", "signing.pub")
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in priv.read_bytes()
    assert b"BEGIN PUBLIC KEY" in pub.read_bytes()
    key = load_private_key(priv)
    assert public_key_hex(key) == public_key_hex(load_public_key(pub))
    key.public_key().verify(key.sign(b"msg"), b"msg")
    assert not [p for p in (tmp_path / "k").iterdir() if p.name.endswith(".tmp")]


def test_generate_refuses_to_overwrite(tmp_path):
    priv, _ = generate_keypair(tmp_path)
    before = priv.read_bytes()
    with pytest.raises(InputError, match="signing.key: key file already exists"):
        generate_keypair(tmp_path)
    assert priv.read_bytes() == before
    generate_keypair(tmp_path, overwrite=True)
    assert priv.read_bytes() != before


def test_public_key_from_hex_or_private_pem(tmp_path):
    priv, pub = generate_keypair(tmp_path)
    want = public_key_hex(load_public_key(pub))
    (tmp_path / "pub.hex").write_text(want + "\n")
    assert public_key_hex(load_public_key(tmp_path / "pub.hex")) == want
    assert public_key_hex(load_public_key(priv)) == want


def test_bad_key_files_named(tmp_path):
    with pytest.raises(InputError, match="nope.key: private key not found"):
        load_private_key(tmp_path / "nope.key")
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(InputError, match="junk.pem: not an unencrypted PEM private key"):
        load_private_key(tmp_path / "junk.pem")
    with pytest.raises(InputError, match="junk.pem: not a PEM public key"):
        load_public_key(tmp_path / "junk.pem")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    (tmp_path / "ec.key").write_bytes(ec_pem)
    with pytest.raises(InputError, match="ec.key: not an Ed25519 key"):
        load_private_key(tmp_path / "ec.key")
