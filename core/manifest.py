"""manifest.json (SHA-256 of every package file) and manifest.sig (Ed25519): build, sign, verify."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fpgaprint.core.atomic import read_bounded, write_atomic
from fpgaprint.core.errors import InputError
from fpgaprint.core.keys import load_private_key, public_key_hex
from fpgaprint.core.trust import Anchor, Trust, resolve_trust

SCHEMA = "fpgaprint-manifest/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
ALGORITHM = "ed25519"
MAX_MANIFEST = 16 * 1024 * 1024
MAX_SIGNATURE = 4096
CHUNK = 1 << 20


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
        safe_rel(root, e[:-1] if isinstance(e, str) and e.endswith("/") else e)
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
    """`meta` plus the schema, and the SHA-256 and size of every file of the package (extras,
    listed in `meta['extras']`, left out)."""
    if "files" in meta or "schema" in meta or "sizes" in meta:
        raise InputError("package metadata must not set 'files', 'sizes' or 'schema' (they are "
                         "computed)")
    extras = check_extras(Path(pkg_dir), meta.get("extras"))
    rels = package_files(pkg_dir, extras)
    files = {rel: sha256_file(Path(pkg_dir, rel)) for rel in rels}
    sizes = {rel: Path(pkg_dir, rel).stat().st_size for rel in rels}
    return {**meta, "schema": SCHEMA, "files": files, "sizes": sizes}


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
    """What verify_manifest established about a package.

    `trust` is "pinned" (signed by a trust anchor), "unpinned" (signed by a key that is not
    one, accepted because the caller allowed it) or "unsigned" (allowed by the caller).
    """

    manifest: dict[str, Any]
    package_id: str
    signed: bool
    signer_pinned: bool
    public_key: str | None
    anchor_source: str | None = None

    @property
    def trust(self) -> str:
        return "pinned" if self.signer_pinned else "unpinned" if self.signed else "unsigned"

    @property
    def signer_note(self) -> str:
        if not self.signed:
            return "UNSIGNED package (accepted because unsigned packages were allowed)"
        if self.signer_pinned:
            return f"signed by the trusted key {self.public_key} ({self.anchor_source})"
        return (f"signed by {self.public_key} (signer NOT pinned: accepted because unpinned "
                "signers were allowed)")

    @property
    def warning(self) -> str | None:
        """The line every command prints (and every report records) when the signer is not
        pinned; None when it is."""
        if self.signer_pinned:
            return None
        if not self.signed:
            return ("package is UNSIGNED (--allow-unsigned): nothing proves who made it; "
                    "this verdict is only as good as the package file")
        return (f"package signer {self.public_key} is NOT pinned (--allow-unpinned): anyone "
                "who can write the package can re-sign it; pin the signer with --trusted-key "
                "PUB or `fpgaprint keys trust PUB`")

    def trust_record(self) -> dict[str, Any]:
        """What reports record about the package's trust."""
        return {"trust": self.trust, "signer": self.public_key,
                "anchor": self.anchor_source, "warning": self.warning}


def read_head(path: Path, limit: int, what: str) -> bytes:
    """manifest.json or manifest.sig of a package directory, of at most `limit` bytes;
    InputError naming it otherwise."""
    try:
        data = read_bounded(path, limit)
    except FileNotFoundError:
        raise InputError(f"{path.parent}: missing file {path.name}") from None
    except IsADirectoryError:
        raise InputError(f"{path.parent}: {path.name} is a folder, not a {what}") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read the {what}: {e.strerror}") from None
    if data is None:
        raise InputError(f"{path}: {what} larger than {limit} B")
    return data


