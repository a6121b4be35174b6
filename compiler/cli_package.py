"""`fpgaprint keys ...` and `fpgaprint package ...`: signing keys, the trust store and package
verification."""

from __future__ import annotations

from pathlib import Path

import click

from fpgaprint.core.cliopts import PACKAGE, PUB, trust_options, warn
from fpgaprint.core.errors import InputError
from fpgaprint.core.keys import default_key_dir, generate_keypair, load_private_key, public_key_hex


@click.group()
def keys() -> None:
    """Ed25519 signing keys and the trust store of keys this host accepts."""


def _key_dir(ctx, param, value: str | None) -> Path | None:
    if value is None:
        return None
    p = Path(value)
    if not value.strip():
        raise InputError("--out '': empty path")
    if p.exists() and not p.is_dir():
        raise InputError(f"--out {p}: is a file, expected a folder for the key pair")
    parent = p
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"--out {p}: {parent} is a file, not a folder")
    return p


@keys.command("generate")
@click.option("--out", "out", callback=_key_dir, metavar="DIR", default=None,
              help="Directory for signing.key (0600) and signing.pub "
                   "[default: ~/.config/fpgaprint].")
@click.option("--force", is_flag=True, help="Replace an existing key pair.")
def generate(out: Path | None, force: bool) -> None:
    """Create a new key pair; prints the private and public key paths and the public key."""
    priv, pub = generate_keypair(out if out is not None else default_key_dir(), overwrite=force)
    click.echo(f"private key  {priv}")
    click.echo(f"public key   {pub}")
    click.echo(f"public hex   {public_key_hex(load_private_key(priv))}")


@keys.command("trust")
@click.argument("pub", metavar=PUB)
def trust(pub: str) -> None:
    """Provision PUB (a public key file; a private key is refused) as a trusted signer of
    packages on this host.

    verify, accept and board serve then accept packages signed by it without --trusted-key.
    The trust store is ~/.config/fpgaprint/trusted/ ($FPGAPRINT_TRUST_STORE moves it); it keeps
    a copy of the key, and never follows a symbolic link placed there.
    """
    from fpgaprint.core.trust import trust_key

    path, hex_key = trust_key(pub)
    click.echo(f"trusted      {hex_key}")
    click.echo(f"stored in    {path}")


@keys.command("untrust")
@click.argument("key", metavar="HEX")
def untrust(key: str) -> None:
    """Remove the trusted key(s) whose public key starts with HEX (8 or more hex digits) from
    the trust store. A key that trust.toml or $FPGAPRINT_TRUSTED_KEYS still lists is named
    with its entry (exit 2): edit that file or variable."""
    from fpgaprint.core.trust import untrust_key

    removed, still = untrust_key(key)
    for p in removed:
        click.echo(f"removed      {p}")
    if still:
        raise InputError(still)


@keys.command("list")
def list_keys() -> None:
    """The keys this host trusts (trust store, trust.toml, $FPGAPRINT_TRUSTED_KEYS)."""
    from fpgaprint.core.trust import list_trusted, trust_store_dir

    anchors = list_trusted()
    click.echo(f"trust store  {trust_store_dir()}")
    if not anchors:
        click.echo("no trusted key: packages are refused unless --trusted-key is given")
    for a in anchors:
        click.echo(f"{a.hex}  {a.source}")


@click.group()
def package() -> None:
    """Deployment packages (directories or .tar.gz)."""


@package.command("verify")
@click.argument("pkg", metavar=PACKAGE)
@trust_options
def verify(pkg: str, trusted_key: tuple[str, ...], allow_unsigned: bool,
           allow_unpinned: bool) -> None:
    """Verify signature, hashes and self-test files; exit 0 if valid, 2 naming the bad file."""
    from fpgaprint.core.package import describe, verify_package

    if not pkg.strip():
        raise InputError("PACKAGE '': empty path")

    with verify_package(pkg, trusted_key=trusted_key, allow_unsigned=allow_unsigned,
                        allow_unpinned=allow_unpinned) as p:
        if p.verification.warning:
            warn(p.verification.warning)
        for line in describe(p):
            click.echo(line)
        click.echo("OK")


@package.command("diff")
@click.argument("a", metavar="A", type=click.Path(path_type=Path))
@click.argument("b", metavar="B", type=click.Path(path_type=Path))
def diff(a: Path, b: Path) -> None:
    """Name what differs between two packages' identities (files and manifest fields).

    Each package's files are checked against its own manifest first; who signed it is shown,
    not required (a diff decides nothing about trust). Exit 0 when the package ids are equal,
    1 when they differ (like diff(1)), 2 for a bad package.
    """
    from fpgaprint.compiler.package import diff_manifests
    from fpgaprint.core.package import verify_package

    with verify_package(a, allow_unsigned=True, allow_unpinned=True) as pa, \
            verify_package(b, allow_unsigned=True, allow_unpinned=True) as pb:
        click.echo(f"A  {pa.package_id}  {a}  ({pa.verification.signer_note})")
        click.echo(f"B  {pb.package_id}  {b}  ({pb.verification.signer_note})")
        if pa.package_id == pb.package_id:
            click.echo("identical")
            return
        for line in diff_manifests(pa.manifest, pb.manifest):
            click.echo(line)
    raise SystemExit(1)
