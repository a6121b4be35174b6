"""manifest.json (SHA-256 of every package file) and manifest.sig (Ed25519): build, sign, verify."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fpgaprint.core.atomic import write_atomic
from fpgaprint.core.errors import InputError
from fpgaprint.core.keys import load_private_key, load_public_key, public_key_hex

SCHEMA = "fpgaprint-manifest/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
ALGORITHM = "ed25519"


def canonical_json(obj: Any) -> bytes:
    """The canonical encoding: sorted keys, indent 2, UTF-8, trailing newline."""
    return (json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def sha256_file(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# Files outside the package identity: logs, timings, host facts and FINN+'s working files.
# The manifest lists these prefixes (a directory ends with "/"); they are neither hashed nor
# signed, and nothing that decides a verdict reads them.
EXTRAS = ("build.log", "finn/", "model/steps/", "reports/")


def is_extra(rel: str, extras: tuple[str, ...] | list[str]) -> bool:
    return any(rel == e or (e.endswith("/") and rel.startswith(e)) for e in extras)


def check_extras(root: Path, extras: Any) -> tuple[str, ...]:
    """The manifest's `extras`: a list of safe relative paths or directories ("x/")."""
    if extras is None:
        return ()
    if not isinstance(extras, list) or len(extras) > 64:
        raise InputError(f"{root}: {MANIFEST}: 'extras' must be a list of paths")
    for e in extras:
        _safe_rel(root, e[:-1] if isinstance(e, str) and e.endswith("/") else e)
    return tuple(extras)


def package_files(pkg_dir: str | Path, extras: tuple[str, ...] | list[str] = ()) -> list[str]:
    """Relative POSIX paths of every file in the package except manifest.json/.sig and the
    extras, sorted.

    Anything that is not a regular file or directory (a symlink, a fifo) is refused.
    """
    root = Path(pkg_dir)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                raise InputError(f"{root}: {rel} is a symbolic link (not allowed in a package)")
            if name in dirnames:
                continue
            if not p.is_file():
                raise InputError(f"{root}: {rel} is not a regular file")
            if rel not in (MANIFEST, SIGNATURE) and not is_extra(rel, extras):
                out.append(rel)
    return sorted(out)


def build_manifest(pkg_dir: str | Path, meta: dict[str, Any]) -> dict[str, Any]:
    """`meta` plus the schema and the SHA-256 of every file of the package (extras, listed in
    `meta['extras']`, left out)."""
    if "files" in meta or "schema" in meta:
        raise InputError("package metadata must not set 'files' or 'schema' (they are computed)")
    extras = check_extras(Path(pkg_dir), meta.get("extras"))
    files = {rel: sha256_file(Path(pkg_dir, rel)) for rel in package_files(pkg_dir, extras)}
    return {**meta, "schema": SCHEMA, "files": files}


def write_manifest(pkg_dir: str | Path, manifest: dict[str, Any]) -> bytes:
    """Write manifest.json canonically and return its exact bytes."""
    data = canonical_json(manifest)
    write_atomic(Path(pkg_dir, MANIFEST), data)
    return data


def sign_manifest(pkg_dir: str | Path, key_path: str | Path) -> dict[str, str]:
    """Sign the exact bytes of manifest.json with the private key; write manifest.sig."""
    key = load_private_key(key_path)
    try:
        data = Path(pkg_dir, MANIFEST).read_bytes()
    except FileNotFoundError:
        raise InputError(f"{pkg_dir}: {MANIFEST} missing (write it before signing)") from None
    sig = {
        "algorithm": ALGORITHM,
        "public_key": public_key_hex(key),
        "signature": key.sign(data).hex(),
    }
    write_atomic(Path(pkg_dir, SIGNATURE), canonical_json(sig))
    return sig


@dataclass(frozen=True)
class Verification:
    """What verify_manifest established about a package."""

    manifest: dict[str, Any]
    package_id: str
    signed: bool
    signer_pinned: bool
    public_key: str | None

    @property
    def signer_note(self) -> str:
        if not self.signed:
            return "UNSIGNED package (accepted because unsigned packages were allowed)"
        if self.signer_pinned:
            return f"signed by the trusted key {self.public_key}"
        return f"signed by {self.public_key} (signer NOT pinned: no trusted key given)"