def check_signature(
    where: str, data: bytes, sig_bytes: bytes | None, trust: Trust
) -> tuple[str | None, Anchor | None]:
    """Verify manifest.sig (`sig_bytes`, None when absent) over `data` under `trust`.

    Returns (signer public key hex or None when unsigned, the anchor that pinned it or None).
    The signature is checked with the anchor's key when the signer is pinned, else with the
    key it carries (to name tampering as such) and then refused unless unpinned signers are
    allowed. InputError names what failed.
    """
    if sig_bytes is None:
        if trust.allow_unsigned and not trust.explicit:
            return None, None
        why = " and a trusted key was given" if trust.explicit else ""
        raise InputError(f"{where}: missing file {SIGNATURE}: package is unsigned{why}")
    where = f"{where}: {SIGNATURE}"
    try:
        sig = json.loads(sig_bytes)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
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
    signer = pub_raw.hex()
    anchor = trust.find(signer)
    if anchor is None and trust.explicit:
        shown = ", ".join(a.hex for a in trust.anchors)
        raise InputError(f"{where}: signed by key {signer}, not by the trusted key {shown}")
    try:
        (anchor.key if anchor is not None else embedded).verify(sig_raw, data)
    except InvalidSignature:
        raise InputError(
            f"{where}: signature does not verify over the bytes of {MANIFEST} "
            f"({MANIFEST} or {SIGNATURE} was changed)"
        ) from None
    if anchor is None and not trust.allow_unpinned:
        raise InputError(
            f"{where}: signed by key {signer}, which is not pinned ({trust.describe()}); "
            "pin the signer with --trusted-key PUB or `fpgaprint keys trust PUB` "
            "(--allow-unpinned accepts it, not recommended)"
        )
    return signer, anchor


def safe_rel(root: Path | str, rel: Any) -> str:
    p = PurePosixPath(rel) if isinstance(rel, str) else None
    if p is None or not rel or p.is_absolute() or ".." in p.parts or p.as_posix() != rel:
        raise InputError(f"{root}: {MANIFEST} lists an unsafe file path {rel!r}")
    if rel in (MANIFEST, SIGNATURE):
        raise InputError(f"{root}: {MANIFEST} must not list {rel}")
    return rel


def check_sizes(root: Path | str, files: dict, sizes: Any) -> dict[str, int] | None:
    """The manifest's `sizes` (bytes of every listed file), checked; None for a manifest
    written before sizes were recorded."""
    if sizes is None:
        return None
    if (not isinstance(sizes, dict) or set(sizes) != set(files)
            or any(isinstance(v, bool) or not isinstance(v, int) or v < 0
                   for v in sizes.values())):
        raise InputError(f"{root}: {MANIFEST}: 'sizes' must give a byte count >= 0 for "
                         "every listed file")
    return sizes


def check_listing(where: Path | str, files: Any, sizes: Any = None,
                  extras: tuple[str, ...] = ()) -> dict[str, int] | None:
    """The manifest's listing checked before any file is looked at: `files` a non-empty
    object of safe paths, none of them an extra, and `sizes` (`check_sizes`, returned)."""
    if not isinstance(files, dict) or not files:
        raise InputError(f"{where}: {MANIFEST}: 'files' must be a non-empty object")
    for rel in files:
        safe_rel(where, rel)
    sizes = check_sizes(where, files, sizes)
    for rel in sorted(files):
        if is_extra(rel, extras):
            raise InputError(f"{where}: {MANIFEST} lists {rel} both as a file and an extra")
    return sizes


def copy_checked(src: BinaryIO, out: Path | None, want: str, limit: int, where: Path | str,
                 rel: str) -> int:
    """Stream package file `rel` from `src` into the new file `out` (None: only read it),
    refused once it passes `limit` bytes or when its SHA-256 is not `want`: the bytes written
    are the bytes checked. Returns the byte count."""
    h = hashlib.sha256()
    n = 0
    with open(out, "xb") if out is not None else contextlib.nullcontext() as f:
        while chunk := src.read(CHUNK):
            n += len(chunk)
            if n > limit:
                raise InputError(f"{where}: {rel} is longer than the manifest allows "
                                 f"({limit} B)")
            h.update(chunk)
            if f is not None:
                f.write(chunk)
    if h.hexdigest() != want:
        raise InputError(f"{where}: file changed: {rel} (sha256 {h.hexdigest()}, manifest says "
                         f"{want})")
    return n


