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


# ---------------------------------------------------------------- trust anchors from the host


def _verify_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    from fpgaprint.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    out, err = capsys.readouterr()
    return e.value.code, out, err


@pytest.fixture
def signed_package(tmp_path):
    """(package dir, its signer's public key file) with the public key also inside the package,
    as a package that tries to supply its own trust anchor would ship it."""
    from test_package_support import build_package

    priv, pub = generate_keypair(tmp_path / "k")
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "release.pub").write_bytes(pub.read_bytes())
    build_package(pkg, priv)
    return pkg, pub


def test_a_relative_key_file_in_the_environment_is_refused(signed_package, capsys,
                                                           monkeypatch):
    """`cd pkg && FPGAPRINT_TRUSTED_KEYS=release.pub` must not let the package pin itself."""
    pkg, _ = signed_package
    monkeypatch.chdir(pkg)
    monkeypatch.setenv("FPGAPRINT_TRUSTED_KEYS", "release.pub")
    code, out, err = _verify_cli(["package", "verify", "."], capsys)
    assert code == 2 and "OK" not in out
    assert ("$FPGAPRINT_TRUSTED_KEYS: key file 'release.pub' is a relative path; it must be "
            "absolute") in err
    assert err.count("\n") == 1, err
    from fpgaprint.core.trust import resolve_trust

    with pytest.raises(InputError, match=r"'release.pub' is a relative path"):
        resolve_trust()


def test_an_absolute_key_file_in_the_environment_still_pins(signed_package, capsys,
                                                            monkeypatch):
    pkg, pub = signed_package
    monkeypatch.chdir(pkg)
    monkeypatch.setenv("FPGAPRINT_TRUSTED_KEYS", f"{public_key_hex(load_public_key(pub))}:"
                                                 f"{pkg / 'release.pub'}")
    code, out, _ = _verify_cli(["package", "verify", "."], capsys)
    assert code == 0 and "(FPGAPRINT_TRUSTED_KEYS)" in out and out.rstrip().endswith("OK")


@pytest.mark.parametrize("env", ["FPGAPRINT_TRUST_CONFIG", "FPGAPRINT_TRUST_STORE"])
def test_a_relative_trust_config_or_store_is_refused(signed_package, capsys, monkeypatch, env):
    """The config file and the trust store are never looked for in the current folder."""
    pkg, _ = signed_package
    (pkg / "trust.toml").write_text('trusted_keys = ["release.pub"]\n')
    monkeypatch.chdir(pkg)
    monkeypatch.setenv(env, "trust.toml" if env == "FPGAPRINT_TRUST_CONFIG" else ".")
    code, out, err = _verify_cli(["package", "verify", "."], capsys)
    assert code == 2 and "OK" not in out
    assert f"${env}: " in err and "is a relative path; it must be absolute" in err
    assert err.count("\n") == 1, err


def test_trust_config_key_files_are_relative_to_the_config_not_the_cwd(
        signed_package, tmp_path, capsys, monkeypatch):
    pkg, pub = signed_package
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "keys").mkdir()
    (conf / "keys/release.pub").write_bytes(pub.read_bytes())
    (conf / "trust.toml").write_text('trusted_keys = ["keys/release.pub"]\n')
    monkeypatch.setenv("FPGAPRINT_TRUST_CONFIG", str(conf / "trust.toml"))
    monkeypatch.chdir(pkg)
    code, out, _ = _verify_cli(["package", "verify", "."], capsys)
    assert code == 0 and f"(trust config {conf / 'trust.toml'})" in out
    # the same name in the current folder (the package) is not consulted
    (conf / "trust.toml").write_text('trusted_keys = ["release.pub"]\n')
    code, out, err = _verify_cli(["package", "verify", "."], capsys)
    assert code == 2 and f"{conf / 'release.pub'}: public key not found" in err


# ---------------------------------------------------------------- the verified package view


def test_the_package_keeps_the_manifest_that_was_verified(tmp_path, monkeypatch):
    """A manifest.json swapped after verification is never read: the view holds the one the
    signature covered."""
    from test_package_support import build_package

    import fpgaprint.core.package as pkgmod

    priv, pub = generate_keypair(tmp_path / "k")
    build_package(tmp_path / "pkg", priv)
    verify_manifest = pkgmod.verify_manifest

    def then_swap(root, **kw):
        v = verify_manifest(root, **kw)
        (root / "manifest.json").write_text('{"schema": "fpgaprint-manifest/1", "files": {}}')
        return v

    monkeypatch.setattr(pkgmod, "verify_manifest", then_swap)
    with pkgmod.verify_package(tmp_path / "pkg", trusted_key=pub) as pkg:
        assert pkg.manifest is pkg.verification.manifest and pkg.manifest["files"]
        assert pkg.package_id == pkg.verification.package_id