def _check_signature(
    root: Path, data: bytes, trusted: Ed25519PublicKey | None
) -> tuple[str, bool]:
    """Verify manifest.sig over `data`; return (signer public key hex, pinned)."""
    where = f"{root}: {SIGNATURE}"
    try:
        sig = json.loads(Path(root, SIGNATURE).read_bytes())
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{where}: not valid JSON ({e})") from None
    if not isinstance(sig, dict):
        raise InputError(f"{where}: expected a JSON object")
    if sig.get("algorithm") != ALGORITHM:
        raise InputError(f"{where}: algorithm {sig.get('algorithm')!r}, expected {ALGORITHM!r}")
    try:
        pub_raw = bytes.fromhex(sig["public_key"])
        sig_raw = bytes.fromhex(sig["signature"])
        embedded = Ed25519PublicKey.from_public_bytes(pub_raw)
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{where}: malformed public_key/signature ({e!r})") from None
    if trusted is not None and public_key_hex(trusted) != pub_raw.hex():
        raise InputError(
            f"{where}: signed by key {pub_raw.hex()}, not by the trusted key "
            f"{public_key_hex(trusted)}"
        )
    try:
        (trusted or embedded).verify(sig_raw, data)
    except InvalidSignature:
        raise InputError(
            f"{where}: signature does not verify over the bytes of {MANIFEST} "
            f"({MANIFEST} or {SIGNATURE} was changed)"
        ) from None
    return pub_raw.hex(), trusted is not None


def _safe_rel(root: Path, rel: Any) -> str:
    p = PurePosixPath(rel) if isinstance(rel, str) else None
    if p is None or not rel or p.is_absolute() or ".." in p.parts or p.as_posix() != rel:
        raise InputError(f"{root}: {MANIFEST} lists an unsafe file path {rel!r}")
    if rel in (MANIFEST, SIGNATURE):
        raise InputError(f"{root}: {MANIFEST} must not list {rel}")
    return rel


def check_files(root: Path, files: Any, extras: tuple[str, ...] = ()) -> None:
    """Every listed file present with its hash; no file that is neither listed nor an
    extra."""
    if not isinstance(files, dict) or not files:
        raise InputError(f"{root}: {MANIFEST}: 'files' must be a non-empty object")
    for rel, want in sorted(files.items()):
        _safe_rel(root, rel)
        if is_extra(rel, extras):
            raise InputError(f"{root}: {MANIFEST} lists {rel} both as a file and an extra")
        p = root / rel
        if p.is_symlink() or not p.is_file():
            raise InputError(f"{root}: missing file {rel} (listed in {MANIFEST})")
        got = sha256_file(p)
        if got != want:
            raise InputError(
                f"{root}: file changed: {rel} (sha256 {got}, manifest says {want})"
            )
    extra = sorted(set(package_files(root, extras)) - set(files))
    if extra:
        raise InputError(f"{root}: unexpected file not listed in {MANIFEST}: {extra[0]}"
                         + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))


def verify_manifest(
    pkg_dir: str | Path,
    trusted_key: str | Path | Ed25519PublicKey | None = None,
    allow_unsigned: bool = False,
) -> Verification:
    """Verify the signature (pinned to `trusted_key` if given), then every file hash.

    `trusted_key` is a public key file (see keys.load_public_key) or a loaded key.
    Raises InputError naming the package and the file that failed.
    """
    root = Path(pkg_dir)
    if not root.is_dir():
        raise InputError(f"{root}: package directory not found")
    try:
        data = Path(root, MANIFEST).read_bytes()
    except FileNotFoundError:
        raise InputError(f"{root}: missing file {MANIFEST}") from None
    if trusted_key is None or isinstance(trusted_key, Ed25519PublicKey):
        trusted = trusted_key
    else:
        trusted = load_public_key(trusted_key)
    if Path(root, SIGNATURE).exists():
        pub, pinned = _check_signature(root, data, trusted)
    elif allow_unsigned and trusted is None:
        pub, pinned = None, False
    else:
        why = " and a trusted key was given" if trusted is not None else ""
        raise InputError(f"{root}: missing file {SIGNATURE}: package is unsigned{why}")
    try:
        manifest = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{root}: {MANIFEST}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        got = manifest.get("schema") if isinstance(manifest, dict) else type(manifest).__name__
        raise InputError(f"{root}: {MANIFEST}: schema {got!r}, expected {SCHEMA!r}")
    check_files(root, manifest.get("files"), check_extras(root, manifest.get("extras")))
    return Verification(manifest, hashlib.sha256(data).hexdigest(), pub is not None, pinned, pub)