def _open_listed(root: Path, rel: str) -> BinaryIO:
    """A listed file opened for reading, never through a symbolic link, and only when it is a
    regular file (InputError naming it as missing otherwise)."""
    missing = InputError(f"{root}: missing file {rel} (listed in {MANIFEST})")
    try:
        fd = os.open(root / rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):  # ELOOP: a link
            raise missing from None
        raise InputError(f"{root}: cannot read {rel}: {e.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise missing
    return os.fdopen(fd, "rb")


def check_files(root: Path, files: Any, sizes: Any = None,
                extras: tuple[str, ...] = (), copy_to: Path | None = None) -> None:
    """Every listed file present with its size and hash; no file that is neither listed nor an
    extra. With `copy_to`, each file is copied there as it is hashed (`copy_checked`), so the
    copy holds the checked bytes whatever happens to `root` afterwards."""
    sizes = check_listing(root, files, sizes, extras)
    for rel, want in sorted(files.items()):
        with _open_listed(root, rel) as f:
            size = os.fstat(f.fileno()).st_size
            if sizes is not None and size != sizes[rel]:
                raise InputError(f"{root}: file changed: {rel} ({size} B, manifest says "
                                 f"{sizes[rel]} B)")
            out = None if copy_to is None else copy_to / rel
            if out is not None:
                out.parent.mkdir(parents=True, exist_ok=True)
            copy_checked(f, out, want, size, root, rel)
    extra = sorted(set(package_files(root, extras)) - set(files))
    if extra:
        raise InputError(f"{root}: unexpected file not listed in {MANIFEST}: {extra[0]}"
                         + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))


def write_head(dest: Path, data: bytes, sig_bytes: bytes | None) -> None:
    """The verified manifest.json (and manifest.sig) bytes into a package's private copy."""
    (dest / MANIFEST).write_bytes(data)
    if sig_bytes is not None:
        (dest / SIGNATURE).write_bytes(sig_bytes)


def parse_manifest(where: str, data: bytes) -> dict[str, Any]:
    """The manifest object from its bytes: JSON of the expected schema."""
    try:
        manifest = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise InputError(f"{where}: {MANIFEST}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMA:
        got = manifest.get("schema") if isinstance(manifest, dict) else type(manifest).__name__
        raise InputError(f"{where}: {MANIFEST}: schema {got!r}, expected {SCHEMA!r}")
    return manifest


def verify_head(where: str, data: bytes, sig_bytes: bytes | None, trust: Trust) -> Verification:
    """The signature over manifest.json's bytes `data` checked under `trust` (`check_signature`)
    and the manifest parsed: what a package's files are then checked against."""
    pub, anchor = check_signature(where, data, sig_bytes, trust)
    manifest = parse_manifest(where, data)
    return Verification(manifest, hashlib.sha256(data).hexdigest(), pub is not None,
                        anchor is not None, pub, None if anchor is None else anchor.source)


def verify_manifest(
    pkg_dir: str | Path,
    trusted_key: str | Path | Ed25519PublicKey | list | None = None,
    allow_unsigned: bool = False,
    allow_unpinned: bool = False,
    trust: Trust | None = None,
    copy_to: Path | None = None,
) -> Verification:
    """Verify the signature under the host's trust anchors, then every file size and hash.

    `trust` defaults to `resolve_trust(trusted_key, allow_unpinned, allow_unsigned)`: the
    given key(s), else the trust store and `$FPGAPRINT_TRUSTED_KEYS`. With `copy_to` (an empty
    private folder), the manifest and signature bytes that verified and each listed file as it
    is hashed are copied there (`check_files`). Raises InputError naming the package and the
    file or key that failed.
    """
    root = Path(pkg_dir)
    if not root.is_dir():
        raise InputError(f"{root}: package directory not found")
    if trust is None:
        trust = resolve_trust(trusted_key, allow_unpinned, allow_unsigned)
    for name in (MANIFEST, SIGNATURE):
        if (root / name).is_symlink():
            raise InputError(f"{root}: {name} is a symbolic link (not allowed in a package)")
    data = read_head(root / MANIFEST, MAX_MANIFEST, "manifest")
    sig_path = root / SIGNATURE
    sig_bytes = read_head(sig_path, MAX_SIGNATURE, "signature") if sig_path.exists() else None
    verification = verify_head(str(root), data, sig_bytes, trust)
    manifest = verification.manifest
    check_files(root, manifest.get("files"), manifest.get("sizes"),
                check_extras(root, manifest.get("extras")), copy_to)
    if copy_to is not None:
        write_head(copy_to, data, sig_bytes)
    return verification