def test_an_archive_is_verified_while_it_is_extracted_not_again(tmp_path, monkeypatch):
    from test_package_support import build_package

    import fpgaprint.core.manifest as manifest
    import fpgaprint.core.package as pkgmod

    priv, pub = generate_keypair(tmp_path / "k")
    built = build_package(tmp_path / "pkg", priv, tar=True)

    def never(*a, **kw):
        raise AssertionError("an extracted archive is not hashed a second time")

    monkeypatch.setattr(pkgmod, "verify_manifest", never)
    monkeypatch.setattr(manifest, "sha256_file", never)
    with pkgmod.verify_package(tmp_path / "pkg.tar.gz", trusted_key=pub) as pkg:
        assert pkg.package_id == built.package_id and pkg.verification.signer_pinned


def test_files_larger_than_their_limit_are_named_each_its_own_way(tmp_path, monkeypatch):
    """A key file, the trust config and manifest.json are read only up to their limit."""
    from fpgaprint.core import keys, manifest, trust
    from fpgaprint.core.atomic import read_bounded

    big = tmp_path / "big"
    big.write_bytes(b"x" * (keys.MAX_KEY_FILE + 1))
    assert read_bounded(big, keys.MAX_KEY_FILE) is None
    assert read_bounded(big, keys.MAX_KEY_FILE + 1) == big.read_bytes()
    with pytest.raises(InputError, match=rf"big: not a public key \(larger than "
                                         rf"{keys.MAX_KEY_FILE} B\)"):
        load_public_key(big)
    config = tmp_path / "trust.toml"
    config.write_bytes(b"#" * (trust.MAX_CONFIG + 1))
    monkeypatch.setenv("FPGAPRINT_TRUST_CONFIG", str(config))
    with pytest.raises(InputError, match=rf"trust.toml: trust config larger than "
                                         rf"{trust.MAX_CONFIG} B"):
        trust.resolve_trust()
    monkeypatch.setattr(manifest, "MAX_MANIFEST", 8)
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg/manifest.json").write_bytes(b"{" * 9)
    with pytest.raises(InputError, match=r"manifest.json: manifest larger than 8 B"):
        manifest.verify_manifest(tmp_path / "pkg", trust=trust.Trust(allow_unsigned=True))


def test_a_public_key_written_as_64_hex_digits():
    from fpgaprint.core.keys import is_public_key_hex

    assert is_public_key_hex("aB" * 32) and is_public_key_hex("09" * 32)
    assert not any(is_public_key_hex(t) for t in ("ab" * 31, "ab" * 33, "zz" * 32, " " + "a" * 63))


def test_untrust_removes_exactly_the_store_files_of_the_matching_key(tmp_path):
    from fpgaprint.core.trust import trust_key, untrust_key

    store = tmp_path / "trust store"
    kept_path, kept = trust_key(generate_keypair(tmp_path / "a")[1], store)
    gone_path, gone = trust_key(generate_keypair(tmp_path / "b")[1], store)
    assert untrust_key(gone[:10], store) == ([gone_path], "")
    assert sorted(store.iterdir()) == [kept_path]
    with pytest.raises(InputError, match=f"no trusted key starts with {gone[:10]}"):
        untrust_key(gone[:10], store)


def test_a_key_provisioned_twice_is_one_anchor_named_by_its_first_source(tmp_path, monkeypatch):
    from fpgaprint.core.trust import resolve_trust, trust_key

    pubs = [generate_keypair(tmp_path / n)[1] for n in ("a", "b")]
    hexes = [public_key_hex(load_public_key(p)) for p in pubs]
    store = tmp_path / "store"
    trust_key(pubs[1], store)
    monkeypatch.setenv("FPGAPRINT_TRUST_STORE", str(store))
    monkeypatch.setenv("FPGAPRINT_TRUSTED_KEYS", f"{hexes[0]}:{pubs[1]}:{hexes[0].upper()}")
    anchors = resolve_trust().anchors
    assert [a.hex for a in anchors] == [hexes[1], hexes[0]]
    assert anchors[0].source.startswith("trust store ")
    assert anchors[1].source == "FPGAPRINT_TRUSTED_KEYS"
