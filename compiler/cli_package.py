"""`fpgaprint keys ...` and `fpgaprint package ...`: signing keys and package verification."""

from __future__ import annotations

from pathlib import Path

import click

from fpgaprint.core.keys import default_key_dir, generate_keypair, load_private_key, public_key_hex


@click.group()
def keys() -> None:
    """Ed25519 signing keys for deployment packages."""


@keys.command("generate")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory for signing.key (0600) and signing.pub "
                   "[default: ~/.config/fpgaprint].")
@click.option("--force", is_flag=True, help="Replace an existing key pair.")
def generate(out: Path | None, force: bool) -> None:
    """Create a new key pair; prints the private and public key paths and the public key."""
    priv, pub = generate_keypair(out if out is not None else default_key_dir(), overwrite=force)
    click.echo(f"private key  {priv}")
    click.echo(f"public key   {pub}")
    click.echo(f"public hex   {public_key_hex(load_private_key(priv))}")


@click.group()
def package() -> None:
    """Deployment packages (directories or .tar.gz)."""


@package.command("verify")
@click.argument("pkg", metavar="PACKAGE", type=click.Path(path_type=Path))
@click.option("--trusted-key", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Public key the package must be signed with (pins the signer).")
@click.option("--allow-unsigned", is_flag=True, help="Accept a package without manifest.sig.")
def verify(pkg: Path, trusted_key: Path | None, allow_unsigned: bool) -> None:
    """Verify signature, hashes and self-test files; exit 0 if valid, 2 naming the bad file."""
    from fpgaprint.core.package import describe, verify_package

    with verify_package(pkg, trusted_key=trusted_key, allow_unsigned=allow_unsigned) as p:
        for line in describe(p):
            click.echo(line)
        click.echo("OK")


@package.command("diff")
@click.argument("a", metavar="A", type=click.Path(path_type=Path))
@click.argument("b", metavar="B", type=click.Path(path_type=Path))
def diff(a: Path, b: Path) -> None:
    """Name what differs between two packages' identities (files and manifest fields).

    Each package's files are checked against its own manifest first. Exit 0 when the
    package ids are equal, 1 when they differ (like diff(1)), 2 for a bad package.
    """
    from fpgaprint.compiler.package import diff_manifests
    from fpgaprint.core.package import verify_package

    with verify_package(a, allow_unsigned=True) as pa, \
            verify_package(b, allow_unsigned=True) as pb:
        click.echo(f"A  {pa.package_id}  {a}")
        click.echo(f"B  {pb.package_id}  {b}")
        if pa.package_id == pb.package_id:
            click.echo("identical")
            return
        for line in diff_manifests(pa.manifest, pb.manifest):
            click.echo(line)
    raise SystemExit(1)
